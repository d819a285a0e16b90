"""C1: Mix answers held-out questions far better than Stage (the paper's Fig. 1a)."""

from __future__ import annotations

from factrecall.study.claims.verdict import (
    AGAINST,
    FAILS,
    FIT,
    FOR,
    HOLDS,
    TOLERANCE,
    UNDETERMINED,
    Claim,
    Measure,
    Verdict,
    at,
    binomial_se,
    resolution,
)

FAR_ABOVE = 0.3  # "far above": Mix's OOD-QA exceeds Stage's by at least this


def best_fitting(runs: list[dict]) -> dict | None:
    """Of a study's Stage runs (stage_arms.json `runs`), the one with the highest OOD-QA among those whose final
    ID-QA and BIO both reach FIT, or None."""
    fitting = [r for r in runs if min(r["accuracy"]["qa_id"], r["accuracy"]["bio"]) >= FIT - TOLERANCE]
    return max(fitting, key=lambda r: (r["accuracy"]["qa_ood"], -runs.index(r)), default=None)


def rule(evidence: dict) -> Verdict:
    """OOD-QA gap d = Mix − Stage with its 95 % interval (Stage: with [stage_arms], the best OOD-QA of the Stage
    runs that fit ID-QA and keep BIO, if higher than the analysed run's) (binomial standard errors over the questions):
    holds when the interval lies at or above FAR_ABOVE, does not hold when it lies below, else undetermined.

    One-sided by its margin: swapping the runs turns "holds" into "does not hold"; an interval that
    straddles FAR_ABOVE becomes one far below it, which does not hold either. Fit is the gate's
    (`verdict.fit_gate`: ID-QA and the *final* BIO of both runs)."""
    a = evidence["accuracy"]
    mix, stage = a["mix"], a["stage"]
    arms = evidence.get("stage_arms") or []
    best = best_fitting(arms)
    if best is not None and best["accuracy"]["qa_ood"] > stage["qa_ood"]:
        stage = best["accuracy"]  # the best Stage run that fits and keeps BIO, not only the analysed one
    gap = mix["qa_ood"] - stage["qa_ood"]
    width = resolution(*(binomial_se(s["qa_ood"], s.get("n", {}).get("qa_ood", 0)) for s in (mix, stage)))
    # a gap of exactly FAR_ABOVE reaches it (accuracies are fractions of counts: 0.70 − 0.40 is 0.2999…)
    measure = Measure(f"OOD-QA gap − {FAR_ABOVE:g}", gap - FAR_ABOVE + 2 * TOLERANCE, 0.0, width)
    evidence_text = (f"OOD-QA Mix {mix['qa_ood']:.3f} vs Stage {stage['qa_ood']:.3f} (gap {gap:+.3f} ± {width:.3f}, "
                     f"needs ≥ {FAR_ABOVE:g}); ID-QA Mix {mix['qa_id']:.3f}, Stage {stage['qa_id']:.3f}; BIO after "
                     f"the BIO phase Mix {mix['bio_after_bio_training']:.3f}, Stage "
                     f"{stage['bio_after_bio_training']:.3f}; final BIO Mix {mix['bio']:.3f}, Stage {stage['bio']:.3f}"
                     + ("; Stage runs (ID-QA / OOD-QA / final BIO): " + ", ".join(
                         f"{r['label']} {r['accuracy']['qa_id']:.3f} / {r['accuracy']['qa_ood']:.3f} / "
                         f"{r['accuracy']['bio']:.3f}" for r in arms)
                        + f"; compared: {best['label'] if best and best['accuracy'] is stage else 'the analysed run'}"
                        if arms else ""))
    if measure.outcome == FOR:
        return Verdict(HOLDS, f"Mix answers {gap:.0%} more held-out questions than Stage (± {width:.0%})",
                       evidence_text, (measure,))
    if measure.outcome == AGAINST:
        return Verdict(FAILS, f"the OOD-QA gap {gap:+.3f} (± {width:.3f}) is below {FAR_ABOVE:g}",
                       evidence_text, (measure,))
    return Verdict(UNDETERMINED, f"the OOD-QA gap {gap:+.3f} ± {width:.3f} straddles {FAR_ABOVE:g}",
                   evidence_text, (measure,))


CLAIM = Claim("C1", "Mix OOD-QA accuracy is far above Stage's; both fit ID-QA and BIO to the end of training",
              ("accuracy",), rule, (("OOD-QA accuracy", at("accuracy", "{s}", "qa_ood")),))
