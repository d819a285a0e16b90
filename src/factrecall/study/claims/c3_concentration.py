"""C3: Mix's shared parameters are more concentrated on few units than Stage's (Gini, top-10 % share).

Judged on shared.json's `matched` block: sets of the same sizes in both runs (§5), each against two
placement nulls (`units.NULLS`). A cell is one (unit kind, measure, size, null); it compares Mix's
excess over the null (observed − null mean) with Stage's, resolved beyond RESOLUTION × √(sd_mix² +
sd_stage²) of the null. A cell is not measurable (never a tie) when either run has fewer entries of
that kind than the kind has units, or either run's null is saturated (its mean ≥ SATURATED, e.g. a
top-10 % share of 1.000 by construction). Each unit kind gets its own verdict from its cells
(`verdict.judge`); C3 holds when both kinds hold, does not hold when both do not hold, and is
undetermined otherwise.
"""

from __future__ import annotations

import math

from factrecall.analysis.units import METRICS, NULLS, UNIT_KINDS
from factrecall.study.claims.verdict import (
    AGAINST,
    FAILS,
    FOR,
    HOLDS,
    NOT_MEASURABLE,
    UNDETERMINED,
    Claim,
    Getter,
    Measure,
    Verdict,
    at,
    judge,
    undetermined,
)

RESOLUTION = 2.0  # a difference of excesses counts beyond this many sd of the two nulls (√(sd_mix² + sd_stage²))
SATURATED = 0.99  # a null whose mean reaches this leaves the measure no room above it
LADDER_SIZE = 0.01  # the sweep ladder's matched size: the smallest one with neurons measurable in most runs
METRIC_NAMES = {"gini": "Gini", "top_10%": "top-10% share"}
NULL_NAMES = {"kind_level": "kind-level null", "per_tensor": "per-tensor null"}
MARKS = {FOR: "Mix", AGAINST: "Stage", NOT_MEASURABLE: "n/m"}  # a cell's mark in the evidence; "≈" within resolution

Cells = dict[float, dict[tuple[str, str], Measure]]  # {fraction: {(metric, null): measure}} of one unit kind


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _cell(kind: str, metric: str, null: str, fraction: float, mix: dict, stage: dict) -> Measure:
    """Mix's excess vs Stage's in one cell, from the two runs' matched points at `fraction`."""
    a, b = mix[kind][metric][null], stage[kind][metric][null]
    few = [f"{who} has {p[kind]['entries']:,} {kind} entries for {p[kind]['units']:,} units"
           for who, p in (("Mix", mix), ("Stage", stage)) if p[kind]["entries"] < p[kind]["units"]]
    saturated = [f"{who}'s null is saturated (mean {c['null_mean']:.3f})"
                 for who, c in (("Mix", a), ("Stage", b)) if c["null_mean"] >= SATURATED]
    return Measure(f"{kind} {METRIC_NAMES[metric]} at {_pct(fraction)}, {NULL_NAMES[null]}", a["excess"], b["excess"],
                   RESOLUTION * math.hypot(a["null_sd"], b["null_sd"]), unmeasurable="; ".join(few + saturated) or None)


def _points(shared: dict) -> tuple[dict, str | None]:
    """{fraction: {strategy: matched point}}, or why the two runs cannot be paired."""
    points = {s: {p["fraction"]: p for p in shared[s].get("matched", [])} for s in ("mix", "stage")}
    if any("units" not in p["heads"] for s in points for p in points[s].values()):
        return {}, "a run's matched sets were measured before the per-tensor null; rerun `shared`"
    if not points["mix"] or points["mix"].keys() != points["stage"].keys():
        return {}, (f"the two runs were not measured at the same matched sizes (Mix {sorted(points['mix'])}, Stage "
                    f"{sorted(points['stage'])}); rerun `shared`")
    mismatch = [_pct(f) for f in points["mix"] if points["mix"][f]["size"] != points["stage"][f]["size"]]
    if mismatch:
        return {}, f"the matched sets differ in size at {', '.join(mismatch)} (runs of different models?)"
    return {f: {s: points[s][f] for s in ("mix", "stage")} for f in sorted(points["mix"])}, None


