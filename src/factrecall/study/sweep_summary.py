"""`summary.json` of a sweep, from whatever points are finished (so `factrecall report` can rebuild it).

    sweep: {axes: {axis: [values]}, points, finished, missing: [labels]}
    points: [{index, id, label, settings, dir, finished, summary}]   each point's own summary.json
    groups: [{settings, label, seeds, finished, mean, sd, claims}]   the points that differ only in seed:
        mean and sd (sample standard deviation; 0 for one seed) of every number of their summaries, and
        each claim's verdict per seed and overall (`combine_verdicts`)
    ladder: {claim: [measure label, …]}   the numbers the report plots per claim against the axes
    changes: [sentence]   which axis values change a claim's overall verdict

The overall verdict of a claim over seeds: it holds when it holds on every finished seed, does not
hold when it fails on every finished seed, and is undetermined otherwise (seeds disagree, or a seed
is undetermined), with the per-seed verdicts as its evidence.
"""

from __future__ import annotations

import math
from pathlib import Path

from factrecall.artifacts import digest, read_json
from factrecall.layout import StudyLayout
from factrecall.study.claims import CLAIMS, STATEMENTS
from factrecall.study.sweep import axis_label, point_label
from factrecall.terms import STRATEGIES


def combine_verdicts(verdicts: dict) -> tuple[str, str]:
    """The overall verdict of one claim from {seed: verdict} and its evidence (see the module docstring)."""
    if not verdicts:
        return "undetermined", "no finished seed"
    by = {v: [str(s) for s, w in verdicts.items() if w == v] for v in ("holds", "does not hold", "undetermined")}
    n = len(verdicts)
    for verdict in ("holds", "does not hold"):
        if len(by[verdict]) == n:
            return verdict, f"{verdict} on every seed ({', '.join(by[verdict])})"
    parts = [f"{v} on {len(s)} of {n} (seed{'s' * (len(s) > 1)} {', '.join(s)})" for v, s in by.items() if s]
    return "undetermined", "seeds disagree: " + "; ".join(parts)


def mean_sd(trees: list) -> tuple[object, object]:
    """Leaf by leaf over `trees` of the same shape: (mean, sample sd) of numbers (None where any is None or
    not a number), a shared string kept, dicts by their common keys, lists of one length element by element."""
    first = trees[0]
    if all(isinstance(t, dict) for t in trees):
        keys = [k for k in first if all(k in t for t in trees)]
        pairs = {k: mean_sd([t[k] for t in trees]) for k in keys}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if all(isinstance(t, list) for t in trees) and len({len(t) for t in trees}) == 1:
        pairs = [mean_sd(list(column)) for column in zip(*trees)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in trees):
        values = [float(t) for t in trees]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return mean, sd
    same = all(t == first for t in trees)
    return (first, None) if same and not isinstance(first, (int, float)) else (None, None)


def point_headline(summary: dict) -> str:
    """A finished point in one line: OOD-QA of both strategies and its claims' verdicts."""
    acc = summary["accuracy"]
    marks = {"holds": "✓", "does not hold": "✗", "undetermined": "?"}
    return (f"OOD-QA Mix {acc['mix']['qa_ood']:.3f} / Stage {acc['stage']['qa_ood']:.3f}; "
            + " ".join(f"{c['id']}{marks[c['verdict']]}" for c in summary["claims"]))


def finished(point: StudyLayout, config_digest: str) -> bool:
    """Whether a point's directory holds a summary of the config whose digest is `config_digest`."""
    return point.summary.is_file() and digest(read_json(point.record, "point record")["config"]) == config_digest


def summarize_sweep(study: Path) -> dict:
    """The sweep's summary from its study.json's points and each finished point's summary.json."""
    study = Path(study)
    record = read_json(StudyLayout(study).record, "study record")
    points = []
    for p in record["points"]:
        files = StudyLayout(study).point(p["id"])
        summary = read_json(files.summary, "point summary") if finished(files, p["config_digest"]) else None
        points.append({**p, "dir": str(files.root.relative_to(study)), "finished": summary is not None,
                       "summary": summary})
    axes: dict[str, list] = {}
    for p in points:
        for key, value in p["settings"].items():
            if value not in axes.setdefault(key, []):
                axes[key].append(value)
    groups = _groups(points)
    return {"sweep": {"axes": axes, "points": len(points), "finished": sum(p["finished"] for p in points),
                      "missing": [f"{p['index']}: {p['label']}" for p in points if not p["finished"]]},
            "points": points, "groups": groups,
            "ladder": {c.id: [label for label, _ in c.ladder] for c in CLAIMS},
            "changes": verdict_changes(groups, [a for a in axes if a != "seed"])}


