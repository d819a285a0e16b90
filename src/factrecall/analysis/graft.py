"""Grafting: the sparse part of fine-tuning that is enough for fact recall (docs/method.md §7; Panigrahi et al. 2023).

    θ(γ) = θ_pre + γ ⊙ (θ_ft − θ_pre)  on the traced block matrices T,    θ(γ) = θ_ft  elsewhere

T = `models.adapters.tracked_parameter_names(model)`: the attention and MLP weight matrices of every
block. Embeddings, norms, biases and the LM head stay at θ_ft, as Panigrahi et al.'s code fixes them
(`fix_embeddings`, `fix_head`). γ ∈ {0, 1} per entry of T; |γ|₀ and sparsities are fractions of T's
entries (`traced` in graft.json).

The search starts from the base patch B (the top-s fraction of |θ_ft − θ_pre| over T) and relaxes
the mask as

    γ(S) = B + (1 − 2B) ⊙ σ(S − b),   b = 10, S ~ U[0, 1)

so γ ≈ B at the start and an entry flips when its S passes b. Each step averages the gradient of
the ID-QA answer loss with respect to S over a few batches and takes a plain gradient step
(σ'(S − 10) ≈ 4.5e-5, hence the very large default learning rate). After every step the mask is
rounded (γ > ½); the kept mask is the best rounded one on ID-QA.

People: the ID people are halved by a seeded shuffle (`split_people`). The *selection* half gives
the training batches and the kept-step criterion; the *report* half (with the OOD people) gives every
accuracy written, θ_ft's (`finetuned`) included, so the kept step is never chosen on what it reports.
A search runs `steps` steps and, while its best step is its last, `steps` more, up to BLOCKS × steps:
`converged` says the kept step came before the last step run.

With `bracket`, the smallest sparsity whose graft reaches RECOVER × θ_ft's ID-QA (claim C5) is
bisected (`bisect`): from the grid, then halving, until the last miss and the first hit are at most
`bracket` apart in sparsity. Every search is kept in `sweep` (summaries only).

Memory: the model itself holds θ(γ) (written into it tensor by tensor; θ_ft and θ_pre stay in
their files and are read a tensor at a time), and the search adds S and the gradients of T: three
copies of T in all. The gradient with respect to S comes from the chain rule on the model's own
parameter gradients, ∂L/∂S = ∂L/∂θ ⊙ Δ ⊙ (1 − 2B) ⊙ σ'(S − b), so no autograd graph spans the
parameters. Masks are index masks (`IndexMask`) over T.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.masks import IndexMask, load_mask, save_masks
from factrecall.analysis.run import load_pair, run_dataset
from factrecall.analysis.threshold import kth_largest
from factrecall.analysis.units import breakdown
from factrecall.analysis.weights import load_weights
from factrecall.artifacts import write_json
from factrecall.data.dataset import Dataset
from factrecall.encode import collate, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.memory import trim
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.tensor_files import model_weights
from factrecall.progress import progress
from factrecall.terms import EVAL_SETS

BIAS = 10.0
RECOVER = 0.9  # C5's target: a graft reaches it when its ID-QA is at least this share of θ_ft's (report people)
BLOCKS = 4  # a search whose best step is its last goes on, `steps` at a time, up to this many blocks of steps
TOLERANCE = 1e-9  # accuracies are fractions of counts: 0.9 × 0.8 must reach 0.72


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


def split_people(dataset: Dataset, seed: int) -> tuple[list[int], list[int]]:
    """(selection, report): the ID people's ids shuffled by `seed` and halved (report takes the odd one);
    the same for the same dataset and seed, disjoint, together every ID person."""
    ids = [p["person_id"] for p in dataset.people if p["split"] == "id"]
    if len(ids) < 2:
        raise UserError(f"grafting needs at least 2 ID people (one to choose the kept step, one to report on); "
                        f"{dataset.path} has {len(ids)}")
    shuffled = random.Random(seed).sample(ids, len(ids))
    return shuffled[:len(ids) // 2], shuffled[len(ids) // 2:]


def of_people(dataset: Dataset, people: Iterable[int]) -> Dataset:
    """The dataset cut to `people` (ids): their rows of people, bios and questions, in the dataset's order."""
    keep = set(people)
    return replace(dataset, people=[p for p in dataset.people if p["person_id"] in keep],
                   bios=[b for b in dataset.bios if b["person_id"] in keep],
                   qa=[q for q in dataset.qa if q["person_id"] in keep])


