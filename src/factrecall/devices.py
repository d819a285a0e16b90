"""Where forwards and backwards run: the device names every command and config accepts."""

from __future__ import annotations

from factrecall.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str):
    """The torch.device of `name`: `auto` is the GPU when torch sees one, else the CPU; `cuda` without a
    GPU is a UserError. (torch is imported here, so the CLI's option defaults stay quick to load.)"""
    import torch

    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asks for a GPU but torch sees none on this machine; "
                        "use --device auto (CPU here) or run on a GPU machine")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")
