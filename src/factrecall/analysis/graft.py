"""Grafting: the sparse part of fine-tuning that is enough for fact recall (docs/method.md §7; Panigrahi et al. 2023).

    θ(γ) = θ_pre + γ ⊙ (θ_ft − θ_pre),    γ ∈ {0, 1} per entry, over every parameter of the model

The search starts from the base patch B (the top-s fraction of |θ_ft − θ_pre| over all entries)
and relaxes the mask as

    γ(S) = B + (1 − 2B) ⊙ σ(S − b),   b = 10, S ~ U[0, 1)

so γ ≈ B at the start and an entry flips when its S passes b. Each step averages the gradient of
the ID-QA answer loss with respect to S over a few batches and takes a plain gradient step
(σ'(S − 10) ≈ 4.5e-5, hence the very large default learning rate). After every step the mask is
rounded (γ > ½) and evaluated on ID-QA; the best rounded mask is kept.

Memory: the model itself holds θ(γ) (written into it tensor by tensor; θ_ft and θ_pre stay in
their files and are read a tensor at a time), and the search adds S and the parameters'
gradients: three model-sized tensors in all. The gradient with respect to S comes from the chain
rule on the model's own parameter gradients, ∂L/∂S = ∂L/∂θ ⊙ Δ ⊙ (1 − 2B) ⊙ σ'(S − b), so no
autograd graph spans the parameters. Masks are index masks (`IndexMask`).

With `sweep`, the search runs again from the base patch of each listed sparsity, one after another
(only their summaries are kept), for the smallest mask that reaches a target (claim C5).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from factrecall.analysis.masks import IndexMask, load_mask, save_masks
from factrecall.analysis.run import load_pair, run_dataset
from factrecall.analysis.threshold import kth_largest
from factrecall.analysis.units import breakdown
from factrecall.analysis.weights import load_weights
from factrecall.artifacts import write_json
from factrecall.encode import collate, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.memory import trim
from factrecall.models.tensor_files import model_weights
from factrecall.terms import EVAL_SETS

BIAS = 10.0


def grafted(pre: torch.Tensor, ft: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """θ_pre + γ ⊙ (θ_ft − θ_pre) for one tensor (γ may be relaxed, i.e. real-valued)."""
    return pre + gamma * (ft - pre)


def relaxed_mask(base: torch.Tensor, scores: torch.Tensor, bias: float = BIAS) -> torch.Tensor:
    """γ(S) = B + (1 − 2B) ⊙ σ(S − b) for one tensor (B a float 0/1 tensor)."""
    return base + (1 - 2 * base) * torch.sigmoid(scores - bias)


def score_gradient(grad: torch.Tensor, delta: torch.Tensor, base: torch.Tensor, scores: torch.Tensor,
                   bias: float = BIAS) -> torch.Tensor:
    """∂L/∂S from ∂L/∂θ at θ(γ(S)): ∂θ/∂γ = Δ, ∂γ/∂S = (1 − 2B) ⊙ σ(S − b) ⊙ (1 − σ(S − b))."""
    sigma = torch.sigmoid(scores - bias)
    return grad * delta * (1 - 2 * base) * sigma * (1 - sigma)


def base_patch(shapes: dict[str, tuple[int, ...]], ft: Mapping[str, torch.Tensor], pre: Mapping[str, torch.Tensor],
               sparsity: float) -> IndexMask:
    """The top-`sparsity` fraction of |θ_ft − θ_pre| over all entries of `shapes` (streamed tensor by tensor)."""
    total = sum(math.prod(s) for s in shapes.values())
    value = kth_largest(lambda: ((ft[n] - pre[n]).abs_() for n in shapes), max(1, round(sparsity * total)))
    return IndexMask(shapes, {n: ((ft[n] - pre[n]).abs_() >= value).flatten().nonzero().squeeze(1) for n in shapes})


def graft_run(run: Path, sparsity: float = 0.01, steps: int = 20, lr: float = 1e7, batches_per_step: int = 4,
              batch_size: int = 64, eval_people: int = 0, seed: int = 0, data: Path | None = None,
              device: str = "auto", sweep: tuple[float, ...] = ()) -> dict:
    """Search the graft mask of a run; writes `analysis/graft.json` and `analysis/graft_mask.safetensors`.

    With `sweep`, the search is repeated from the base patch of every other sparsity there (the same seed),
    and `graft.json` gets `sweep` (|γ|₀ and accuracies per sparsity, `sparsity` included) and `finetuned`
    (θ_ft's accuracy on the same people), the numbers for the smallest mask that reaches a target."""
    run = Path(run)
    for s in (sparsity, *sweep):
        if not 0 < s < 1:
            raise UserError(f"--sparsity must lie strictly between 0 and 1 (got {s})")
    if not (steps >= 0 and math.isfinite(lr) and lr > 0):
        raise UserError(f"--steps must be ≥ 0 and --lr positive (got {steps}, {lr})")
    model, tokenizer, pre = load_pair(run, "grafting starts from it", device)
    ft = model_weights(RunLayout(run).model, "θ_ft", pre.shapes)
    model.eval()
    device = next(model.parameters()).device
    dataset = run_dataset(run, data)
    pad = pad_id(tokenizer)
    sets = eval_sets(tokenizer, dataset, eval_people)
    train_qa = [encode_qa(tokenizer, q) for q in dataset.qa_split("id")]
    finetuned = evaluate(model, sets, pad) if sweep else None  # the model is θ_ft until a search writes into it

    def on_device(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return pre[name].to(device), ft[name].to(device)

    def accuracy(mask: IndexMask, names: tuple[str, ...] = tuple(sets)) -> dict:
        def hard(name: str, p: torch.Tensor) -> torch.Tensor:  # exactly θ_ft where γ = 1, θ_pre elsewhere
            w_pre, w_ft = on_device(name)
            return torch.where(mask.dense(name).to(device), w_ft, w_pre).to(p.dtype)
        load_weights(model, hard)
        return evaluate(model, {n: sets[n] for n in names}, pad)

    def search(sparsity: float) -> tuple[IndexMask, dict, int, IndexMask, dict]:
        """(best mask, its accuracy, its step, base patch, its accuracy) from the base patch at `sparsity`."""
        base = base_patch(pre.shapes, ft, pre, sparsity)
        gen = torch.Generator().manual_seed(seed)
        scores = {n: torch.rand(shape, generator=gen).to(device) for n, shape in base.shapes.items()}  # S
        rng = random.Random(seed)

        def patch(name: str) -> torch.Tensor:  # B of one tensor, float 0/1
            return base.dense(name).to(device, torch.float32)

        def relaxed(name: str, p: torch.Tensor) -> torch.Tensor:
            return grafted(*on_device(name), relaxed_mask(patch(name), scores[name])).to(p.dtype)

        def rounded() -> IndexMask:  # γ > ½ of the current scores
            return IndexMask(base.shapes, {n: (relaxed_mask(patch(n), s) > 0.5).flatten().nonzero().squeeze(1).cpu()
                                           for n, s in scores.items()})

        base_accuracy = accuracy(base)
        best_mask, best_id, best_step = base, base_accuracy["qa_id"]["accuracy"], 0
        for step in tqdm(range(1, steps + 1), desc="graft", leave=False):
            load_weights(model, relaxed)
            model.zero_grad(set_to_none=True)
            for _ in range(batches_per_step):
                rows = rng.sample(range(len(train_qa)), min(batch_size, len(train_qa)))
                batch = {k: v.to(device) for k, v in collate([train_qa[r] for r in rows], pad).items()}
                (model(**batch).loss / batches_per_step).backward()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.grad is None:  # a parameter the loss does not reach: ∂L/∂S = 0
                        continue
                    w_pre, w_ft = on_device(name)
                    scores[name] -= lr * score_gradient(p.grad, w_ft - w_pre, patch(name), scores[name])
            model.zero_grad(set_to_none=True)
            trim()
            mask = rounded()
            step_id = accuracy(mask, ("qa_id",))["qa_id"]["accuracy"]  # the selection criterion only
            if step_id > best_id:
                best_mask, best_id, best_step = mask, step_id, step
        best_accuracy = accuracy(best_mask) if best_step else base_accuracy
        return best_mask, best_accuracy, best_step, base, base_accuracy

    points = {}
    for s in sorted({*sweep} - {sparsity}):
        mask, acc, step, base, base_acc = search(s)
        points[s] = _point(s, mask, acc, step, base, base_acc)
    best_mask, best_accuracy, best_step, base, base_accuracy = search(sparsity)
    result = _save(run, best_mask, best_accuracy, best_step, base, base_accuracy, sparsity, steps, lr)
    if sweep:
        points[sparsity] = _point(sparsity, best_mask, best_accuracy, best_step, base, base_accuracy)
        result["finetuned"] = {m: finetuned[m]["accuracy"] for m in EVAL_SETS}
        result["sweep"] = [points[s] for s in sorted(points)]
    write_json(RunLayout(run).result("graft"), result)
    return result


def _point(sparsity: float, mask: IndexMask, acc: dict, step: int, base: IndexMask, base_acc: dict) -> dict:
    """One sparsity of the sweep: the best mask's |γ|₀, step and accuracy, and the base patch's."""
    return {"sparsity": sparsity, "size": mask.size(), "best_step": step,
            "accuracy": {m: acc[m]["accuracy"] for m in EVAL_SETS},
            "base_patch": {"size": base.size(), "accuracy": {m: base_acc[m]["accuracy"] for m in EVAL_SETS}}}


def _summary(mask: IndexMask, acc: dict) -> dict:
    return {"size": mask.size(), **breakdown({n: mask.count(n) for n in mask.index}),
            "accuracy": {m: acc[m]["accuracy"] for m in EVAL_SETS}}


def _save(run: Path, mask: IndexMask, acc: dict, step: int, base: IndexMask, base_acc: dict, sparsity: float,
          steps: int, lr: float) -> dict:
    """Save the graft mask; return graft.json's result (with the overlap with the shared set, when saved)."""
    result = {"sparsity": sparsity, "steps": steps, "lr": lr, "best_step": step, "parameters": mask.total(),
              "graft": _summary(mask, acc), "base_patch": _summary(base, base_acc)}
    files = RunLayout(run)
    if files.shared_mask.is_file():
        shared = load_mask(files.shared_mask, "shared", mask.shapes)
        in_traced = mask.restrict(shared.index)
        # chance within the traced tensors, where shared entries can be: |γ ∩ traced|·|Shared| / |traced|
        overlap = (in_traced & shared).size()
        chance = in_traced.size() * shared.size() / shared.total()
        result["shared_overlap"] = {"overlap": overlap, "shared": shared.size(), "graft_in_traced": in_traced.size(),
                                    "chance": chance, "enrichment": overlap / chance if chance else None}
    save_masks(files.graft_mask, {"graft": mask}, {"sparsity": str(sparsity)})
    return result
