"""Grafting: the sparse part of fine-tuning that is enough for fact recall (SPEC §7; Panigrahi et al. 2023).

    θ(γ) = θ_pre + γ ⊙ (θ_ft − θ_pre),    γ ∈ {0, 1} per entry, over every parameter of the model

The search starts from the base patch B (the top-s fraction of |θ_ft − θ_pre| over all entries)
and relaxes the mask as

    γ(S) = B + (1 − 2B) ⊙ σ(S − b),   b = 10, S ~ U[0, 1)

so γ ≈ B at the start and an entry flips when its S passes b. Each step averages the gradient of
the ID-QA answer loss with respect to S over a few batches and takes a plain gradient step
(σ'(S − 10) ≈ 4.5e-5, hence the very large default learning rate). After every step the mask is
rounded (γ > ½) and evaluated on ID-QA; the best rounded mask is kept. θ_pre and θ_ft are never
edited: the grafted model is a `torch.func.functional_call` of the model on θ(γ).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from factrecall.analysis.ablation import METRICS
from factrecall.analysis.run import load_pair, run_dataset
from factrecall.analysis.shared import breakdown, load_masks, save_bool_masks
from factrecall.analysis.threshold import kth_largest
from factrecall.artifacts import write_json
from factrecall.encode import collate, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate

Tensors = dict[str, torch.Tensor]
BIAS = 10.0


def grafted_parameters(pre: Tensors, delta: Tensors, gamma: Tensors) -> Tensors:
    """θ_pre + γ ⊙ (θ_ft − θ_pre), tensor by tensor (γ may be relaxed, i.e. real-valued)."""
    return {n: pre[n] + gamma[n] * delta[n] for n in pre}


def relaxed_mask(base: Tensors, scores: Tensors, bias: float = BIAS) -> Tensors:
    """γ(S) = B + (1 − 2B) ⊙ σ(S − b)."""
    return {n: base[n] + (1 - 2 * base[n]) * torch.sigmoid(scores[n] - bias) for n in base}


def base_patch(delta: Tensors, sparsity: float) -> Tensors:
    """1.0 on the top-`sparsity` fraction of |θ_ft − θ_pre| over all entries, else 0.0."""
    total = sum(d.numel() for d in delta.values())
    value = kth_largest(lambda: (d.abs() for d in delta.values()), max(1, round(sparsity * total)))
    return {n: (d.abs() >= value).float() for n, d in delta.items()}


def load_graft_mask(run: Path, model_shapes: dict[str, tuple[int, ...]]) -> Tensors:
    """The run's graft mask {name: bool} (from `factrecall graft`), checked against the model's shapes."""
    path = Path(run) / "analysis" / "graft_mask.safetensors"
    if not path.is_file():
        raise UserError(f"{run} has no graft mask; run 'factrecall graft --run {run}' first")
    mask = load_masks(path, "graft", model_shapes)
    missing = sorted(set(model_shapes) - set(mask))
    if missing:
        raise UserError(f"{path} belongs to another model: it has no mask for {missing[0]}; "
                        f"rerun 'factrecall graft --run {run}'")
    return mask


@torch.no_grad()
def make_grafted(model, pre: Tensors, mask: Tensors) -> None:
    """Turn `model`, an in-memory copy of θ_ft, into θ_pre + γ ⊙ (θ_ft − θ_pre) (the saved files are untouched)."""
    for name, p in model.named_parameters():
        p.copy_(torch.where(mask[name].to(p.device), p, pre[name].to(p.device)))


class GraftedModel(torch.nn.Module):
    """The model evaluated on θ(γ) for a fixed (hard) mask, for `evaluate`."""

    def __init__(self, model, params: Tensors):
        super().__init__()
        self.model, self.params = model, params
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives `evaluate` a device to read

    def forward(self, **batch):
        return functional_call(self.model, self.params, args=(), kwargs=batch)


def graft_run(run: Path, sparsity: float = 0.01, steps: int = 20, lr: float = 1e7, batches_per_step: int = 4,
              batch_size: int = 64, eval_people: int = 0, seed: int = 0, data: Path | None = None) -> dict:
    """Search the graft mask of a run; writes `analysis/graft.json` and `analysis/graft_mask.safetensors`."""
    run = Path(run)
    if not 0 < sparsity < 1:
        raise UserError(f"--sparsity must lie strictly between 0 and 1 (got {sparsity})")
    if steps < 0 or lr <= 0:
        raise UserError(f"--steps must be ≥ 0 and --lr positive (got {steps}, {lr})")
    model, tokenizer, pre = load_pair(run, "grafting starts from it")
    model.eval()
    dataset = run_dataset(run, data)
    pad = pad_id(tokenizer)
    sets = eval_sets(tokenizer, dataset, eval_people)
    train_qa = [encode_qa(tokenizer, q) for q in dataset.qa_split("id")]

    delta = {n: p.detach() - pre[n] for n, p in model.named_parameters()}
    base = base_patch(delta, sparsity)
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(d.shape, generator=gen).requires_grad_() for n, d in delta.items()}
    rng = random.Random(seed)

    def hard(gamma: Tensors) -> Tensors:
        return {n: (g > 0.5).float() for n, g in gamma.items()}

    def accuracy(mask: Tensors, names: tuple[str, ...] = tuple(sets)) -> dict:
        grafted = GraftedModel(model, grafted_parameters(pre, delta, mask))
        return evaluate(grafted, {n: sets[n] for n in names}, pad)

    base_accuracy = accuracy(base)
    best_mask, best_id, best_step = base, base_accuracy["qa_id"]["accuracy"], 0
    for step in tqdm(range(1, steps + 1), desc="graft", leave=False):
        for s in scores.values():
            s.grad = None
        for _ in range(batches_per_step):
            rows = rng.sample(range(len(train_qa)), min(batch_size, len(train_qa)))
            batch = collate([train_qa[r] for r in rows], pad)
            params = grafted_parameters(pre, delta, relaxed_mask(base, scores))
            loss = functional_call(model, params, args=(), kwargs=batch).loss / batches_per_step
            loss.backward()
        with torch.no_grad():
            for s in scores.values():
                s -= lr * s.grad
        mask = hard(relaxed_mask(base, {n: s.detach() for n, s in scores.items()}))
        step_id = accuracy(mask, ("qa_id",))["qa_id"]["accuracy"]  # the selection criterion only
        if step_id > best_id:
            best_mask, best_id, best_step = mask, step_id, step
    best_accuracy = accuracy(best_mask) if best_step else base_accuracy
    return _write(run, best_mask, best_accuracy, best_step, base, base_accuracy, sparsity, steps, lr)


def _summary(mask: Tensors, acc: dict) -> dict:
    return {"size": int(sum(int(m.sum()) for m in mask.values())), **breakdown(mask),
            "accuracy": {m: acc[m]["accuracy"] for m in METRICS}}


def _write(run: Path, mask: Tensors, acc: dict, step: int, base: Tensors, base_acc: dict, sparsity: float,
           steps: int, lr: float) -> dict:
    total = sum(m.numel() for m in mask.values())
    result = {"sparsity": sparsity, "steps": steps, "lr": lr, "best_step": step, "parameters": total,
              "graft": _summary(mask, acc), "base_patch": _summary(base, base_acc)}
    shared_path = run / "shared" / "mask.safetensors"
    if shared_path.is_file():
        shared = load_masks(shared_path, "shared", {n: tuple(m.shape) for n, m in mask.items()})
        # chance within the traced tensors, where shared entries can be: |γ ∩ traced|·|Shared| / |traced|
        overlap = sum(int((mask[n].bool() & shared[n]).sum()) for n in shared)
        n_shared = sum(int(m.sum()) for m in shared.values())
        in_traced = sum(int(mask[n].sum()) for n in shared)
        chance = in_traced * n_shared / sum(m.numel() for m in shared.values())
        result["shared_overlap"] = {"overlap": overlap, "shared": n_shared, "graft_in_traced": in_traced,
                                    "chance": chance, "enrichment": overlap / chance if chance else None}
    save_bool_masks(run / "analysis" / "graft_mask.safetensors", {"graft": mask}, {"sparsity": str(sparsity)})
    write_json(run / "analysis" / "graft.json", result)
    return result
