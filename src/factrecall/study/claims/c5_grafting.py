"""C5: grafting needs fewer parameters for Mix than for Stage (the paper's Fig. 3b).

Each run's graft.json (docs/method.md §7) brackets the smallest graft that recovers `recover`
(0.9) × θ_ft's ID-QA on the report people: the last miss and the first hit of a bisection over the
base-patch sparsity, at most `graft_bracket` apart, with |γ|₀ counted over the traced block
matrices. As fractions of those entries the bracket is [miss size, hit size] / traced.
"""

from __future__ import annotations

from factrecall.study.claims.verdict import TOLERANCE, UNDETERMINED, Claim, Measure, Verdict, judge

NAME = "|γ|₀ / traced entries reaching the target"


def bracket(graft: dict) -> tuple[float, float] | None:
    """[last miss, first hit] of one run's graft.json as fractions of its traced entries, or None without one."""
    b = graft.get("bracket")
    return (b["miss"]["size"] / graft["traced"], b["hit"]["size"] / graft["traced"]) if b else None


def unmeasurable(graft: dict, label: str) -> str | None:
    """Why one run's bracket cannot be compared, or None."""
    if not graft.get("bracket"):
        return f"{label}'s graft.json has no bisection; rerun `graft` with a bracket"
    if not graft["finetuned"]["qa_id"]:
        return f"a floor: {label}'s θ_ft answers no ID question of the report people"
    hit = graft["bracket"]["hit"]
    if not hit["converged"]:
        return (f"{label}'s first hit (s = {hit['sparsity']:.4g}) comes from a search whose kept step is its last "
                f"(unconverged)")
    return None


def _reach(graft: dict, unit: str = "") -> str:
    """How one run reaches the target: "with 28.0–30.1 %" of the traced entries, or only as θ_ft itself."""
    low, high = bracket(graft)
    if graft["bracket"]["hit"]["sparsity"] >= 1:
        return f"only as θ_ft itself (missing with {low:.1%}{unit})"
    return f"with {low:.1%}–{high:.1%}{unit}"


def _line(graft: dict, label: str) -> str:
    if not graft.get("bracket"):
        return f"{label}: no bisection"
    b = graft["bracket"]
    points = ", ".join(f"s={p['sparsity']:.4g}: {p['size'] / graft['traced']:.1%} ID-QA {p['accuracy']['qa_id']:.3f} "
                       f"(step {p['best_step']} of {p['steps_run']}{'' if p['converged'] else ', unconverged'})"
                       for p in graft["sweep"])
    return (f"{label} (θ_ft ID-QA {graft['finetuned']['qa_id']:.3f} on {graft['n']['qa_id']} questions of the "
            f"report half, {graft['people']['report']} people; "
            f"{graft['traced']:,} traced entries): miss at s={b['miss']['sparsity']:.4g} "
            f"({b['miss']['size']:,}), hit at s={b['hit']['sparsity']:.4g} ({b['hit']['size']:,}); searched {points}")


def rule(evidence: dict) -> Verdict:
    """Per strategy the bracket [|γ|₀ at the last miss, |γ|₀ at the first hit] / traced entries; one measure on the
    brackets' midpoints resolved by their half-widths, lower for the claim: holds when Mix's bracket lies entirely
    below Stage's, does not hold when entirely above, undetermined when they overlap (a tie within the bisection's
    resolution). "Only one reaches the target" is the other's first hit at s = 1 (θ_ft itself). Not measurable
    without a bisection, when a θ_ft answers no report ID question, when a first hit is unconverged, or when the
    runs aimed at different targets."""
    graft = evidence["graft"]
    labels = {"mix": "Mix", "stage": "Stage"}
    reasons = [r for s in ("mix", "stage") if (r := unmeasurable(graft[s], labels[s]))]
    if not reasons and graft["mix"]["recover"] != graft["stage"]["recover"]:
        reasons.append(f"the runs aimed at different targets ({graft['mix']['recover']:g} vs "
                       f"{graft['stage']['recover']:g} × θ_ft's ID-QA)")
    text = "; ".join(_line(graft[s], labels[s]) for s in ("mix", "stage"))
    if reasons:
        why = "; ".join(reasons)
        return _verdict(judge([Measure(NAME, None, None, lower_is_for=True, unmeasurable=why)], text), why)
    ends = {s: bracket(graft[s]) for s in ("mix", "stage")}
    middle = {s: (low + high) / 2 for s, (low, high) in ends.items()}
    # the brackets overlap or touch ⟺ |Δ midpoint| ≤ the sum of their half-widths (+ rounding: touching ties)
    half_widths = sum(high - low for low, high in ends.values()) / 2 + TOLERANCE
    judged = judge([Measure(NAME, middle["mix"], middle["stage"], half_widths, lower_is_for=True)],
                   f"target: grafted ID-QA ≥ {graft['mix']['recover']:g} × θ_ft's on the report people; {text}")
    why = (f"Mix reaches {graft['mix']['recover']:.0%} of θ_ft's ID-QA {_reach(graft['mix'], ' of the traced entries')}"
           f", Stage {_reach(graft['stage'])}" + (": a tie within the bisection's resolution"
                                                  if judged.verdict == UNDETERMINED else ""))
    return _verdict(judged, why)


def _verdict(judged: Verdict, why: str) -> Verdict:
    """`judged` with its own sentence of why."""
    return Verdict(judged.verdict, why, judged.evidence, judged.measures)


def _first_hit(summary: dict, strategy: str) -> float | None:
    """The ladder: |γ|₀ / traced entries at the first hit of the bisection (summary.json's graft entry)."""
    g = (summary.get("graft") or {}).get(strategy) or {}
    hit = (g.get("bracket") or {}).get("hit")
    return hit["size"] / g["traced"] if hit and g.get("traced") else None


CLAIM = Claim("C5", "Grafting needs fewer parameters for Mix than for Stage", ("graft",), rule,
              (("|γ|₀ / traced entries, first graft reaching 90 % of θ_ft's ID-QA", _first_hit),))
