"""Analyses of a trained run (docs/method.md §5–§10): peers (shared, ablation, graft, circuit, inspect,
attention, consistency) over shared primitives (run, selection, units, masks, threshold, weights,
readout, labels); no analysis imports another."""
