"""Heads and neurons of the fact-recall circuit (docs/method.md §8; the paper's Fig. 4a–c).

Units are ranked by a metric; two curves per metric, one evaluation per distinct intervention:

* sufficiency — keep θ_ft only in the top-n units, reset every other unit of that kind to θ_pre;
  the minimal sufficient n is the smallest reaching 90 % of the unablated OOD-QA accuracy;
* criticality — reset the top-n units, leave the rest; the critical n is the smallest that
  halves OOD-QA accuracy.

A head's reset touches its query features and its output-projection input columns; its K/V
group's features only when every head of the group is reset (grouped K/V). A neuron's reset
touches its up (and gate) feature and its down column. Metrics: `shared_size`, `qa_size`,
`bio_size` (entries of the shared, Top_QA and Top_BIO sets in the unit, K/V shares counted 1/g),
`graft_size` (entries of the graft mask, when `factrecall graft` ran), `delta_norm`
(‖θ_ft − θ_pre‖ over the unit's entries), `random` (`random_rankings` permutations seeded by the run's
training seed and the permutation's index; its minimal sufficient and critical n are their medians).
Only the first permutation's curves are complete (ID- and OOD-QA, the figure's); every other
permutation is scored on OOD-QA alone and only up to the n where it qualifies (exact for the smallest
qualifying n), and a set another ranking already reset is not scored again.

Interventions: `reset` (the unit's weights to θ_pre, default), or `zero` / `mean` ablation of the
unit's output at the input of the output projection (mean over the evaluation texts' positions).
The reset fraction of a point always counts the entries a weight reset would touch.

Head curves take every n up to `EVERY_HEAD` heads (the tiny models' 8); a larger model's take n = 0–8
and a geometric grid (about two points per doubling, `head_counts`): 22 points instead of 673 for
Llama-3.2-3B's 672 heads, so its curves are minutes of evaluation, not hours. The minimal sufficient
and critical n are then the smallest grid points that qualify (upper bounds on the every-n values).
Neuron curves take the fractions `points`.

`on="grafted"` starts from the grafted model θ_pre + γ ⊙ (θ_ft − θ_pre) of `factrecall graft`
instead of θ_ft (the paper's Fig. 4 circuit lives in the grafted model); its outputs are named
`heads-grafted.json` / `neurons-grafted.json`. Curves score ID- and OOD-QA on the first
`eval_people` people of each split; BIO only when asked (it is the slow set and not a criterion).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.masks import IndexMask
from factrecall.analysis.run import load_pair, load_trace, model_config, run_dataset
from factrecall.analysis.selection import Selection, run_selection
from factrecall.analysis.units import UnitTable, feature_sums, unit_counts
from factrecall.analysis.weights import load_graft_mask, make_grafted, reset_to_base
from factrecall.artifacts import read_json, write_json
from factrecall.encode import collate, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.models.adapters import adapter_for, tensor_units
from factrecall.models.hooks import temporary_hooks
from factrecall.progress import progress
from factrecall.terms import MODEL_VARIANTS

UNIT_METRICS = ("shared_size", "qa_size", "bio_size", "graft_size", "delta_norm", "random")
INTERVENTIONS = ("reset", "zero", "mean")
Masks = dict[str, torch.Tensor]


def _output_module(config, kind: str) -> str:
    """The module whose *input* features are the units' outputs: o-proj (heads) or down-proj (neurons)."""
    a = adapter_for(config)
    return a.attn_out if kind == "head" else next(m for m, role in a.mlp.items() if role == "out")


def _output_features(config, kind: str, layer: int, units: list[int]) -> torch.Tensor:
    """Bool [in_features] of the output module of `layer` owned by `units`."""
    a = adapter_for(config)
    layout = tensor_units(config, f"{a.layers}.{layer}.{_output_module(config, kind)}.weight")
    return torch.isin(layout.feature_unit, torch.tensor(units))


@torch.no_grad()
def unit_output_means(model, config, kind: str, examples, pad: int, batch_size: int = 256) -> dict[int, torch.Tensor]:
    """Mean input of every layer's output module over all real token positions of `examples`: {layer: [features]}."""
    a = adapter_for(config)
    sums: dict[int, torch.Tensor] = {}
    real = torch.ones(1)  # [B, T, 1] mask of the current batch's real (non-pad) positions

    def accumulate(layer: int):
        def hook(module, args):
            sums[layer] = sums.get(layer, 0) + (args[0] * real).sum(dim=(0, 1))
        return hook

    hooks = [(model.get_submodule(f"{a.layers}.{layer}.{_output_module(config, kind)}"), "pre", accumulate(layer))
             for layer in range(len(model.get_submodule(a.layers)))]
    count, device = 0, next(model.parameters()).device
    with temporary_hooks(hooks):
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size], pad).items()}
            real = batch["attention_mask"].unsqueeze(-1).float()
            count += int(batch["attention_mask"].sum())
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return {layer: total / count for layer, total in sums.items()}


