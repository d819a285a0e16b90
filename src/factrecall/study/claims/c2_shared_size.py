"""C2: Mix has more shared parameters than Stage (the paper's Fig. 2a)."""

from __future__ import annotations

from factrecall.study.claims.verdict import Claim, Measure, Verdict, at, judge, undetermined


def rule(evidence: dict) -> Verdict:
    """|Shared(k)| of Mix vs Stage at the default k and at every k of the sweep, each a measure.

    The sets are counts of one trained run, without sampling noise at a seed: any difference resolves
    and a tie is unresolved (the seeds' spread judges them in a sweep). Holds when every resolved k has
    Mix larger, does not hold when every one has Stage larger; undetermined when they disagree, when
    all tie, or when the two sweeps were not taken at the same k (paired by k, never by position)."""
    shared = evidence["shared"]
    mix, stage = shared["mix"], shared["stage"]
    by_k = {s: {p["k"]: p["global"]["shared"] for p in shared[s]["sweep"]} for s in ("mix", "stage")}
    by_k["mix"].setdefault(mix["k"], mix["shared"])
    by_k["stage"].setdefault(stage["k"], stage["shared"])
    head = (f"|Shared| at k={mix['k']:g}%: Mix {mix['shared']} vs Stage {stage['shared']} (chance "
            f"{mix['chance']:.0f}; enrichment {mix['enrichment']:.1f} vs {stage['enrichment']:.1f}); per-tensor "
            f"threshold: Mix {mix['per_tensor']['shared']} vs Stage {stage['per_tensor']['shared']}")
    if by_k["mix"].keys() != by_k["stage"].keys() or mix["k"] != stage["k"]:
        return undetermined("the two runs were not measured at the same k", head
                            + f"; Mix at k = {sorted(by_k['mix'])}, Stage at k = {sorted(by_k['stage'])}")
    measures = [Measure(f"k={k:g}%", by_k["mix"][k], by_k["stage"][k]) for k in sorted(by_k["mix"])]
    sweep = ", ".join(f"k={k:g}%: {by_k['mix'][k]} vs {by_k['stage'][k]}" for k in sorted(by_k["mix"]))
    return judge(measures, f"{head}; Mix vs Stage by k: {sweep}")


CLAIM = Claim("C2", "Mix has more shared parameters than Stage (at the default k and across the sweep)",
              ("shared",), rule, (("|Shared| at the default k", at("shared", "{s}", "shared")),))
