"""Shared parameters (the paper's Definition 3.1) and where they sit (docs/method.md §5).

    Top_T(k)   = entries whose trace score |Δ_T| is in the top k percent of all tracked entries
    Shared(k)  = Top_BIO(k) ∩ Top_QA(k)

`global` uses one threshold per task over all tracked entries; `per_tensor` one threshold per
task and tensor (a global threshold follows tensor scale: a few tensors can hold most of it).
Chance is the overlap of two independent top sets, (k/100)²·P; enrichment = |Shared| / chance.

Shared entries are counted per unit: attention head h of layer l owns its query features, its
output-projection input columns and its K/V features (a K/V group shared by g query heads counts
1/g towards each); MLP neuron j owns its up (and gate) row and its down column. Concentration is
the Gini coefficient of those counts over units and the share held by the top 1/5/10% of units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from factrecall.analysis.masks import IndexMask, load_mask, save_masks
from factrecall.analysis.run import TASKS, Trace, load_trace, model_config
from factrecall.analysis.threshold import kth_largest_many, top_count
from factrecall.artifacts import write_json
from factrecall.layout import RunLayout
from factrecall.memory import trim
from factrecall.models.adapters import geometry, layer_of, module_of, tensor_units

MODES = ("global", "per_tensor")
SWEEP = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
_HEADLINE = ("top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")
TOP_UNIT_FRACTIONS = (0.01, 0.05, 0.10)

Point = tuple[float, str]  # (k percent, mode)


@dataclass(frozen=True)
class Selection:
    """Top_BIO and Top_QA at (k, mode) as index masks over the traced tensors; `shared` their intersection."""
    k: float
    mode: str
    top_bio: IndexMask
    top_qa: IndexMask

    @cached_property
    def shared(self) -> IndexMask:
        return self.top_bio & self.top_qa


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of non-negative counts: 0 = spread evenly, → 1 = all in one unit."""
    x = counts.double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (i * x).sum() / (n * total) - (n + 1) / n)


def top_unit_share(counts: torch.Tensor) -> dict[str, float]:
    """Share of all counts held by the top 1%, 5% and 10% of units."""
    x = counts.double().flatten().sort(descending=True).values
    total = float(x.sum())
    return {f"{round(f * 100)}%": (float(x[: max(1, math.ceil(f * x.numel()))].sum()) / total if total else 0.0)
            for f in TOP_UNIT_FRACTIONS}


class UnitTable:
    """Per-unit sums, added a tensor at a time: `heads` [layers, heads] and `neurons` [layers, neurons].

    `add(name, per_feature)` takes the sums of some per-entry value (1 per selected entry, or Δ²)
    over every axis but the tensor's unit axis (`feature_sums`); other tensors are ignored.
    """

    def __init__(self, config):
        self.config = config
        g = geometry(config)
        self.heads = torch.zeros(g.n_layers, g.n_heads, dtype=torch.float64)
        self.neurons: dict[int, torch.Tensor] = {}

    def add(self, name: str, per_feature: torch.Tensor) -> None:
        units = tensor_units(self.config, name)
        if units is None:
            return
        per_unit = torch.bincount(units.feature_unit, weights=per_feature.double())
        if units.kind == "head":
            self.heads[units.layer] += (per_unit / units.group_size).repeat_interleave(units.group_size)
        else:
            self.neurons[units.layer] = self.neurons.get(units.layer, 0) + per_unit

    def tables(self) -> dict[str, torch.Tensor]:
        n_neurons = max((v.numel() for v in self.neurons.values()), default=0)
        neurons = torch.zeros(self.heads.shape[0], n_neurons, dtype=torch.float64)
        for layer, v in self.neurons.items():
            neurons[layer] = v
        return {"heads": self.heads.clone(), "neurons": neurons}


