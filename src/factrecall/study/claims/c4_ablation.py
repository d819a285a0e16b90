"""C4: ablating the shared set hurts Mix beyond chance (C4a), and more than it hurts Stage (C4b) (Fig. 2b).

Both are judged on the same-size block of ablation.json (`matched`: a shared set of the same number of
entries in every run) by the relative loss L = −change / unablated accuracy (change = ablated − unablated) on OOD-QA, and its standard
error from the questions (binomial, before and after the reset) and, for random sets, their seeds:

    se(L_shared) = √(p₀(1−p₀)/n + p₁(1−p₁)/n) / p₀
    se(L_random) = √((sd² + se_b²) / seeds)      sd: the sample sd of the seeds' losses

C4a (Mix alone): L_shared against the random sets' losses, resolved beyond their seed spread (Z × √(se² + sd²)).
C4b (Mix vs Stage): R = L_shared / L_random with a delta-method interval; not measurable in a run whose
random sets alone cost more than RANDOM_FRAGILE of its OOD-QA (resetting anything breaks it, so a ratio
measures fragility), or whose unablated OOD-QA is 0. ID-QA, Top∖Shared and the sets at k are reported.
"""

from __future__ import annotations

import math

from factrecall.study.claims.verdict import Z, Claim, Measure, Verdict, binomial_se, judge, undetermined

RANDOM_FRAGILE = 0.15  # C4b: a run whose random sets cost more than this share of OOD-QA is too fragile to compare


def relative_losses(block: dict, unablated: dict, n: int) -> dict:
    """L and se of the shared set and of the random sets (mean over seeds), OOD-QA, from an ablation block."""
    p0 = unablated["qa_ood"]
    if not p0:
        return {"floor": True}
    shared_p = block["shared"]["accuracy"]["qa_ood"]
    runs = block["random"]["runs"]
    losses = [-r["change"]["qa_ood"] / p0 for r in runs]
    mean = sum(losses) / len(losses)
    sd = math.sqrt(sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)) if len(losses) > 1 else 0.0
    se_b = math.sqrt(binomial_se(p0, n) ** 2 + binomial_se(p0 * (1 - mean), n) ** 2) / p0
    return {"floor": False, "shared": -block["shared"]["change"]["qa_ood"] / p0,
            "shared_se": math.sqrt(binomial_se(p0, n) ** 2 + binomial_se(shared_p, n) ** 2) / p0,
            "random": mean, "random_sd": sd, "random_se": math.sqrt((sd * sd + se_b * se_b) / len(losses)),
            "seeds": len(losses), "one_question": 1 / (n * p0) if n else 1e-9}


def _blocks(evidence: dict) -> tuple[dict, str | None]:
    """{strategy: relative losses} of the same-size blocks, or the reason they cannot be compared."""
    a = evidence["ablation"]
    missing = [s.capitalize() for s in ("mix", "stage") if not a[s].get("matched")]
    if missing:
        return {}, f"no same-size ablation in {' and '.join(missing)}; rerun `ablation` with a size"
    sizes = {s: a[s]["matched"]["shared"]["size"] for s in ("mix", "stage")}
    if sizes["mix"] != sizes["stage"]:
        return {}, f"the same-size sets differ (Mix {sizes['mix']:,} vs Stage {sizes['stage']:,} entries)"
    return {s: relative_losses(a[s]["matched"], a[s]["unablated"], a[s].get("n", {}).get("qa_ood", 0))
            for s in ("mix", "stage")}, None


def _describe(evidence: dict, losses: dict) -> str:
    a = evidence["ablation"]
    parts = []
    for s in ("mix", "stage"):
        m, u = a[s]["matched"], a[s]["unablated"]
        x = losses[s]
        controls = ", ".join(f"{label} {-m[kind]['mean_change']['qa_ood'] / u['qa_ood']:.0%}" for kind, label in
                             (("top_bio_only", "Top_BIO∖Shared"), ("top_qa_only", "Top_QA∖Shared"))) if u["qa_ood"] else ""
        parts.append(f"{s.capitalize()} ({m['shared']['size']:,} entries, unablated OOD-QA {u['qa_ood']:.3f}): "
                     + ("unablated OOD-QA is 0" if x["floor"] else
                        f"shared {x['shared']:.1%} ± {x['shared_se']:.1%}, random {x['random']:.1%} (sd "
                        f"{x['random_sd']:.1%} over {x['seeds']} seeds); reported only: ID-QA change "
                        f"{m['shared']['change']['qa_id']:+.3f}, {controls}"))
    return "OOD-QA relative loss of the same-size sets: " + "; ".join(parts)


