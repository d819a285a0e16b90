"""C1: Mix answers held-out questions far better than Stage (the paper's Fig. 1a)."""

from __future__ import annotations

from factrecall.study.claims.verdict import (
    FAILS,
    HOLDS,
    UNDETERMINED,
    Claim,
    Measure,
    Verdict,
    at,
    binomial_se,
    resolution,
)
from factrecall.study.stage_arms import best_fitting

FAR_ABOVE = 0.3  # "far above": Mix's OOD-QA exceeds Stage's by at least this


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
    measure = Measure(f"OOD-QA gap − {FAR_ABOVE:g}", gap - FAR_ABOVE, 0.0, width)
    evidence_text = (f"OOD-QA Mix {mix['qa_ood']:.3f} vs Stage {stage['qa_ood']:.3f} (gap {gap:+.3f} ± {width:.3f}, "
                     f"needs ≥ {FAR_ABOVE:g}); ID-QA Mix {mix['qa_id']:.3f}, Stage {stage['qa_id']:.3f}; BIO after "
                     f"the BIO phase Mix {mix['bio_after_bio_training']:.3f}, Stage "
                     f"{stage['bio_after_bio_training']:.3f}; final BIO Mix {mix['bio']:.3f}, Stage {stage['bio']:.3f}"
                     + (f"; Stage runs (ID-QA / OOD-QA / final BIO): " + ", ".join(
                         f"{r['label']} {r['accuracy']['qa_id']:.3f} / {r['accuracy']['qa_ood']:.3f} / "
                         f"{r['accuracy']['bio']:.3f}" for r in arms)
                        + f"; compared: {best['label'] if best and best['accuracy'] is stage else 'the analysed run'}"
                        if arms else ""))
    low, high = gap - width, gap + width
    if low >= FAR_ABOVE - 1e-9:
        return Verdict(HOLDS, f"Mix answers {gap:.0%} more held-out questions than Stage (± {width:.0%})",
                       evidence_text, (measure,))
    if high < FAR_ABOVE - 1e-9:
        return Verdict(FAILS, f"the OOD-QA gap {gap:+.3f} (± {width:.3f}) is below {FAR_ABOVE:g}",
                       evidence_text, (measure,))
    return Verdict(UNDETERMINED, f"the OOD-QA gap {gap:+.3f} ± {width:.3f} straddles {FAR_ABOVE:g}",
                   evidence_text, (measure,))


CLAIM = Claim("C1", "Mix OOD-QA accuracy is far above Stage's; both fit ID-QA and BIO to the end of training",
              ("accuracy",), rule, (("OOD-QA accuracy", at("accuracy", "{s}", "qa_ood")),))
