"""Models: presets built from a config, loading of local HF directories, tokenizers (SPEC §2)."""
