"""Analyses of a trained run: shared parameters, and (later) ablation, grafting, circuits."""
