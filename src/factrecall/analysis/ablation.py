"""Ablation of shared parameters (SPEC §6; the paper's Fig. 2b).

Reset a set of entries to their θ_pre values and re-evaluate ID-QA, OOD-QA and BIO:

    θ_ablated = where(mask, θ_pre, θ_ft)          (tensor by tensor; θ_pre and θ_ft never edited)

Sets compared with the shared set S = Top_BIO ∩ Top_QA at k:
* `random`: the same number of entries in every tensor as S, at random positions (one per seed);
* `top_bio_only` / `top_qa_only`: |S| entries drawn at random from Top_BIO∖S (resp. Top_QA∖S)
  over all tensors (size-matched in total: those sets are not spread over tensors like S).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from factrecall.analysis.run import load_pair, load_trace, run_dataset
from factrecall.analysis.shared import select
from factrecall.analysis.threshold import top_count
from factrecall.artifacts import write_json
from factrecall.encode import pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate

Masks = dict[str, torch.Tensor]  # parameter name -> bool tensor of its shape
METRICS = ("qa_id", "qa_ood", "bio")


def random_like(masks: Masks, seed: int) -> Masks:
    """Masks with the same number of True entries per tensor as `masks`, at random positions."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[: int(m.sum())]] = True
        out[name] = flat.view(m.shape)
    return out


def sample_from(candidates: Masks, count: int, seed: int) -> Masks:
    """`count` entries drawn uniformly from all True entries of `candidates` (across tensors)."""
    names = list(candidates)
    sizes = torch.tensor([int(candidates[n].sum()) for n in names])
    count = min(count, int(sizes.sum()))
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(int(sizes.sum()), generator=gen)[:count]
    bounds = sizes.cumsum(0)
    out = {}
    for i, name in enumerate(names):
        start = int(bounds[i - 1]) if i else 0
        local = chosen[(chosen >= start) & (chosen < int(bounds[i]))] - start
        positions = candidates[name].flatten().nonzero().squeeze(1)[local]
        flat = torch.zeros(candidates[name].numel(), dtype=torch.bool)
        flat[positions] = True
        out[name] = flat.view(candidates[name].shape)
    return out


@contextmanager
def reset_to_base(model, base_state: dict[str, torch.Tensor], masks: Masks) -> Iterator[None]:
    """Inside the block, the masked entries of `model` hold θ_pre; afterwards θ_ft again."""
    params = dict(model.named_parameters())
    kept = {}
    with torch.no_grad():
        for name, m in masks.items():
            if m.any():
                kept[name] = params[name].detach().clone()
                params[name].copy_(torch.where(m.to(params[name].device), base_state[name], params[name]))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in kept.items():
                params[name].copy_(value)


def _result(acc: dict, reference: dict, size: int) -> dict:
    accuracy = {m: acc[m]["accuracy"] for m in METRICS}
    return {"size": size, "accuracy": accuracy, "drop": {m: accuracy[m] - reference[m] for m in METRICS}}


def ablate_run(run: Path, k: float = 1.0, seeds: int = 3, eval_people: int = 0, data: Path | None = None) -> dict:
    """Write `run/analysis/ablation.json`: accuracy and drop for every set; returns it."""
    run = Path(run)
    top_count(k, 1)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1 (got {seeds})")
    model, tokenizer, base_state = load_pair(run, "ablation resets entries to it")
    trace = load_trace(run)
    dataset = run_dataset(run, data)
    sets, pad = eval_sets(tokenizer, dataset, eval_people), pad_id(tokenizer)

    selection = select(trace, k, "global")
    shared = selection.shared
    n_shared = int(sum(int(m.sum()) for m in shared.values()))
    bio_only = {n: selection.top_bio[n] & ~shared[n] for n in shared}
    qa_only = {n: selection.top_qa[n] & ~shared[n] for n in shared}
    jobs = [("shared", None, shared)]
    jobs += [("random", s, random_like(shared, s)) for s in range(seeds)]
    jobs += [("top_bio_only", s, sample_from(bio_only, n_shared, s)) for s in range(seeds)]
    jobs += [("top_qa_only", s, sample_from(qa_only, n_shared, s)) for s in range(seeds)]

    reference = {m: r["accuracy"] for m, r in evaluate(model, sets, pad).items()}
    raw: dict[str, list[dict]] = {}
    for name, seed, masks in tqdm(jobs, desc="ablate", leave=False):
        with reset_to_base(model, base_state, masks):
            acc = evaluate(model, sets, pad)
        size = int(sum(int(m.sum()) for m in masks.values()))
        raw.setdefault(name, []).append({"seed": seed, **_result(acc, reference, size)})
    result = {"k": k, "seeds": seeds, "eval_people": eval_people, "unablated": reference,
              "shared": raw["shared"][0]}
    for name in ("random", "top_bio_only", "top_qa_only"):
        runs = raw[name]
        result[name] = {
            "size": runs[0]["size"], "runs": runs,
            "mean_drop": {m: statistics.fmean(r["drop"][m] for r in runs) for m in METRICS},
            "std_drop": {m: statistics.pstdev([r["drop"][m] for r in runs]) for m in METRICS},
        }
    write_json(run / "analysis" / "ablation.json", result)
    return result
