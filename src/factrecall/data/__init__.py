"""Synthetic bioS-style people: pools, rendering, dataset directories (SPEC §1)."""