def rule_a(evidence: dict) -> Verdict:
    """C4a: Mix's shared set costs more OOD-QA than its random sets, beyond their seed spread."""
    losses, why = _blocks(evidence)
    if why:
        return undetermined(why)
    mix = losses["mix"]
    if mix["floor"]:
        return undetermined("a floor: Mix's unablated OOD-QA is 0", _describe(evidence, losses))
    width = Z * math.sqrt(mix["shared_se"] ** 2 + mix["random_sd"] ** 2)
    measure = Measure("Mix OOD-QA relative loss: shared vs random", mix["shared"], mix["random"], width,
                      labels=("shared", "random"))
    return judge([measure], _describe(evidence, losses))


def ratio(x: dict) -> tuple[float | None, float, str | None]:
    """(R = L_shared / L_random, its standard error, why not measurable) of one run's relative losses."""
    if x["floor"]:
        return None, 0.0, "unablated OOD-QA is 0"
    if x["random"] > RANDOM_FRAGILE:
        return None, 0.0, f"random sets alone cost {x['random']:.0%} > {RANDOM_FRAGILE:.0%}"
    random = x["random"]
    if random <= Z * x["random_se"] or random < x["one_question"]:
        return None, 0.0, (f"the random sets' loss {random:.1%} is within its uncertainty of 0 (the ratio is "
                           f"unbounded)")
    r = x["shared"] / random
    se = math.hypot(x["shared_se"] / random, x["shared"] * x["random_se"] / random ** 2)  # delta method
    return r, se, None


def rule_b(evidence: dict) -> Verdict:
    """C4b: Mix's shared/random loss ratio exceeds Stage's (delta-method interval, Z × √(se_m² + se_s²))."""
    losses, why = _blocks(evidence)
    if why:
        return undetermined(why)
    (rm, sm, wm), (rs, ss, ws) = ratio(losses["mix"]), ratio(losses["stage"])
    reason = "; ".join(f"{n}: {w}" for n, w in (("Mix", wm), ("Stage", ws)) if w) or None
    measure = Measure("shared/random OOD-QA loss ratio", rm, rs, Z * math.hypot(sm, ss), unmeasurable=reason)
    text = _describe(evidence, losses) + "; ratio " + ", ".join(
        f"{n} {'n/a' if r is None else f'{r:.2f} ± {Z * s:.2f}'}" for n, r, s in (("Mix", rm, sm), ("Stage", rs, ss)))
    return judge([measure], text)


def _ratio_ladder(summary: dict, strategy: str) -> float | None:
    block = (((summary.get("ablation") or {}).get(strategy) or {}).get("matched") or {})
    base = (((summary.get("ablation") or {}).get(strategy) or {}).get("unablated") or {}).get("qa_ood")
    try:
        shared, random = -block["shared"]["qa_ood"] / base, -block["random"]["qa_ood"] / base
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return shared / random if random > 0 else None


def _loss_ladder(summary: dict, strategy: str) -> float | None:
    block = (((summary.get("ablation") or {}).get(strategy) or {}).get("matched") or {})
    base = (((summary.get("ablation") or {}).get(strategy) or {}).get("unablated") or {}).get("qa_ood")
    try:
        return -block["shared"]["qa_ood"] / base
    except (KeyError, TypeError, ZeroDivisionError):
        return None


CLAIM_A = Claim("C4a", "Ablating Mix's shared parameters hurts its OOD-QA more than ablating random parameters",
                ("ablation",), rule_a, (("share of OOD-QA lost, same-size shared set reset", _loss_ladder),),
                compares=False)
CLAIM_B = Claim("C4b", "Ablating shared parameters hurts Mix more than Stage, relative to random ablation",
                ("ablation",), rule_b, (("OOD-QA loss ratio, shared / random", _ratio_ladder),))
