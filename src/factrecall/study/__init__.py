"""The study wing: a study's config and presets, bases, the registry of analyses, the runner, the
summary and the claims, and the memory and disk plans (docs/method.md §0, §11)."""
