"""Settings: named presets, their overrides, and study config files (above the analyses, below the study)."""