def _why(kind: str, verdict: Verdict, cells: Cells) -> str:
    """One clause: the kind's verdict, how many measurable cells favour each run, where nothing is measurable."""
    outcomes = [m.outcome for by_cell in cells.values() for m in by_cell.values()]
    blind = [f for f, by_cell in cells.items() if all(m.outcome == NOT_MEASURABLE for m in by_cell.values())]
    seen = [f for f in cells if f not in blind]
    if not seen:
        return f"{kind} {verdict.verdict}: not measurable at any size"
    where = ("" if not blind else f"not measurable below {_pct(min(seen))}, " if max(blind) < min(seen)
             else f"not measurable at {', '.join(map(_pct, blind))}, ")
    measurable = len(outcomes) - outcomes.count(NOT_MEASURABLE)
    return (f"{kind} {verdict.verdict}: {where}{outcomes.count(FOR)} of {measurable} measurable cells favour Mix, "
            f"{outcomes.count(AGAINST) or 'none'} Stage")


def _evidence(kind: str, points: dict, cells: Cells) -> str:
    """Per size: each run's entries of the kind, and per measure both excesses over each null, marked."""
    sizes = []
    for f, by_cell in cells.items():
        mix, stage = points[f]["mix"][kind], points[f]["stage"][kind]
        entries = f"{_pct(f)} (entries Mix {mix['entries']:,}, Stage {stage['entries']:,})"
        if all(m.outcome == NOT_MEASURABLE for m in by_cell.values()):
            sizes.append(f"{entries}: not measurable")
            continue
        sizes.append(f"{entries}: " + ", ".join(f"{METRIC_NAMES[metric]} " + " | ".join(
            f"{by_cell[metric, null].mix:+.3f} vs {by_cell[metric, null].stage:+.3f} "
            f"{MARKS.get(by_cell[metric, null].outcome, '≈')}" for null in NULLS) for metric in METRICS))
    return f"{kind} ({next(iter(points.values()))['mix'][kind]['units']:,} units): " + "; ".join(sizes)


def rule(evidence: dict) -> Verdict:
    """A verdict per unit kind from its resolved cells; C3 holds when both kinds hold, does not hold when both
    do not hold, and is undetermined otherwise, naming each kind's verdict."""
    points, why = _points(evidence["shared"])
    if why:
        return undetermined(why)
    cells = {kind: {f: {(metric, null): _cell(kind, metric, null, f, p["mix"], p["stage"])
                        for metric in METRICS for null in NULLS} for f, p in points.items()} for kind in UNIT_KINDS}
    measures = {kind: [m for by_cell in cells[kind].values() for m in by_cell.values()] for kind in UNIT_KINDS}
    kinds = {kind: judge(measures[kind]) for kind in UNIT_KINDS}
    verdicts = {v.verdict for v in kinds.values()}
    overall = next(iter(verdicts)) if len(verdicts) == 1 else UNDETERMINED
    lead = {HOLDS: "both unit kinds favour Mix", FAILS: "both unit kinds favour Stage"}.get(
        overall, "neither unit kind decides" if verdicts == {UNDETERMINED} else "the unit kinds differ")
    text = ("per unit kind: " + ", ".join(f"{kind} {v.verdict}" for kind, v in kinds.items())
            + f". Excess over the null (observed − null mean), Mix vs Stage, kind-level | per-tensor null, each "
            f"marked with the run it favours beyond {RESOLUTION:g}·√(sd_mix² + sd_stage²) of the null (≈ within, "
            f"n/m not measurable). " + ". ".join(_evidence(kind, points, cells[kind]) for kind in UNIT_KINDS))
    why = f"{lead} — " + "; ".join(_why(kind, kinds[kind], cells[kind]) for kind in UNIT_KINDS)
    return Verdict(overall, why, text, tuple(m for kind in UNIT_KINDS for m in measures[kind]))


def _ladder(kind: str) -> tuple[str, Getter]:
    return (f"{kind} Gini excess at {_pct(LADDER_SIZE)}, kind-level null",
            at("shared", "{s}", "matched", f"{LADDER_SIZE:g}", kind, "gini", "kind_level", "excess"))


CLAIM = Claim("C3", "Mix's shared parameters are more concentrated on few heads and neurons than Stage's "
              "(Gini and top-10% share against placement nulls, at matched sizes)", ("shared",), rule,
              tuple(_ladder(kind) for kind in UNIT_KINDS))
