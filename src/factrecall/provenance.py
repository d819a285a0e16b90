"""What a run directory records about where it came from: versions, seeds, data hash."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("factrecall", "torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
