"""`factrecall plan`: the GPU memory and disk a study needs, from the model's config alone (no weights)."""