def _groups(points: list[dict]) -> list[dict]:
    """Points that differ only in seed, in the order of their first point."""
    keyed: dict[str, list[dict]] = {}
    for p in points:
        settings = {k: v for k, v in p["settings"].items() if k != "seed"}
        keyed.setdefault(repr(sorted(settings.items(), key=lambda kv: kv[0])), []).append(p)
    groups = []
    for members in keyed.values():
        settings = {k: v for k, v in members[0]["settings"].items() if k != "seed"}
        done = [p for p in members if p["finished"]]
        numbers = [{k: v for k, v in p["summary"].items() if k not in ("claims", "bases")} for p in done]
        mean, sd = mean_sd(numbers) if numbers else (None, None)
        groups.append({"settings": settings, "label": point_label(settings),
                       "seeds": [p["settings"].get("seed") for p in members],
                       "finished": [p["index"] for p in done], "mean": mean, "sd": sd,
                       "ladder": {c.id: {label: {s: [get(p["summary"], s) for p in done]
                                                 for s in STRATEGIES} for label, get in c.ladder}
                                  for c in CLAIMS},
                       "claims": [_claim_over_seeds(cid, done) for cid in STATEMENTS]})
    return groups


def _claim_over_seeds(claim_id: str, done: list[dict]) -> dict:
    """One claim over the seeds of a group: its verdicts combined, and the rule's before the fit gate (`measured`)."""
    per_seed, measured = {}, {}
    for p in done:
        claim = next((c for c in p["summary"]["claims"] if c["id"] == claim_id), None)
        if claim is not None:
            seed = p["settings"].get("seed", p["index"])
            per_seed[seed] = claim["verdict"]
            measured[seed] = claim.get("measured", {}).get("verdict", claim["verdict"])
    verdict, evidence = combine_verdicts(per_seed)
    return {"id": claim_id, "statement": STATEMENTS[claim_id], "verdict": verdict,
            "holds": {"holds": True, "does not hold": False}.get(verdict),
            "per_seed": {str(s): v for s, v in per_seed.items()}, "evidence": evidence,
            "measured": {"verdict": combine_verdicts(measured)[0], "per_seed": {str(s): v for s, v in measured.items()}}}


def verdict_changes(groups: list[dict], axes: list[str]) -> list[str]:
    """Sentences naming, per claim and axis, the values at which the overall verdict differs while every
    other axis is held fixed; a claim whose verdict is the same at every point says so."""
    sentences = []
    for claim_id in STATEMENTS:
        verdicts = [(g["settings"], next(c["verdict"] for c in g["claims"] if c["id"] == claim_id))
                    for g in groups if g["finished"]]
        changed = False
        for axis in axes:
            slices: dict[str, list] = {}
            for settings, verdict in verdicts:
                if axis not in settings:  # a listed point that does not set this axis
                    continue
                rest = {k: v for k, v in settings.items() if k != axis}
                slices.setdefault(repr(sorted(rest.items())), []).append((settings, verdict, rest))
            for rows in slices.values():
                if len({v for _, v, _ in rows}) > 1:
                    changed = True
                    where = f" (with {point_label(rows[0][2])})" if rows[0][2] else ""
                    sentences.append(f"{claim_id} changes with {axis_label(axis)}{where}: " + ", ".join(
                        f"{v} at {point_label({axis: s[axis]})}" for s, v, _ in rows))
        if verdicts and not changed:
            sentences.append(f"{claim_id} {verdicts[0][1]} at every finished point"
                             if len({v for _, v in verdicts}) == 1 else f"{claim_id}: see the table")
    return sentences
