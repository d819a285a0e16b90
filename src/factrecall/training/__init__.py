"""Training with the Stage or Mix strategy, and the cross-task gradient trace (docs/method.md §3–§4)."""
