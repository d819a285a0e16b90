"""C6: `shared_size` finds sufficient and critical heads with fewer heads than the other metrics (Fig. 4a–b).

Judged on Mix's heads.json alone (`compares=False`). For each n of §8 (the minimal sufficient n and the
critical n) and each other metric, one measure: shared_size's n against that metric's (`random`: the
median over its seeded permutations), fewer heads for the claim. "Never reached" ranks after every
head (units + 1). A comparison resolves beyond one step of the head grid at the smaller n (every n up
to 64 heads, so one head on the tiny models): a metric loses only by more than one grid step. It is not
measurable when both rankings (every permutation of `random`) hold the same top-n heads at the n that
decides: the same heads reset, the same curve. A floor: Mix's unablated OOD-QA is 0.
"""

from __future__ import annotations

from factrecall.study.claims.verdict import FOR, HOLDS, Claim, Measure, Verdict, at, judge, undetermined

OURS, RANDOM = "shared_size", "random"
KINDS = {"critical": ("critical", "halve", "Mix's OOD-QA"),  # key → (label, what the heads do, to what)
         "minimal_sufficient": ("sufficient", "keep", "90 % of it")}


def _rankings(entry: dict) -> list[list[tuple[int, int]]]:
    """The metric's rankings as (layer, head) lists: one, or one per permutation."""
    return [[tuple(u) for u in r["ranking"]] for r in entry.get("permutations", [entry])]


def _grid_step(grid: list[int], n: float) -> int:
    """The distance from the grid point at or below n to the next (past the end, the last step)."""
    below = max((g for g in grid if g <= n), default=grid[0])
    above = min((g for g in grid if g > n), default=None)
    last = grid[-1] - grid[-2] if len(grid) > 1 else 1
    return (above if above is not None else grid[-1] + last) - below


def _measure(heads: dict, metric: str, key: str, grid: list[int]) -> Measure:
    """shared_size's n of `key` against `metric`'s, never = units + 1, resolved beyond one grid step."""
    units, metrics = heads["units"], heads["metrics"]
    ours, theirs = (units + 1 if v is None else v for v in (metrics[OURS][key], metrics[metric][key]))
    deciding = int(min(ours, theirs, units))
    top = set(_rankings(metrics[OURS])[0][:deciding])
    same = all(set(r[:deciding]) == top for r in _rankings(metrics[metric]))
    return Measure(f"{KINDS[key][0]} n: {OURS} vs {metric}", ours, theirs, _grid_step(grid, min(ours, theirs)),
                   lower_is_for=True, labels=(OURS, metric),
                   unmeasurable=f"the same top {deciding} head{'s' * (deciding != 1)}" if same else None)


def _n(value) -> str:
    return "never" if value is None else f"{value:g}"


def _evidence(heads: dict) -> str:
    metrics = heads["metrics"]
    random = metrics.get(RANDOM, {})
    spread = {key: sorted((p[key] for p in random.get("permutations", [])), key=lambda v: (v is None, v or 0))
              for key in KINDS}
    return (f"Mix, {heads['units']} heads, unablated OOD-QA {heads['unablated']['qa_ood']:.3f}; " + "; ".join(
        f"{label} n: " + ", ".join(f"{m} {_n(v[key])}" + (f" (median of {len(spread[key])}: "
                                                          f"{', '.join(map(_n, spread[key]))})" if m == RANDOM else "")
                                  for m, v in metrics.items())
        for key, (label, *_) in KINDS.items()) + " (a metric loses by more than one grid step; never = not reached)")


def _headline(heads: dict) -> str:
    """E.g. "1 shared_size head halves Mix's OOD-QA; random needs 4 (median of 10); …"."""
    metrics, parts = heads["metrics"], []
    for key, (_, verb, what) in KINDS.items():
        ours, random = metrics[OURS][key], metrics[RANDOM][key]
        count = "no number of shared_size heads" if ours is None else f"{ours:g} shared_size head{'s' * (ours != 1)}"
        verb += "s" if ours in (None, 1) else ""
        parts.append(f"{count} {verb} {what}; " + ("random never does" if random is None else
                                                   f"random needs {random:g}")
                     + f" (median of {len(metrics[RANDOM]['permutations'])})")
    return "; ".join(parts)


def rule(evidence: dict) -> Verdict:
    """One measure per (other metric, n); holds when every resolved one favours shared_size and at least one
    against `random` is resolved (`verdict.judge`); undetermined at Mix's OOD-QA floor or without `random`."""
    heads = evidence["heads"]["mix"]
    if not heads["unablated"].get("qa_ood"):
        return undetermined("a floor: Mix's unablated OOD-QA is 0, so no head can matter",
                            f"Mix, {heads['units']} heads: unablated OOD-QA {heads['unablated'].get('qa_ood')} on the "
                            f"{heads.get('eval_people', '?')} evaluated people per split")
    if OURS not in heads["metrics"] or "permutations" not in heads["metrics"].get(RANDOM, {}):
        return undetermined(f"Mix's heads.json has no {OURS} ranking or no permuted {RANDOM} ones; rerun `heads`",
                            f"Mix's heads.json holds the metrics {', '.join(heads['metrics'])}")
    grid = [p["n"] for p in heads["metrics"][OURS].get("sufficiency", [])]
    if not grid:
        return undetermined(f"Mix's heads.json has no {OURS} curve; rerun `heads`")
    measures = [_measure(heads, metric, key, grid) for key in KINDS for metric in heads["metrics"] if metric != OURS]
    verdict = judge(measures, _evidence(heads))
    why = f"{_headline(heads)}: {verdict.why}"
    if verdict.verdict == HOLDS and not any(m.outcome == FOR for m in measures if m.labels[1] == RANDOM):
        return undetermined(f"{_headline(heads)}: no comparison against random is resolved", verdict.evidence,
                            verdict.measures)
    return Verdict(verdict.verdict, why, verdict.evidence, verdict.measures)


CLAIM = Claim("C6", "`shared_size` finds sufficient and critical heads with fewer heads than other metrics",
              ("heads",), rule, (("critical heads, shared_size", at("heads", "{s}", OURS, "critical")),
                                 ("critical heads, random (median)", at("heads", "{s}", RANDOM, "critical"))),
              compares=False)
