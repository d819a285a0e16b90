"""Top_BIO(k), Top_QA(k) and Shared(k) from a run's trace (the paper's Definition 3.1; docs/method.md §5).

    Top_T(k)   = entries whose trace score |Δ_T| is in the top k percent of all tracked entries
    Shared(k)  = Top_BIO(k) ∩ Top_QA(k)

`global` uses one threshold per task over all tracked entries; `per_tensor` one threshold per
task and tensor (a global threshold follows tensor scale: a few tensors can hold most of it).
Chance is the overlap of two independent top sets, (k/100)²·P; enrichment = |Shared| / chance.
`scan` summarises many (k, mode) points in three passes over the trace; the analyses that need a
selection (`shared`, ablation, circuits, inspection) take it from here.

Sets of an exact size S (`matched`, for comparing strategies at the same |Shared|): with r_T(i) the
rank of |Δ_T,i| among all tracked entries (1 + the number of larger scores),

    Matched(S) = the S entries with the smallest max(r_BIO, r_QA)   (then min(r_BIO, r_QA), then position)

{i : max(r_BIO, r_QA) ≤ n} = Top_BIO ∩ Top_QA at n entries each, so Shared(k) is exactly Matched(|Shared(k)|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.masks import IndexMask, load_mask
from factrecall.analysis.run import Trace, load_trace, model_config, parameter_shapes
from factrecall.analysis.threshold import kth_largest_many, top_count
from factrecall.analysis.units import UnitTable, breakdown, feature_sums, gini, top_unit_share, unit_counts
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.memory import trim
from factrecall.progress import progress
from factrecall.terms import TASKS

MODES = ("global", "per_tensor")

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
    for name in progress(trace.names, desc="shared", leave=False):
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


@dataclass(frozen=True)
class Matched:
    """Matched(S) and the top sets it lies in: `top_bio`/`top_qa` = the entries of rank ≤ `depth` in each task,
    where `depth` = max(r_BIO, r_QA) of its last entry (so `shared` ⊆ top_bio ∩ top_qa)."""
    size: int
    depth: int
    shared: IndexMask
    top_bio: IndexMask
    top_qa: IndexMask


def matched(trace: Trace, sizes: list[int]) -> dict[int, Matched]:
    """Matched(S) for every S in `sizes` (1 ≤ S ≤ tracked entries).

    Cost: six streaming passes over the trace (thresholds at a doubling ladder of depths n = S_max·2^j,
    two per task; one pass counting |Top_BIO(n) ∩ Top_QA(n)| at every n; one gathering the top sets at the
    shallowest n whose intersection holds S_max entries). Extra memory: 12 B per entry of those two top sets
    (an index and a score), about 2·n ≤ 4× the depth the largest set needs; a full argsort only at n = P.
    """
    entries = trace.entries
    if not sizes or not all(1 <= s <= entries for s in sizes):
        raise ValueError(f"matched sizes {sizes} outside 1..{entries}")
    need = max(sizes)
    ladder = sorted({min(entries, need << j) for j in range(max(1, math.ceil(math.log2(entries / need)) + 1))})
    value = {task: kth_largest_many(lambda task=task: trace.scores(task), ladder) for task in TASKS}
    inside = [0] * len(ladder)
    for name in trace.names:
        scores = {task: trace.delta(task, name).abs_() for task in TASKS}
        for j in range(len(ladder)):
            inside[j] += int(((scores["bio"] >= value["bio"][j]) & (scores["qa"] >= value["qa"][j])).sum())
    j = next(j for j, n in enumerate(ladder) if inside[j] >= need)  # the last rung (n = P) holds every entry
    tops: dict[str, list] = {task: [] for task in TASKS}  # per task: (tensor number, flat index, score) per tensor
    for t, name in enumerate(trace.names):
        for task in TASKS:
            score = trace.delta(task, name).abs_().flatten()
            where = (score >= value[task][j]).nonzero().squeeze(1)
            tops[task].append((torch.full_like(where, t), where, score[where]))
    cat = {task: [torch.cat(parts) for parts in zip(*tops[task])] for task in TASKS}
    rank = {}
    for task in TASKS:
        tensor, index, score = cat[task]
        ascending = score.sort().values
        rank[task] = (tensor, index, 1 + score.numel() - torch.searchsorted(ascending, score, right=True))
    key = {task: rank[task][0] * (1 + max(math.prod(s) for s in trace.shapes.values())) + rank[task][1]
           for task in TASKS}  # one int64 per entry: (tensor number, flat index)
    in_qa = torch.isin(key["bio"], key["qa"])
    both = key["bio"][in_qa]
    order_qa = torch.argsort(key["qa"])
    r_qa = rank["qa"][2][order_qa][torch.searchsorted(key["qa"][order_qa], both)]
    r_bio = rank["bio"][2][in_qa]
    worst, best = torch.maximum(r_bio, r_qa), torch.minimum(r_bio, r_qa)
    order = torch.argsort(best, stable=True)  # key["bio"] is in position order: ties keep it
    order = order[torch.argsort(worst[order], stable=True)]

    def mask(tensor: torch.Tensor, index: torch.Tensor) -> IndexMask:
        return IndexMask(trace.shapes, {name: index[tensor == t].sort().values for t, name in enumerate(trace.names)})

    out = {}
    for size in sizes:
        chosen = order[:size]
        depth = int(worst[chosen].max())
        top = {task: mask(rank[task][0][rank[task][2] <= depth], rank[task][1][rank[task][2] <= depth])
               for task in TASKS}
        out[size] = Matched(size, depth, mask(rank["bio"][0][in_qa][chosen], rank["bio"][1][in_qa][chosen]),
                            top["bio"], top["qa"])
    return out


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


def top_shared_head(run: Path) -> tuple[int, int]:
    """(layer, head) holding the most shared parameters: from `shared/mask.safetensors`, else the trace at the
    default k."""
    run = Path(run)
    config = model_config(run)
    files = RunLayout(run)
    if files.shared_mask.is_file():
        masks = load_mask(files.shared_mask, "shared", parameter_shapes(run))
    elif files.trace.is_file():
        masks = select(load_trace(run), DEFAULT.shared.k, "global").shared
    else:
        raise UserError(f"{run} has neither shared/mask.safetensors nor trace.safetensors to find the top "
                        f"shared_size head; pass --layer and --head")
    heads = unit_counts(config, masks)["heads"]
    index = int(torch.argmax(heads.flatten()))  # the first of equal maxima, layer-major
    return index // heads.shape[1], index % heads.shape[1]
