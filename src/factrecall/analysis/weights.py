"""Weights an analysis writes into a model: θ_pre reset on a set of entries, and the grafted θ(γ).

    reset:    θ[m] ← θ_pre[m] on the masked entries m, restored when the block ends
    grafted:  θ(γ) = θ_pre + γ ⊙ (θ_ft − θ_pre) on the graft mask's tensors (the traced block
              matrices), θ_ft on every other, γ ∈ {0, 1} (the run's graft mask; docs/method.md §7)

θ_pre comes as a Mapping of tensors (`TensorFiles` reads it from the run's `base/` a tensor at a
time), so no second model is ever built. `analysis_model` loads the model an analysis looks at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from factrecall.analysis.masks import IndexMask, load_mask
from factrecall.analysis.run import model_config
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.memory import trim
from factrecall.models.loading import load_model
from factrecall.models.tensor_files import model_weights
from factrecall.terms import MODEL_VARIANTS


@contextmanager
def reset_to_base(model, base: Mapping[str, torch.Tensor],
                  masks: IndexMask | dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block, the masked entries of `model` hold θ_pre; afterwards their own values again.

    `base` gives θ_pre per tensor (a dict, or `TensorFiles` reading it from disk); `masks` is an
    `IndexMask` (sorted flat positions) or {name: bool tensor of the parameter's shape} (unit
    masks). Works a tensor at a time and keeps only the overwritten values (4 B each) to restore.
    """
    params = dict(model.named_parameters())
    flat = isinstance(masks, IndexMask)
    kept = []
    with torch.no_grad():
        for name, where in (masks.index if flat else masks).items():
            if not (where.numel() if flat else bool(where.any())):
                continue
            p = params[name]
            target, where = (p.view(-1) if flat else p), where.to(p.device)
            kept.append((target, where, target[where]))  # advanced indexing copies the values
            target[where] = base[name].to(p.device, p.dtype).view_as(target)[where]
    try:
        yield
    finally:
        with torch.no_grad():
            for target, where, values in kept:
                target[where] = values


def load_graft_mask(run: Path, model_shapes: dict[str, tuple[int, ...]]) -> IndexMask:
    """The run's graft mask (from `factrecall graft`), checked against the model's shapes."""
    path = RunLayout(Path(run)).graft_mask
    if not path.is_file():
        raise UserError(f"{run} has no graft mask; run 'factrecall graft --run {run}' first")
    mask = load_mask(path, "graft", model_shapes)
    if not mask.index:
        raise UserError(f"{path} holds no graft mask; rerun 'factrecall graft --run {run}'")
    return mask


@torch.no_grad()
def load_weights(model, weight: Callable[[str, torch.Tensor], torch.Tensor], names: Iterable[str] | None = None
                 ) -> None:
    """Write `weight(name, parameter)` into the parameters `names` of `model` (all by default), a tensor at a time."""
    params = dict(model.named_parameters())
    for name in params if names is None else names:
        params[name].copy_(weight(name, params[name]))
    trim()  # the per-tensor temporaries (`factrecall.memory`)


def make_grafted(model, pre: Mapping[str, torch.Tensor], mask: IndexMask) -> None:
    """Turn `model`, an in-memory copy of θ_ft, into θ_pre + γ ⊙ (θ_ft − θ_pre) on the mask's tensors; every other
    tensor stays θ_ft (the saved files are untouched)."""
    load_weights(model, lambda n, p: torch.where(mask.dense(n).to(p.device), p, pre[n].to(p.device, p.dtype)),
                 mask.index)


def analysis_model(run: Path, on: str = "finetuned", device: str = "auto"):
    """(model on `device` in eval mode, eager attention, tokenizer): θ_ft, or the grafted θ(γ)
    (θ_pre + γ ⊙ (θ_ft − θ_pre) on the traced block matrices, θ_ft elsewhere)."""
    run = Path(run)
    if on not in MODEL_VARIANTS:
        raise UserError(f"--on {on!r} is not one of {', '.join(MODEL_VARIANTS)}")
    model_config(run)  # a run without model/ is a UserError
    files = RunLayout(run)
    model, tokenizer = load_model(files.model, attn_implementation="eager", device=device)
    if on == "grafted":
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        mask = load_graft_mask(run, shapes)
        model_config(run, "base")
        make_grafted(model, model_weights(files.base, "θ_pre", shapes), mask)
    return model.eval(), tokenizer
