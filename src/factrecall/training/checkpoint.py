"""Checkpoints as safetensors + JSON (never pickle), written atomically and verified on load.

A checkpoint directory holds `model.safetensors`, `optimizer.safetensors` (AdamW state flattened
to `state/<param index>/<key>`), `trace.safetensors`, `rng.safetensors` and `state.json`: the
position in the schedule (phase, step), the optimizer's param groups, the length of
`metrics.jsonl` at save time, and a sha256 of every tensor file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from factrecall.artifacts import atomic_directory, load_tensors, read_json, save_tensors, sha256_files, write_json
from factrecall.errors import UserError

_TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "trace.safetensors", "rng.safetensors")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {f"state/{i}/{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def save_checkpoint(path: Path, model, optimizer, trace: dict[str, torch.Tensor], position: dict) -> None:
    tensors, groups = _optimizer_tensors(optimizer)
    with atomic_directory(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_tensors(tmp / "optimizer.safetensors", tensors)
        save_tensors(tmp / "trace.safetensors", trace)
        save_tensors(tmp / "rng.safetensors", {"torch": torch.get_rng_state()})
        hashes = {f: sha256_files([tmp / f]) for f in _TENSOR_FILES}
        write_json(tmp / "state.json", {"position": position, "param_groups": groups, "sha256": hashes})


def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """Restore model, optimizer (unless None) and RNG in place; returns the trace tensors."""
    state = read_json(path / "state.json", "checkpoint state")
    for f in _TENSOR_FILES:
        if not (path / f).is_file() or sha256_files([path / f]) != state["sha256"].get(f):
            raise UserError(f"checkpoint {path} is damaged ({f} does not match its hash); "
                            f"rerun with --force to start over")
    load_model(model, str(path / "model.safetensors"))
    if optimizer is not None:
        flat = load_tensors(path / "optimizer.safetensors", "optimizer state")
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            _, index, name = key.split("/")
            per_param.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    torch.set_rng_state(load_tensors(path / "rng.safetensors", "RNG state")["torch"])
    return load_tensors(path / "trace.safetensors", "trace")
