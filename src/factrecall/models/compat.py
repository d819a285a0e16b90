"""Library APIs whose names differ across the supported versions (pyproject.toml states the floors).

transformers 5.17 (on current GPU images) has `gradient_checkpointing_enable`; later 5.x releases
add `activation_checkpointing_enable` and keep the old name as a deprecated alias. An API missing
from both is a UserError that names the version to install, never an AttributeError.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from factrecall.errors import UserError


def _requirements() -> list[str]:
    """factrecall's declared dependencies: from its installed metadata, or, run from a checkout without
    installing (PYTHONPATH=src), from the checkout's pyproject.toml."""
    try:
        return metadata.requires("factrecall") or []
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"] \
            if pyproject.is_file() else []


def declared_floor(package: str) -> str:
    """The lowest version of `package` factrecall declares (its `>=` in pyproject.toml)."""
    for line in _requirements():
        requirement = Requirement(line)
        if requirement.name == package and not requirement.marker:
            for spec in requirement.specifier:
                if spec.operator == ">=":
                    return spec.version
    raise KeyError(package)


CHECKED = ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "peft")


def check_versions() -> None:
    """Refuse, in one line, an installed library older than the floor factrecall declares for it (pip
    enforces the floors on install; an environment changed afterwards would fail later on a missing API)."""
    for package in CHECKED:
        try:
            installed, floor = metadata.version(package), declared_floor(package)
        except KeyError:  # no floor declared (a checkout without its pyproject.toml): nothing to check
            continue
        except metadata.PackageNotFoundError:
            raise UserError(f"{package} is not installed; pip install '{package}>={declared_floor(package)}'") from None
        if Version(installed.split("+")[0]) < Version(floor):
            raise UserError(f"{package} {installed} is older than the {floor} factrecall needs; "
                            f"pip install -U '{package}>={floor}'")


def _missing(package: str, api: str) -> UserError:
    floor = declared_floor(package)
    return UserError(f"{package} {metadata.version(package)} has no {api}; "
                     f"install {package}>={floor} (pip install -U '{package}>={floor}')")


def enable_gradient_checkpointing(model) -> None:
    """Recompute each block's activations in the backward pass (non-reentrant: parameter hooks see
    the same gradients as without it)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise _missing("transformers", "activation_checkpointing_enable or gradient_checkpointing_enable")
