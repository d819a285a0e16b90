"""Library APIs whose names differ across the supported versions (pyproject.toml states the floors).

transformers 5.17 (on current GPU images) has `gradient_checkpointing_enable`; later 5.x releases
add `activation_checkpointing_enable` and keep the old name as a deprecated alias. An API missing
from both is a UserError that names the version to install, never an AttributeError.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

from factrecall.errors import UserError


def declared_floor(package: str) -> str:
    """The lowest version of `package` factrecall declares (its `>=` in pyproject.toml)."""
    for line in metadata.requires("factrecall") or ():
        requirement = Requirement(line)
        if requirement.name == package and not requirement.marker:
            for spec in requirement.specifier:
                if spec.operator == ">=":
                    return spec.version
    raise KeyError(package)


CHECKED = ("torch", "transformers", "accelerate", "tokenizers", "safetensors")


def check_versions() -> None:
    """Refuse, in one line, an installed library older than the floor factrecall declares for it (pip
    enforces the floors on install; an environment changed afterwards would fail later on a missing API)."""
    for package in CHECKED:
        installed = metadata.version(package)
        floor = declared_floor(package)
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
