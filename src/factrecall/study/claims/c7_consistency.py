"""C7: BIO and QA agree more under Mix, in representations and in gradients (docs/method.md §10).

Five measures, Mix vs Stage, each a run's mean over layers (1 … L for hidden states; every traced
layer for the probe) with its bootstrap standard error over people (`analysis/consistency.py`),
resolved beyond Z × √(se_mix² + se_stage²):

    centred gap at the subject and at the answer position   matched − mismatched BIO/QA cosine of the
                                                            hidden states minus their mean over people
    retrieval top-1 at both positions                       the own question is the nearest of all
                                                            people's to the BIO state (centred cosine)
    gradient-probe gap                                      matched − mismatched cosine of a person's
                                                            BIO-value and QA-answer gradients

Reported, not judged: the uncentred gap (a direction all states share, as Mix's do, lowers it
without saying anything about the fact), the MRR, the trace-direction cosine and the per-step
gradient cosine logged in training (Mix only).
"""

from __future__ import annotations

from factrecall.analysis.consistency import consistency_headline
from factrecall.study.claims.verdict import Claim, Measure, Verdict, at, judge, resolution, undetermined

POSITIONS = ("subject", "answer")


def _measure(name: str, mix: dict | None, stage: dict | None) -> Measure:
    """Mix's and Stage's {value, se} as a Measure; not measurable where a run lacks the number or its se."""
    reasons = [f"{label}: {'not measured' if not x else 'no standard error'}"
               for label, x in (("Mix", mix), ("Stage", stage)) if not x or x.get("se") is None]
    if reasons:
        return Measure(name, None, None, unmeasurable="; ".join(reasons))
    return Measure(name, mix["value"], stage["value"], resolution(mix["se"], stage["se"]))


def _number(x: dict | None, digits: str = "+.3f") -> str:
    return "n/a" if not x else format(x["value"], digits) + ("" if x.get("se") is None else f" ± {x['se']:.3f}")


def _describe(h: dict) -> str:
    """The evidence: each judged and reported number of both runs (value ± bootstrap se)."""
    def by_position(key: str, digits: str = "+.3f") -> str:
        return ", ".join(f"{p} Mix {_number((h['mix']['representation'].get(p) or {}).get(key), digits)} vs Stage "
                         f"{_number((h['stage']['representation'].get(p) or {}).get(key), digits)}" for p in POSITIONS)

    def plain(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    return (f"centred gap (matched − mismatched cosine of BIO and QA hidden states less their mean over people, "
            f"mean over layers 1..L, ± bootstrap se over people): {by_position('centred_gap')}; retrieval top-1 "
            f"(own question nearest to the BIO state): {by_position('top1', '.3f')}; gradient probe gap (BIO-value "
            f"vs QA-answer gradients, mean over layers): Mix {_number(h['mix']['gradient_probe_gap'])} vs Stage "
            f"{_number(h['stage']['gradient_probe_gap'])}; reported only: uncentred gap {by_position('gap')}; MRR "
            f"{by_position('mrr', '.3f')}; trace-direction cos(Δ_BIO, Δ_QA) Mix {plain(h['mix']['trace_direction'])}"
            f" vs Stage {plain(h['stage']['trace_direction'])}; Mix logged per-step gradient cosine "
            f"{plain(h['mix']['logged_gradient'])}")


def rule(evidence: dict) -> Verdict:
    """Centred gap and retrieval top-1 at both positions and the gradient-probe gap, Mix vs Stage, each
    resolved beyond Z × √(se_mix² + se_stage²) (`verdict.judge`: holds when every resolved measure is
    higher under Mix, does not hold when every one is lower, else undetermined). Runs analysed on different
    numbers of people are undetermined (top-1 among 100 people is not top-1 among 200)."""
    h = {s: consistency_headline(evidence["consistency"][s]) for s in ("mix", "stage")}
    people = {s: evidence["consistency"][s].get("people") for s in ("mix", "stage")}
    if people["mix"] != people["stage"]:
        return undetermined(f"the runs were analysed on different numbers of people (Mix {people['mix']}, Stage "
                            f"{people['stage']})", _describe(h))

    def at_position(key: str, position: str) -> tuple[dict | None, dict | None]:
        return tuple((h[s]["representation"].get(position) or {}).get(key) for s in ("mix", "stage"))

    measures = [_measure(f"{label} at the {p}", *at_position(key, p))
                for key, label in (("centred_gap", "centred gap"), ("top1", "retrieval top-1")) for p in POSITIONS]
    measures.append(_measure("gradient probe gap", h["mix"]["gradient_probe_gap"], h["stage"]["gradient_probe_gap"]))
    return judge(measures, _describe(h))


CLAIM = Claim("C7", "BIO–QA gradient and representation consistency are higher under Mix", ("consistency",), rule,
              (("centred representation gap at the subject",
                at("consistency", "{s}", "representation", "subject", "centred_gap", "value")),
               ("gradient probe gap", at("consistency", "{s}", "gradient_probe_gap", "value"))))
