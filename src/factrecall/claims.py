"""The paper's claims (SPEC §11), each checked on a study's measured numbers.

Every check returns `{id, statement, holds, evidence}`; evidence states the numbers and the rule
used, so a claim that does not hold is reported with the reason, never hidden.
"""

from __future__ import annotations

FIT = 0.9  # a strategy "fits" ID-QA and BIO when its accuracy is at least this
FAR_ABOVE = 0.3  # "far above": Mix's OOD-QA exceeds Stage's by at least this

STATEMENTS = {
    "C1": "Mix OOD-QA accuracy is far above Stage's; both fit ID-QA and BIO",
    "C2": "Mix has more shared parameters than Stage (at the default k and across the sweep)",
    "C3": "Mix's shared parameters are more concentrated (Gini, top-unit share)",
    "C4": "Ablating shared parameters hurts Mix more than Stage, and more than random ablation",
}


def _claim(claim_id: str, holds: bool, evidence: str) -> dict:
    return {"id": claim_id, "statement": STATEMENTS[claim_id], "holds": bool(holds), "evidence": evidence}


def c1_accuracy(accuracy: dict) -> dict:
    """`accuracy[strategy]` has qa_id, qa_ood, bio (final) and bio_after_bio_training."""
    mix, stage = accuracy["mix"], accuracy["stage"]
    gap = mix["qa_ood"] - stage["qa_ood"]
    fits = all(a["qa_id"] >= FIT and a["bio_after_bio_training"] >= FIT for a in (mix, stage))
    evidence = (f"OOD-QA Mix {mix['qa_ood']:.3f} vs Stage {stage['qa_ood']:.3f} (gap {gap:+.3f}, needs ≥ {FAR_ABOVE}); "
                f"ID-QA Mix {mix['qa_id']:.3f}, Stage {stage['qa_id']:.3f}; BIO after BIO training "
                f"Mix {mix['bio_after_bio_training']:.3f}, Stage {stage['bio_after_bio_training']:.3f} "
                f"(fit needs ≥ {FIT}); final BIO Mix {mix['bio']:.3f}, Stage {stage['bio']:.3f}")
    return _claim("C1", gap >= FAR_ABOVE and fits, evidence)


def c2_shared_size(shared: dict) -> dict:
    """`shared[strategy]` is a run's shared.json."""
    mix, stage = shared["mix"], shared["stage"]
    sweep = [(m["k"], m["global"]["shared"], s["global"]["shared"]) for m, s in zip(mix["sweep"], stage["sweep"])]
    more_everywhere = all(m > s for _, m, s in sweep)
    points = ", ".join(f"k={k:g}%: {m} vs {s}" for k, m, s in sweep)
    evidence = (f"|Shared| at k={mix['k']:g}%: Mix {mix['shared']} vs Stage {stage['shared']} "
                f"(chance {mix['chance']:.0f}; enrichment {mix['enrichment']:.1f} vs {stage['enrichment']:.1f}); "
                f"sweep (Mix vs Stage) {points}; per-tensor threshold: Mix {mix['per_tensor']['shared']} "
                f"vs Stage {stage['per_tensor']['shared']}")
    return _claim("C2", mix["shared"] > stage["shared"] and more_everywhere, evidence)


def c3_concentration(shared: dict) -> dict:
    mix, stage = shared["mix"], shared["stage"]
    parts, holds = [], True
    for kind in ("heads", "neurons"):
        gm, gs = mix["gini"][kind], stage["gini"][kind]
        tm, ts = mix["top_unit_share"][kind]["10%"], stage["top_unit_share"][kind]["10%"]
        holds = holds and gm > gs and tm > ts
        parts.append(f"{kind}: Gini Mix {gm:.3f} vs Stage {gs:.3f}, top-10% share Mix {tm:.3f} vs Stage {ts:.3f}")
    return _claim("C3", holds, "; ".join(parts) + " (holds when Mix is higher on all four)")


def c4_ablation(ablation: dict) -> dict:
    """`ablation[strategy]` is a run's ablation.json; judged on the OOD-QA drop."""
    mix, stage = ablation["mix"], ablation["stage"]
    d_mix, d_stage = mix["shared"]["drop"]["qa_ood"], stage["shared"]["drop"]["qa_ood"]
    r_mix = mix["random"]["mean_drop"]["qa_ood"]

    def share_lost(a: dict) -> float:
        base = a["unablated"]["qa_ood"]
        return -a["shared"]["drop"]["qa_ood"] / base if base else 0.0

    evidence = (f"OOD-QA drop after resetting the shared set (k={mix['k']:g}%) to θ_pre: Mix {d_mix:+.3f} vs "
                f"Stage {d_stage:+.3f}; Mix random (count-matched per tensor, mean of {mix['seeds']}) {r_mix:+.3f}; "
                f"Mix Top_BIO∖Shared {mix['top_bio_only']['mean_drop']['qa_ood']:+.3f}, "
                f"Top_QA∖Shared {mix['top_qa_only']['mean_drop']['qa_ood']:+.3f}; share of OOD accuracy lost: "
                f"Mix {share_lost(mix):.0%}, Stage {share_lost(stage):.0%} (the claim is judged on absolute drops)")
    return _claim("C4", d_mix < d_stage and d_mix < r_mix, evidence)