def bisect(reaches: Callable[[float], tuple[bool, int]], grid: Iterable[float], width: float, total: int) -> dict:
    """The bracket of the smallest sparsity whose graft reaches the target, at most `width` wide in sparsity.

    `reaches(s)` searches at sparsity s and says (reached, |γ|₀). The ends start at s = 0 (γ ≡ 0, size 0:
    nothing can need fewer) as a miss and s = 1 (γ ≡ 1 is θ_ft, `total` entries) as a hit, neither
    searched. Each probe is the middle grid point strictly inside the bracket while there is one, then
    the bracket's midpoint; a hit lowers the hit end, a miss raises the miss end (monotone in s assumed).
    Returns {miss: {sparsity, size}, hit: {sparsity, size}, width}."""
    points = sorted(set(grid))
    miss, hit = {"sparsity": 0.0, "size": 0}, {"sparsity": 1.0, "size": total}
    while hit["sparsity"] - miss["sparsity"] > width * (1 + TOLERANCE):
        inside = [s for s in points if miss["sparsity"] < s < hit["sparsity"]]
        s = inside[len(inside) // 2] if inside else (miss["sparsity"] + hit["sparsity"]) / 2
        reached, size = reaches(s)
        if reached:
            hit = {"sparsity": s, "size": size}
        else:
            miss = {"sparsity": s, "size": size}
    return {"miss": miss, "hit": hit, "width": hit["sparsity"] - miss["sparsity"]}


@dataclass(frozen=True)
class Search:
    """One search from the base patch at `sparsity`: the kept mask and its accuracies (report people)."""
    sparsity: float
    mask: IndexMask
    accuracy: dict
    best_step: int
    steps_run: int
    base: IndexMask
    base_accuracy: dict

    @property
    def converged(self) -> bool:
        """The kept step came before the last step run (no steps asked: the base patch is exact)."""
        return self.steps_run == 0 or self.best_step < self.steps_run

    def point(self) -> dict:
        """Its entry of `sweep`."""
        return {"sparsity": self.sparsity, "size": self.mask.size(), "best_step": self.best_step,
                "steps_run": self.steps_run, "converged": self.converged, "accuracy": _rates(self.accuracy),
                "base_patch": {"size": self.base.size(), "accuracy": _rates(self.base_accuracy)}}


def graft_run(run: Path, sparsity: float = DEFAULT.graft.sparsity, steps: int = DEFAULT.graft.steps,
              lr: float = DEFAULT.graft.lr, batches_per_step: int = 4,
              batch_size: int = 64, eval_people: int = 0, seed: int = 0, data: Path | None = None,
              device: str = "auto", grid: tuple[float, ...] = (), bracket: float | None = None) -> dict:
    """Search the graft mask of a run; writes `analysis/graft.json` and `analysis/graft_mask.safetensors`.

    The saved mask is the search at `sparsity`. `eval_people` > 0 evaluates that many people per half and
    split; `people` counts the halves, `n` the items scored per report set. With `bracket`, the sparsity
    that first reaches RECOVER × θ_ft's ID-QA is bisected from `grid` (with `sparsity`) to a bracket that
    wide: graft.json gets `recover`, `sweep` (every search, by sparsity) and `bracket` ({miss, hit}:
    {sparsity, size, converged}, and `width`)."""
    run = Path(run)
    for s in (sparsity, *grid):
        if not 0 < s < 1:
            raise UserError(f"--sparsity must lie strictly between 0 and 1 (got {s})")
    if not (steps >= 0 and math.isfinite(lr) and lr > 0):
        raise UserError(f"--steps must be ≥ 0 and --lr positive (got {steps}, {lr})")
    if bracket is not None and not 0 < bracket < 1:
        raise UserError(f"--bracket must lie strictly between 0 and 1 (got {bracket})")
    model, tokenizer, pre = load_pair(run, "grafting starts from it", device)
    traced = tracked_parameter_names(model)
    shapes = {n: pre.shapes[n] for n in traced}  # T
    for name, p in model.named_parameters():  # only T's gradients are needed
        p.requires_grad_(name in shapes)
    ft = model_weights(RunLayout(run).model, "θ_ft", pre.shapes)
    model.eval()
    device = next(model.parameters()).device
    dataset = run_dataset(run, data)
    pad = pad_id(tokenizer)
    selection, report = split_people(dataset, seed)
    report_sets = eval_sets(tokenizer, of_people(dataset, [*report, *(p["person_id"] for p in dataset.people
                                                                     if p["split"] != "id")]), eval_people)
    chosen = of_people(dataset, selection)
    selection_set = {"qa_id": eval_sets(tokenizer, chosen, eval_people)["qa_id"]}
    train_qa = [encode_qa(tokenizer, q) for q in chosen.qa_split("id")]
    finetuned = evaluate(model, report_sets, pad)  # the model is θ_ft until a search writes into it

    def on_device(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return pre[name].to(device), ft[name].to(device)

    def accuracy(mask: IndexMask, sets: dict) -> dict:
        def hard(name: str, p: torch.Tensor) -> torch.Tensor:  # exactly θ_ft where γ = 1, θ_pre elsewhere
            w_pre, w_ft = on_device(name)
            return torch.where(mask.dense(name).to(device), w_ft, w_pre).to(p.dtype)
        load_weights(model, hard, traced)
        return evaluate(model, sets, pad)

    def chooses(mask: IndexMask) -> float:  # the kept-step criterion: ID-QA of the selection half
        return accuracy(mask, selection_set)["qa_id"]["accuracy"]

    def search(s: float) -> Search:
        base = base_patch(shapes, ft, pre, s)
        gen = torch.Generator().manual_seed(seed)
        scores = {n: torch.rand(shape, generator=gen).to(device) for n, shape in shapes.items()}  # S
        rng = random.Random(seed)

        def patch(name: str) -> torch.Tensor:  # B of one tensor, float 0/1
            return base.dense(name).to(device, torch.float32)

        def relaxed(name: str, p: torch.Tensor) -> torch.Tensor:
            return grafted(*on_device(name), relaxed_mask(patch(name), scores[name])).to(p.dtype)

        def rounded() -> IndexMask:  # γ > ½ of the current scores
            return IndexMask(shapes, {n: (relaxed_mask(patch(n), score) > 0.5).flatten().nonzero().squeeze(1).cpu()
                                      for n, score in scores.items()})

        best_mask, best_id, best_step, steps_run = base, chooses(base), 0, 0
        for step in progress(range(1, BLOCKS * steps + 1), desc=f"graft s={s:.4g}", leave=False):
            load_weights(model, relaxed, traced)
            model.zero_grad(set_to_none=True)
            for _ in range(batches_per_step):
                rows = rng.sample(range(len(train_qa)), min(batch_size, len(train_qa)))
                batch = {k: v.to(device) for k, v in collate([train_qa[r] for r in rows], pad).items()}
                (model(**batch).loss / batches_per_step).backward()
            with torch.no_grad():
                for name in traced:
                    w_pre, w_ft = on_device(name)
                    grad = model.get_parameter(name).grad
                    if grad is not None:  # a tensor the loss does not reach: ∂L/∂S = 0
                        scores[name] -= lr * score_gradient(grad, w_ft - w_pre, patch(name), scores[name])
            model.zero_grad(set_to_none=True)
            trim()
            mask, steps_run = rounded(), step
            step_id = chooses(mask)
            if step_id > best_id:  # a later mask must be strictly better
                best_mask, best_id, best_step = mask, step_id, step
            if step % steps == 0 and best_step < step:
                break
        base_accuracy = accuracy(base, report_sets)
        best_accuracy = accuracy(best_mask, report_sets) if best_step else base_accuracy
        return Search(s, best_mask, best_accuracy, best_step, steps_run, base, base_accuracy)

    points: dict[float, dict] = {}  # every search's summary, by sparsity
    kept: dict[float, Search] = {}  # the search at `sparsity`, whole: its mask is saved
    target = RECOVER * finetuned["qa_id"]["accuracy"]

    def reaches(s: float) -> tuple[bool, int]:
        found = search(s)
        points[s] = found.point()
        if s == sparsity:
            kept[s] = found
        return found.accuracy["qa_id"]["accuracy"] >= target - TOLERANCE, found.mask.size()

    found = (bisect(reaches, (sparsity, *grid), bracket, sum(math.prod(s) for s in shapes.values()))
             if bracket is not None else None)
    result = _save(run, kept.get(sparsity) or search(sparsity), steps, lr, pre.shapes)
    result.update(people={"selection": len(selection), "report": len(report), "train_questions": len(train_qa)},
                  n={m: finetuned[m]["n"] for m in EVAL_SETS}, finetuned=_rates(finetuned))
    if found is not None:
        ends = {end: {**found[end], "converged": points.get(found[end]["sparsity"], {}).get("converged", True)}
                for end in ("miss", "hit")}  # the ends s = 0 and s = 1 are exact, never searched
        result.update(recover=RECOVER, sweep=[points[s] for s in sorted(points)],
                      bracket={**ends, "width": found["width"]})
    write_json(RunLayout(run).result("graft"), result)
    return result


def _rates(acc: dict) -> dict:
    return {m: acc[m]["accuracy"] for m in EVAL_SETS}


def _summary(mask: IndexMask, acc: dict) -> dict:
    return {"size": mask.size(), **breakdown({n: mask.count(n) for n in mask.index}), "accuracy": _rates(acc)}


def _save(run: Path, main: Search, steps: int, lr: float, model_shapes: dict[str, tuple[int, ...]]) -> dict:
    """Save the graft mask; return graft.json's result (with the overlap with the shared set, when saved)."""
    mask = main.mask
    result = {"sparsity": main.sparsity, "steps": steps, "lr": lr, "best_step": main.best_step,
              "steps_run": main.steps_run, "converged": main.converged, "traced": mask.total(),
              "graft": _summary(mask, main.accuracy), "base_patch": _summary(main.base, main.base_accuracy)}
    files = RunLayout(run)
    if files.shared_mask.is_file():
        shared = load_mask(files.shared_mask, "shared", model_shapes)
        common = [n for n in shared.index if n in mask.index]
        in_traced, shared = mask.restrict(common), shared.restrict(common)
        # chance within the tensors both cover, where shared entries can be: |γ ∩ traced|·|Shared| / |traced|
        overlap = (in_traced & shared).size()
        chance = in_traced.size() * shared.size() / shared.total() if shared.total() else 0.0
        result["shared_overlap"] = {"overlap": overlap, "shared": shared.size(), "graft_in_traced": in_traced.size(),
                                    "chance": chance, "enrichment": overlap / chance if chance else None}
    save_masks(files.graft_mask, {"graft": mask}, {"sparsity": str(main.sparsity)})
    return result


def _line(g: dict) -> str:
    acc, b = g["graft"]["accuracy"], g.get("bracket")
    reach = (f"; reaches {g['recover']:.0%} of θ_ft's ID-QA between {b['miss']['size'] / g['traced']:.1%} and "
             f"{b['hit']['size'] / g['traced']:.1%} of them" if b else "")
    return (f"|γ|₀ {g['graft']['size']:,} of {g['traced']:,} traced entries, grafted ID {acc['qa_id']:.3f} "
            f"OOD {acc['qa_ood']:.3f}{reach}")


def _entry(g: dict) -> dict:
    """The saved graft, and C5's sweep and bracket (sizes in entries of the `traced` block matrices)."""
    return {"size": g["graft"]["size"], "traced": g["traced"], "sparsity": g["sparsity"],
            "converged": g["converged"], "accuracy": g["graft"]["accuracy"],
            "base_patch_accuracy": g["base_patch"]["accuracy"],
            "shared_enrichment": g.get("shared_overlap", {}).get("enrichment"),
            "finetuned": g.get("finetuned"), "recover": g.get("recover"), "bracket": g.get("bracket"),
            "sweep": [{key: p[key] for key in ("sparsity", "size", "converged", "accuracy")}
                      for p in g.get("sweep", [])]}


ANALYSIS = Analysis(
    name="graft", reads=("shared",),
    run=lambda run, a: graft_run(run, a.graft.sparsity, a.graft.steps, a.graft.lr, eval_people=a.graft.eval_people,
                                 device=a.device, grid=a.graft.sparsities, bracket=a.graft.bracket),
    writes=lambda run, a: [run.result("graft"), run.graft_mask], headline=_line, summary=_entry)