@contextmanager
def unit_output_ablation(model, config, kind: str, units: set[tuple[int, int]], mode: str,
                         means: dict[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Inside the block the outputs of `units` are zero (`mode="zero"`) or their mean (`"mean"`) at the
    input of the output projection, where a head's (or neuron's) output is isolated."""
    a = adapter_for(config)
    by_layer: dict[int, list[int]] = {}
    for layer, unit in units:
        by_layer.setdefault(layer, []).append(unit)

    def replace(features: torch.Tensor, layer: int):
        def hook(module, args):
            x = args[0].clone()
            x[..., features] = 0.0 if mode == "zero" else means[layer][features].to(x.dtype)
            return (x, *args[1:])
        return hook

    with temporary_hooks((model.get_submodule(f"{a.layers}.{layer}.{_output_module(config, kind)}"), "pre",
                          replace(_output_features(config, kind, layer, idx), layer)) for layer, idx in by_layer.items()):
        yield


def unit_masks(config, shapes: dict[str, tuple[int, ...]], kind: str, units: set[tuple[int, int]]) -> Masks:
    """Entries owned by the given units ((layer, index) pairs) of `kind` ("head" or "neuron")."""
    masks = {}
    for name, shape in shapes.items():
        layout = tensor_units(config, name)
        if layout is None or layout.kind != kind:
            continue
        chosen = torch.zeros(layout.feature_unit.numel(), dtype=torch.bool)
        for unit in range(int(layout.feature_unit.max()) + 1):
            owners = range(unit * layout.group_size, (unit + 1) * layout.group_size)
            if all((layout.layer, h) in units for h in owners):  # a K/V group only when all its heads are
                chosen |= layout.feature_unit == unit
        view = [1] * len(shape)
        view[layout.axis] = -1
        masks[name] = chosen.view(view).expand(shape).clone()
    return masks


def delta_norms(config, model, base) -> dict[str, torch.Tensor]:
    """‖θ − θ_pre‖ per unit (`heads`, `neurons`) of the model's current weights θ, a tensor at a time."""
    table = UnitTable(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            sums = feature_sums(config, name, (p - base[name].to(p.device, p.dtype)).square())
            if sums is not None:
                table.add(name, sums.cpu())
    return {kind: t.sqrt() for kind, t in table.tables().items()}


def unit_scores(config, kind: str, metric: str, selection: Selection, norms: dict | None,
                graft: IndexMask | None, permutation: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """[layers, units] score of every unit of `kind` under `metric` (higher = earlier in the ranking);
    `random` draws the scores of `permutation` = (run seed, index)."""
    table = "heads" if kind == "head" else "neurons"
    if metric in ("shared_size", "qa_size", "bio_size"):
        mask = {"shared_size": selection.shared, "qa_size": selection.top_qa, "bio_size": selection.top_bio}[metric]
        return unit_counts(config, mask)[table]
    if metric == "graft_size":
        if graft is None:
            raise UserError("metric graft_size needs a graft mask; run 'factrecall graft --run RUN' first")
        return unit_counts(config, graft.restrict(selection.shared.index))[table]
    if metric == "delta_norm":
        return norms[table]
    if metric == "random":
        shape = unit_counts(config, selection.shared)[table].shape
        return torch.from_numpy(np.random.default_rng(permutation).random(shape))
    raise UserError(f"unknown metric {metric!r}; choose from {', '.join(UNIT_METRICS)}")


def run_seed(run: Path) -> int:
    """The training seed in the run's config.json: the study seed the `random` permutations start from."""
    path = RunLayout(Path(run)).config
    record = read_json(path, "run config")
    seed = (record.get("train") or {}).get("seed") if isinstance(record, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{path} is damaged (no training seed); retrain the run")
    return seed


def ranking(scores: torch.Tensor) -> list[tuple[int, int]]:
    """(layer, unit) pairs by descending score; ties keep layer-major order."""
    flat = scores.flatten()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
    return [(i // scores.shape[1], i % scores.shape[1]) for i in order]


EVERY_HEAD = 64  # up to this many heads, the curves take every n


def head_counts(total: int) -> list[int]:
    """n of the head curves: every n up to `EVERY_HEAD` heads; else 0–8 and total·2^(−j/2), j = 0, 1, …"""
    if total <= EVERY_HEAD:
        return list(range(total + 1))
    grid = {round(total * 2 ** (-j / 2)) for j in range(int(2 * math.log2(total)) + 1)}
    return sorted(set(range(9)) | {n for n in grid if n <= total})


# curve → (its minimal n, whether an OOD-QA accuracy `a` qualifies against the unablated `ood`)
CRITERIA = {"sufficiency": ("minimal_sufficient", lambda a, ood: a >= 0.9 * ood),
            "criticality": ("critical", lambda a, ood: a <= 0.5 * ood)}


def _first(points: list[dict], mode: str, ood: float) -> int | None:
    """The smallest n of a curve ({n, qa_ood} points) whose OOD-QA meets `mode`'s criterion (None: never)."""
    return next((p["n"] for p in points if CRITERIA[mode][1](p["qa_ood"], ood)), None)


def _up_to_first(points: Iterator[dict], mode: str, ood: float) -> list[dict]:
    """The points up to and including the first that meets `mode`'s criterion (all when none does)."""
    kept = []
    for p in points:
        kept.append(p)
        if CRITERIA[mode][1](p["qa_ood"], ood):
            break
    return kept


def median_n(values: list[int | None]) -> float | None:
    """The median of minimal n over permutations; a never-reached n (None) ranks after every n, and a median
    that falls on one is None."""
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    middle = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    if None in middle:
        return None
    m = sum(middle) / len(middle)
    return int(m) if m == int(m) else m


def circuit_curves(run: Path, kind: str = "head", metrics: tuple[str, ...] = UNIT_METRICS, k: float = DEFAULT.shared.k,
                   eval_people: int = DEFAULT.heads.eval_people, points: tuple[float, ...] = DEFAULT.neurons.points,
                   random_rankings: int = DEFAULT.heads.random_rankings, data: Path | None = None, intervention: str = "reset",
                   on: str = DEFAULT.heads.on, bio: bool = False, device: str = "auto") -> dict:
    """Sufficiency and criticality curves per metric; writes `analysis/heads.json` or `analysis/neurons.json`
    (`-grafted` before `.json` when `on="grafted"`).

    Per metric: `ranking` (every head; the top 10 neurons), both curves ({n, accuracy per set,
    reset_fraction}), `minimal_sufficient` and `critical`. `random` adds `seed` (the run's training seed)
    and `permutations` (index, ranking, both n, and {n, qa_ood} up to each n); its n are their medians
    and its curves the first permutation's."""
    run = Path(run)
    if intervention not in INTERVENTIONS:
        raise UserError(f"unknown intervention {intervention!r}; choose from {', '.join(INTERVENTIONS)}")
    if on not in MODEL_VARIANTS:
        raise UserError(f"unknown --on {on!r}; choose from {', '.join(MODEL_VARIANTS)}")
    unknown = [m for m in metrics if m not in UNIT_METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(UNIT_METRICS)}")
    if isinstance(random_rankings, bool) or not isinstance(random_rankings, int) or random_rankings < 1:
        raise UserError(f"--random-rankings must be at least 1 (got {random_rankings!r})")
    model, tokenizer, base = load_pair(run, "interventions reset units to it", device)
    trace, config, seed = load_trace(run), model_config(run), run_seed(run)
    selection = run_selection(run, trace, k)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    has_graft = RunLayout(run).graft_mask.is_file()
    graft = load_graft_mask(run, shapes) if has_graft or on == "grafted" else None
    if on == "grafted":
        make_grafted(model, base, graft)
    norms = delta_norms(config, model, base) if "delta_norm" in metrics else None
    metrics = tuple(m for m in metrics if m != "graft_size" or graft is not None)
    sets = eval_sets(tokenizer, run_dataset(run, data), eval_people)
    sets = {name: s for name, s in sets.items() if bio or name != "bio"}
    pad = pad_id(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())

    cache: dict[frozenset, dict] = {}  # reset units → {evaluation set: accuracy}, each evaluated once

    means = None
    if intervention == "mean":
        means = unit_output_means(model, config, kind, [e for s in sets.values() for e in s.examples], pad)

    def accuracy_with_reset(units: frozenset, names: tuple[str, ...] = tuple(sets)) -> dict:
        scored = cache.setdefault(units, {})
        missing = {name: sets[name] for name in names if name not in scored}
        if missing:
            if intervention == "reset":
                block = reset_to_base(model, base, unit_masks(config, shapes, kind, set(units)))
            else:
                block = unit_output_ablation(model, config, kind, set(units), intervention, means)
            with block:
                scored.update({m: r["accuracy"] for m, r in evaluate(model, missing, pad).items()})
        return {name: scored[name] for name in names}

    reference = accuracy_with_reset(frozenset())
    ood = reference["qa_ood"]

    def reset_set(order: list, n: int, mode: str) -> frozenset:
        top = frozenset(order[:n])
        return frozenset(order) - top if mode == "sufficiency" else top

    def full_curve(order: list, ns: list[int], mode: str) -> list[dict]:
        curve = []
        for n in ns:
            reset = reset_set(order, n, mode)
            touched = sum(int(m.sum()) for m in unit_masks(config, shapes, kind, set(reset)).values()) / n_params
            curve.append({"n": n, "accuracy": accuracy_with_reset(reset), "reset_fraction": touched})
        return curve

    def ood_points(order: list, ns: list[int], mode: str) -> Iterator[dict]:
        """{n, qa_ood} of a curve, each evaluated (on OOD-QA alone) only when asked for."""
        return ({"n": n, "qa_ood": accuracy_with_reset(reset_set(order, n, mode), ("qa_ood",))["qa_ood"]} for n in ns)

    result = {"kind": kind, "on": on, "intervention": intervention, "k": k, "eval_people": eval_people,
              "unablated": reference, "metrics": {}}
    bar = progress(metrics, desc=f"{kind}s", leave=False)
    for metric in bar:
        orders = [ranking(unit_scores(config, kind, metric, selection, norms, graft, (seed, i)))
                  for i in range(random_rankings if metric == "random" else 1)]
        total = len(orders[0])
        ns = sorted({round(f * total) for f in points}) if kind == "neuron" else head_counts(total)
        shown = 10 if kind == "neuron" else total
        curves = {mode: full_curve(orders[0], ns, mode) for mode in CRITERIA}
        tested = [{mode: _up_to_first(({"n": p["n"], "qa_ood": p["accuracy"]["qa_ood"]} for p in curves[mode]),
                                      mode, ood) for mode in CRITERIA}]
        tested += [{mode: _up_to_first(ood_points(order, ns, mode), mode, ood) for mode in CRITERIA}
                   for order in orders[1:]]
        firsts = [{key: _first(t[mode], mode, ood) for mode, (key, _) in CRITERIA.items()} for t in tested]
        entry = {"ranking": [list(u) for u in orders[0][:shown]], **curves,
                 **{key: median_n([f[key] for f in firsts]) for key, _ in CRITERIA.values()}}
        if metric == "random":
            entry |= {"seed": seed, "permutations": [{"index": i, "ranking": [list(u) for u in order[:shown]], **f, **t}
                                                     for i, (order, f, t) in enumerate(zip(orders, firsts, tested))]}
        result["metrics"][metric] = entry
    result["units"] = total if metrics else 0
    result["evaluations"] = len(cache)
    write_json(RunLayout(run).curves(kind, on), result)
    return result


def _line(c: dict) -> str:
    m = c["metrics"]["shared_size"]
    return f"shared_size {c['kind']}s: minimal sufficient {m['minimal_sufficient']}, critical {m['critical']} of {c['units']}"


def _entry(c: dict) -> dict:
    """Both n per metric (`random`: the medians over its permutations, and how many; the C6 ladder reads them)."""
    return {"units": c["units"], "unablated_qa_ood": c["unablated"]["qa_ood"],
            **{m: {"minimal_sufficient": v["minimal_sufficient"], "critical": v["critical"],
                   **({"rankings": len(v["permutations"])} if "permutations" in v else {})}
               for m, v in c["metrics"].items()}}


# Head or neuron curves on Shared(k) of `shared` (read from its mask) and, `on = "grafted"`, the graft. `random` is
# the median of `random_rankings` permutations on heads (C6); neurons, which no claim judges, take one.
HEADS = Analysis(
    name="heads", reads=("shared", "graft"),
    run=lambda run, a: circuit_curves(run, "head", k=a.shared.k, eval_people=a.heads.eval_people, on=a.heads.on,
                                      random_rankings=a.heads.random_rankings, device=a.device),
    writes=lambda run, a: [run.curves("head", a.heads.on)], headline=_line, summary=_entry)
NEURONS = Analysis(
    name="neurons", reads=("shared", "graft"),
    run=lambda run, a: circuit_curves(run, "neuron", k=a.shared.k, eval_people=a.neurons.eval_people,
                                      on=a.neurons.on, random_rankings=1, points=a.neurons.points, device=a.device),
    writes=lambda run, a: [run.curves("neuron", a.neurons.on)], headline=_line, summary=_entry)
