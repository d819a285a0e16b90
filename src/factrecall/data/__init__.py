"""Synthetic bioS-style people: pools, rendering, dataset directories (docs/method.md §1)."""
