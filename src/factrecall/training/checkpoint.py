"""Checkpoints as safetensors + JSON (never pickle), written atomically and verified on load.

A checkpoint directory holds `model.safetensors` (the parameters; buffers are never trained),
`optimizer.safetensors` (AdamW state flattened to `state/<param index>/<key>`; empty at a phase's start,
where a fresh AdamW begins), `trace.safetensors`, `rng.safetensors` and `state.json`: the position in the
schedule (phase, step), the optimizer's param groups, the length of `metrics.jsonl` at save time, and a
sha256 of every tensor file.

The files always hold full tensors, whatever the layout in memory: under FSDP2 a parameter (and
its AdamW moments) is a DTensor of which each rank holds some rows. `full_parameters` and
`full_optimizer_state` gather them one tensor at a time (collectives: every rank calls them) and keep
them, on CPU, on the main process only; `load_checkpoint` hands every rank its own rows again.
A run checkpointed under one layout resumes under another.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from factrecall.artifacts import atomic_directory, load_tensors, read_json, save_tensors, sha256_files, write_json
from factrecall.errors import UserError
from factrecall.layout import CheckpointLayout


def _full(t: torch.Tensor, keep: bool) -> torch.Tensor | None:
    """The whole tensor on CPU (all-gathered if sharded; every rank must call), or None when not `keep`."""
    t = t.detach()
    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.cpu() if keep else None


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `ref`: this rank's rows when `ref` is a DTensor, else `full` itself."""
    if isinstance(ref, DTensor):
        return distribute_tensor(full.to(ref.device), ref.device_mesh, ref.placements, src_data_rank=None)
    return full


def full_parameters(model, keep: bool) -> dict[str, torch.Tensor]:
    """{name: full CPU tensor} of the parameters (a tied tensor once); empty unless `keep`."""
    params = {n: _full(p, keep) for n, p in model.named_parameters()}
    return params if keep else {}


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(flat AdamW state `state/<param index>/<key>` as full CPU tensors, param groups); empty unless `keep`."""
    sd = optimizer.state_dict()
    flat = {f"state/{i}/{k}": _full(v, keep) for i, s in sd["state"].items() for k, v in s.items()}
    return (flat, sd["param_groups"]) if keep else ({}, [])


def save_checkpoint(path: Path, params: dict[str, torch.Tensor], optimizer_tensors: dict[str, torch.Tensor],
                    param_groups: list[dict], trace: dict[str, torch.Tensor], position: dict) -> None:
    with atomic_directory(path) as tmp:
        files = CheckpointLayout(tmp)
        for name, tensors in (("model", params), ("optimizer", optimizer_tensors), ("trace", trace),
                              ("rng", {"torch": torch.get_rng_state()})):
            save_tensors(files.tensors(name), tensors)
        hashes = {files.tensors(n).name: sha256_files([files.tensors(n)]) for n in CheckpointLayout.TENSOR_FILES}
        write_json(files.state, {"position": position, "param_groups": param_groups, "sha256": hashes})


_POSITION = {"phase": int, "step": int, "global_step": int, "metrics_bytes": int, "phase_evals": dict}


def _state(path: Path) -> dict:
    """state.json of the checkpoint `path`, checked to hold what a resume reads."""
    files = CheckpointLayout(path)
    state = read_json(files.state, "checkpoint state")
    position = state.get("position") if isinstance(state, dict) else None
    damaged = (not isinstance(position, dict) or not isinstance(state.get("sha256"), dict)
               or not isinstance(state.get("param_groups"), list)
               or any(not isinstance(position.get(k), t) or isinstance(position.get(k), bool)
                      for k, t in _POSITION.items())
               or min(position["phase"], position["step"], position["global_step"], position["metrics_bytes"]) < 0)
    if damaged:
        raise UserError(f"checkpoint state {files.state} is damaged (not the position, groups and hashes a "
                        f"checkpoint writes); rerun with --force to start over")
    return state


def checkpoint_position(path: Path) -> dict:
    """Where the checkpoint `path` stands: phase, step, global_step, phase_evals and metrics_bytes
    (the length of metrics.jsonl when it was saved), after checking every file against its hash."""
    state = _state(path)
    files = CheckpointLayout(path)
    for f in map(files.tensors, CheckpointLayout.TENSOR_FILES):
        if not f.is_file() or sha256_files([f]) != state["sha256"].get(f.name):
            raise UserError(f"checkpoint {path} is damaged ({f.name} does not match its hash); "
                            f"rerun with --force to start over")
    return state["position"]


@torch.no_grad()
def load_checkpoint(path: Path, model, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """Restore parameters, optimizer (unless None) and RNG in place (the files were checked by
    `checkpoint_position`); returns the (full) trace tensors."""
    files = CheckpointLayout(path)
    state = _state(path)
    saved = load_tensors(files.tensors("model"), "checkpoint model")
    params = dict(model.named_parameters())
    if saved.keys() != params.keys():
        raise UserError(f"checkpoint {path} holds another model's parameters; rerun with --force to start over")
    for name, p in params.items():
        value = _like(saved[name], p)
        (p.to_local() if isinstance(p, DTensor) else p).copy_(
            value.to_local() if isinstance(value, DTensor) else value)
    if optimizer is not None:
        flat = load_tensors(files.tensors("optimizer"), "optimizer state")
        ordered = [p for group in optimizer.param_groups for p in group["params"]]
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            _, index, name = key.split("/")
            ref = ordered[int(index)]
            per_param.setdefault(int(index), {})[name] = _like(value, ref) if value.shape == ref.shape else value
        optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    torch.set_rng_state(load_tensors(files.tensors("rng"), "RNG state")["torch"])
    return load_tensors(files.tensors("trace"), "trace")