def feature_sums(config, name: str, values: torch.Tensor) -> torch.Tensor | None:
    """Sums of `values` (the tensor's shape) over every axis but its unit axis; None outside units."""
    units = tensor_units(config, name)
    if units is None:
        return None
    return values.sum(dim=[d for d in range(values.dim()) if d != units.axis], dtype=torch.float64)


def index_feature_counts(config, name: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Selected entries per feature of the unit axis, from sorted flat indices; None outside units."""
    units = tensor_units(config, name)
    if units is None:
        return None
    inner = math.prod(shape[units.axis + 1:])
    return torch.bincount((index // inner) % shape[units.axis], minlength=shape[units.axis])


def unit_counts(config, mask: IndexMask) -> dict[str, torch.Tensor]:
    """Selected entries per unit: `heads` [layers, heads] and `neurons` [layers, neurons] (float)."""
    table = UnitTable(config)
    for name, index in mask.index.items():
        counts = index_feature_counts(config, name, index, mask.shapes[name])
        if counts is not None:
            table.add(name, counts)
    return table.tables()


def breakdown(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """Selected entries `by_layer` (layer index, or "other") and `by_module` (path inside a block),
    from {tensor name: selected entries}."""
    by_layer: dict[str, int] = {}
    by_module: dict[str, int] = {}
    for name, count in counts.items():
        by_layer[layer_of(name)] = by_layer.get(layer_of(name), 0) + count
        by_module[module_of(name)] = by_module.get(module_of(name), 0) + count
    return {"by_layer": by_layer, "by_module": by_module}


class _Tally:
    """The summary of one (k, mode) point, added a tensor at a time."""

    def __init__(self, config, k: float, mode: str):
        self.k, self.mode, self.config = k, mode, config
        self.tracked = self.top_bio = self.top_qa = 0
        self.shared: dict[str, int] = {}
        self.units = UnitTable(config)

    def add(self, name: str, top_bio: torch.Tensor, top_qa: torch.Tensor) -> None:
        shared = top_bio & top_qa
        self.tracked += shared.numel()
        self.top_bio += int(top_bio.sum())
        self.top_qa += int(top_qa.sum())
        self.shared[name] = int(shared.sum())
        per_feature = feature_sums(self.config, name, shared)
        if per_feature is not None:
            self.units.add(name, per_feature)

    def summary(self) -> dict:
        """Sizes, enrichment over chance, Jaccard, breakdowns by layer/module/unit, concentration."""
        n_shared = sum(self.shared.values())
        chance = (self.k / 100) ** 2 * self.tracked
        units = self.units.tables()
        return {
            "k": self.k, "mode": self.mode, "tracked": self.tracked,
            "top_bio": self.top_bio, "top_qa": self.top_qa, "shared": n_shared, "chance": chance,
            "enrichment": n_shared / chance, "jaccard": n_shared / max(1, self.top_bio + self.top_qa - n_shared),
            **breakdown(self.shared),
            "heads": units["heads"].tolist(), "neurons": units["neurons"].tolist(),
            "gini": {kind: gini(units[kind]) for kind in ("heads", "neurons")},
            "top_unit_share": {kind: top_unit_share(units[kind]) for kind in ("heads", "neurons")},
        }


def scan(trace: Trace, config, points: list[Point], keep: Point | None = None) -> tuple[dict[Point, dict],
                                                                                      Selection | None]:
    """Summaries of every (k, mode) point and, with `keep`, that point's Selection.

    Reads the trace three times whatever the number of points: two streaming passes per task for
    every global threshold at once (`kth_largest_many`), then one pass a tensor at a time that
    takes the per-tensor thresholds and tallies every point. Peak extra memory: a few tensors of
    the largest traced tensor's size, plus the kept selection's indices.
    """
    wanted = list(dict.fromkeys(points + ([keep] if keep else [])))
    for k, mode in wanted:
        top_count(k, 1)  # validates k
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
    entries = trace.entries
    ks = {mode: sorted({k for k, m in wanted if m == mode}) for mode in MODES}
    global_value = {task: dict(zip(ks["global"], kth_largest_many(lambda task=task: trace.scores(task),
                                                                  [top_count(k, entries) for k in ks["global"]])))
                    if ks["global"] else {} for task in TASKS}
    tallies = {point: _Tally(config, *point) for point in points}
    kept: dict[str, dict[str, torch.Tensor]] = {task: {} for task in TASKS}
    for name in tqdm(trace.names, desc="shared", leave=False):
        scores = {task: trace.delta(task, name).abs_() for task in TASKS}
        tensor_value = {task: dict(zip(ks["per_tensor"], kth_largest_many(
            lambda s=scores[task]: [s], [top_count(k, scores[task].numel()) for k in ks["per_tensor"]])))
            if ks["per_tensor"] else {} for task in TASKS}
        for point in wanted:
            k, mode = point
            value = global_value if mode == "global" else tensor_value
            top = {task: scores[task] >= value[task][k] for task in TASKS}
            if point in tallies:
                tallies[point].add(name, top["bio"], top["qa"])
            if point == keep:
                for task in TASKS:
                    kept[task][name] = top[task].flatten().nonzero().squeeze(1)
        del scores, top
        trim()  # this tensor's temporaries, freed between the kept indices (`factrecall.memory`)
    selection = None
    if keep:
        selection = Selection(*keep, IndexMask(trace.shapes, kept["bio"]), IndexMask(trace.shapes, kept["qa"]))
    return {point: tally.summary() for point, tally in tallies.items()}, selection


def select(trace: Trace, k: float = 1.0, mode: str = "global") -> Selection:
    """Top_BIO and Top_QA at (k, mode)."""
    return scan(trace, None, [], keep=(k, mode))[1]


def run_selection(run: Path, trace: Trace, k: float) -> Selection:
    """Top_BIO and Top_QA at (k, global) of a run: read from `shared/mask.safetensors` when `factrecall shared`
    saved them at this k after the trace was written, else selected from the trace (three passes over it:
    minutes at 3 B)."""
    path = RunLayout(Path(run)).shared_mask
    if path.is_file() and path.stat().st_mtime_ns >= trace.path.stat().st_mtime_ns:
        with safe_open(str(path), framework="pt") as st:
            saved = st.metadata() or {}
        if saved.get("mode") == "global" and saved.get("k") is not None and float(saved["k"]) == k:
            masks = {kind: load_mask(path, kind, trace.shapes) for kind in ("top_bio", "top_qa")}
            return Selection(k, "global", masks["top_bio"], masks["top_qa"])
    return select(trace, k, "global")


def run_points(k: float, sweep: tuple[float, ...]) -> list[Point]:
    """The points `analyze_run` reports: k in both modes, then every sweep value in both modes."""
    return list(dict.fromkeys([(k, "global"), (k, "per_tensor")] + [(s, mode) for s in sweep for mode in MODES]))


def analyze_run(run: Path, k: float = 1.0, sweep: tuple[float, ...] = SWEEP) -> dict:
    """Write `run/shared/shared.json` and `run/shared/mask.safetensors` (global, at k); return the JSON."""
    run = Path(run)
    trace, config = load_trace(run), model_config(run)
    summaries, selection = scan(trace, config, run_points(k, sweep), keep=(k, "global"))
    save_masks(RunLayout(run).shared_mask,
               {"shared": selection.shared, "top_bio": selection.top_bio, "top_qa": selection.top_qa},
               {"k": str(k), "mode": "global"})
    result = summaries[(k, "global")]  # the global threshold at the top level, as in the paper
    result["per_tensor"] = summaries[(k, "per_tensor")]
    result["sweep"] = [{"k": s, **{mode: {key: summaries[(s, mode)][key] for key in _HEADLINE} for mode in MODES}}
                       for s in sweep]
    write_json(RunLayout(run).shared, result)
    return result
