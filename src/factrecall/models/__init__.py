"""Models: presets built from a config, loading of local HF directories, tokenizers (docs/method.md §2)."""
