"""Training with the Stage or Mix strategy, and the cross-task gradient trace (SPEC §3–§4)."""
