"""The paper's claims (docs/method.md §11), each checked on a study's measured numbers.

Every check returns `{id, statement, verdict, holds, evidence}`: the verdict is "holds", "does not
hold" or "undetermined" (`holds` True, False or None), and the evidence states the numbers and the
rule used, so a claim that does not hold is reported with the reason, never hidden. A claim is
undetermined, with the reason, when the numbers cannot decide it: a tie, a floor (an accuracy too
low for a drop to mean anything), too few units, or measurements that do not pair up.
"""

from __future__ import annotations

FIT = 0.9  # a strategy "fits" ID-QA and BIO when its accuracy is at least this
FAR_ABOVE = 0.3  # "far above": Mix's OOD-QA exceeds Stage's by at least this
TOLERANCE = 1e-9  # accuracies are fractions of counts: 0.70 − 0.40 must count as 0.3
MIN_HEADS = 32  # below this many heads, the top 1–10 % of heads is one head (or none): C6 cannot be asked

STATEMENTS = {
    "C1": "Mix OOD-QA accuracy is far above Stage's; both fit ID-QA and BIO",
    "C2": "Mix has more shared parameters than Stage (at the default k and across the sweep)",
    "C3": "Mix's shared parameters are more concentrated (Gini, top-unit share)",
    "C4": "Ablating shared parameters hurts Mix more than Stage, and more than random ablation",
    "C5": "Grafting needs fewer parameters for Mix than for Stage",
    "C6": "`shared_size` finds sufficient and critical heads with fewer heads than other metrics",
    "C7": "BIO–QA gradient and representation consistency are higher under Mix",
}


def _claim(claim_id: str, holds: bool, evidence: str, undetermined: str | None = None) -> dict:
    """The verdict of `claim_id`: `undetermined` (the reason) overrides `holds`."""
    verdict = "undetermined" if undetermined else "holds" if holds else "does not hold"
    return {"id": claim_id, "statement": STATEMENTS[claim_id], "verdict": verdict,
            "holds": None if undetermined else bool(holds),
            "evidence": evidence + (f"; undetermined: {undetermined}" if undetermined else "")}


def c1_accuracy(accuracy: dict) -> dict:
    """`accuracy[strategy]` has qa_id, qa_ood, bio (final) and bio_after_bio_training."""
    mix, stage = accuracy["mix"], accuracy["stage"]
    gap = mix["qa_ood"] - stage["qa_ood"]
    fits = all(a["qa_id"] >= FIT and a["bio_after_bio_training"] >= FIT for a in (mix, stage))
    evidence = (f"OOD-QA Mix {mix['qa_ood']:.3f} vs Stage {stage['qa_ood']:.3f} (gap {gap:+.3f}, needs ≥ {FAR_ABOVE}); "
                f"ID-QA Mix {mix['qa_id']:.3f}, Stage {stage['qa_id']:.3f}; BIO after BIO training "
                f"Mix {mix['bio_after_bio_training']:.3f}, Stage {stage['bio_after_bio_training']:.3f} "
                f"(fit needs ≥ {FIT}); final BIO Mix {mix['bio']:.3f}, Stage {stage['bio']:.3f}")
    return _claim("C1", gap >= FAR_ABOVE - TOLERANCE and fits, evidence)


def c2_shared_size(shared: dict) -> dict:
    """`shared[strategy]` is a run's shared.json."""
    mix, stage = shared["mix"], shared["stage"]
    by_k = {s: {p["k"]: p["global"]["shared"] for p in shared[s]["sweep"]} for s in ("mix", "stage")}
    same_points = bool(by_k["mix"]) and by_k["mix"].keys() == by_k["stage"].keys()  # paired by k, never by position
    sweep = [(k, by_k["mix"][k], by_k["stage"][k]) for k in sorted(by_k["mix"])] if same_points else []
    more_everywhere = same_points and all(m > s for _, m, s in sweep)
    points = (", ".join(f"k={k:g}%: {m} vs {s}" for k, m, s in sweep) if same_points else
              f"not comparable (Mix at k = {sorted(by_k['mix'])}, Stage at k = {sorted(by_k['stage'])})")
    evidence = (f"|Shared| at k={mix['k']:g}%: Mix {mix['shared']} vs Stage {stage['shared']} "
                f"(chance {mix['chance']:.0f}; enrichment {mix['enrichment']:.1f} vs {stage['enrichment']:.1f}); "
                f"sweep (Mix vs Stage) {points}; per-tensor threshold: Mix {mix['per_tensor']['shared']} "
                f"vs Stage {stage['per_tensor']['shared']}")
    why = ("the two sweeps were not measured at the same k" if not same_points else
           "a tie at the default k" if mix["shared"] == stage["shared"] else None)
    return _claim("C2", mix["shared"] > stage["shared"] and more_everywhere, evidence, why)


def c3_concentration(shared: dict) -> dict:
    """Holds when Mix is higher on all four (Gini and top-10 % share, heads and neurons); does not hold when
    it is lower on one; otherwise a tie leaves it undetermined (e.g. both top-10 % shares at 1.000)."""
    mix, stage = shared["mix"], shared["stage"]
    parts, pairs = [], []
    for kind in ("heads", "neurons"):
        gm, gs = mix["gini"][kind], stage["gini"][kind]
        tm, ts = mix["top_unit_share"][kind]["10%"], stage["top_unit_share"][kind]["10%"]
        pairs += [(f"{kind} Gini", gm, gs), (f"{kind} top-10% share", tm, ts)]
        parts.append(f"{kind}: Gini Mix {gm:.3f} vs Stage {gs:.3f}, top-10% share Mix {tm:.3f} vs Stage {ts:.3f}")
    ties = [name for name, m, s in pairs if m == s]
    lower = any(m < s for _, m, s in pairs)
    return _claim("C3", not lower and not ties, "; ".join(parts) + " (holds when Mix is higher on all four)",
                  f"a tie in {', '.join(ties)}" if ties and not lower else None)


def c4_ablation(ablation: dict) -> dict:
    """`ablation[strategy]` is a run's ablation.json; judged on the OOD-QA drop. Undetermined (a floor) when the
    rule would hold but Stage's unablated OOD-QA is below Mix's drop: Stage could not have lost as much."""
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
    holds = d_mix < d_stage and d_mix < r_mix
    floor = stage["unablated"]["qa_ood"]
    return _claim("C4", holds, evidence, f"a floor: Stage's unablated OOD-QA {floor:.3f} bounds its drop above "
                  f"Mix's {d_mix:+.3f}" if holds and floor < -d_mix else None)


def c5_grafting(graft: dict, accuracy: dict) -> dict:
    """`graft[strategy]` is a run's graft.json; `accuracy[strategy]` its θ_ft accuracies.

    Holds when Mix's mask is no larger than Stage's and recovers at least as large a share of its
    own θ_ft ID-QA accuracy (the grafting criterion)."""
    def recovered(s: str) -> float:
        full = accuracy[s]["qa_id"]
        return graft[s]["graft"]["accuracy"]["qa_id"] / full if full else 0.0

    size = {s: graft[s]["graft"]["size"] for s in ("mix", "stage")}
    parameters = graft["mix"]["parameters"]
    total = parameters or 1  # a model without parameters has nothing to graft (0 %)
    parts = [f"{s.capitalize()}: |γ|₀ {size[s]:,} ({size[s] / total:.1%} of {parameters:,}), grafted ID-QA "
             f"{graft[s]['graft']['accuracy']['qa_id']:.3f} ({recovered(s):.0%} of θ_ft's), OOD-QA "
             f"{graft[s]['graft']['accuracy']['qa_ood']:.3f}; magnitude-only base patch ID-QA "
             f"{graft[s]['base_patch']['accuracy']['qa_id']:.3f}" for s in ("mix", "stage")]
    holds = size["mix"] <= size["stage"] and recovered("mix") >= recovered("stage") and recovered("mix") > 0
    return _claim("C5", holds, "; ".join(parts) + f" (base patch sparsity {graft['mix']['sparsity']:g}; holds when "
                  "Mix's mask is no larger and recovers a non-zero share of θ_ft ID-QA at least as large as Stage's)")


def c6_heads(heads: dict, neurons: dict) -> dict:
    """`heads[strategy]` / `neurons[strategy]` are heads.json / neurons.json; judged on Mix's heads.

    Holds when `shared_size` needs no more heads than any other metric for both the minimal
    sufficient set and the critical set, and strictly fewer than `random` for at least one.
    Undetermined with fewer than MIN_HEADS heads (the metrics' top few percent are one head) or when
    Mix answers no OOD question unablated (a floor: no head can matter)."""
    def n(value, units: int) -> int:  # "never reached" ranks after every reached n
        return units + 1 if value is None else value

    mix = heads["mix"]
    units = mix["units"]
    ours = mix["metrics"]["shared_size"]
    holds, parts = True, []
    for kind in ("minimal_sufficient", "critical"):
        mine = n(ours[kind], units)
        others = {m: n(v[kind], units) for m, v in mix["metrics"].items() if m != "shared_size"}
        holds = holds and all(mine <= o for o in others.values())
        parts.append(f"{kind.replace('_', ' ')} n (Mix, of {units} heads): shared_size {ours[kind]}, "
                     + ", ".join(f"{m} {mix['metrics'][m][kind]}" for m in others))
    random = mix["metrics"].get("random")
    strictly = random is not None and any(n(ours[k], units) < n(random[k], units)
                                          for k in ("minimal_sufficient", "critical"))
    stage = heads["stage"]["metrics"]["shared_size"]
    neuron = neurons["mix"]["metrics"].get("shared_size", {})
    parts.append(f"Stage shared_size: sufficient {stage['minimal_sufficient']}, critical {stage['critical']}; "
                 f"Mix neurons shared_size: sufficient {neuron.get('minimal_sufficient')}, critical "
                 f"{neuron.get('critical')} of {neurons['mix']['units']} (None = never reached)")
    unablated = mix["unablated"].get("qa_ood") or 0.0  # None: no OOD person was evaluated
    why = ("a floor: Mix's OOD-QA accuracy is 0 (or unmeasured) on the evaluated people, so no head can matter"
           if not unablated else f"too few units: {units} heads, fewer than {MIN_HEADS}, so the metrics' top few "
           f"percent are the same one head" if units < MIN_HEADS else None)
    return _claim("C6", holds and strictly, "; ".join(parts) +
                  " (holds when shared_size ≤ every other metric on both and < random on one)", why)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def consistency_headline(c: dict) -> dict:
    """A run's consistency.json in a few numbers (all people): the gradient probe's gap (matched − mismatched
    cosine of a person's BIO-value and QA-answer gradients, mean over layers), the representation gap
    (matched − mismatched hidden-state cosine, mean over layers 1..L) per position, the trace-direction
    cosine over all traced entries, and the mean logged per-step gradient cosine where training logged one."""
    probe = c.get("gradient_probe")
    return {"gradient_probe_gap": _mean(probe["all"]["gap"].values()) if probe else None,
            "representation_gap": {p: _mean(t["all"]["gap"][1:]) for p, t in c["representation"].items()},
            "trace_direction": (c.get("trace_direction") or {}).get("all"),
            "logged_gradient": c["gradient"].get("all")}


def c7_consistency(consistency: dict) -> dict:
    """`consistency[strategy]` is a run's consistency.json.

    Holds when Mix is higher on the gradient probe and on the representation gap at both positions.
    The trace-direction cosine and the logged per-step cosine (Mix only: Stage never has both tasks in
    one phase; one micro-batch per step pairs different people) are reported, not judged."""
    h = {s: consistency_headline(consistency[s]) for s in ("mix", "stage")}
    fmt = (lambda v: "n/a" if v is None else f"{v:+.3f}")
    g_mix, g_stage = h["mix"]["gradient_probe_gap"], h["stage"]["gradient_probe_gap"]
    positions = [p for p in h["mix"]["representation_gap"] if p in h["stage"]["representation_gap"]]
    both = bool(positions) and len(positions) == len(h["mix"]["representation_gap"]) == len(
        h["stage"]["representation_gap"])  # judged only where both runs measured the same positions
    holds = (both and g_mix is not None and g_stage is not None and g_mix > g_stage
             and all(h["mix"]["representation_gap"][p] > h["stage"]["representation_gap"][p] for p in positions))
    why = ("the two runs' representation gaps were not measured at the same positions" if not both else
           "a gradient probe is missing" if g_mix is None or g_stage is None else None)
    rep = ", ".join(f"{p} Mix {h['mix']['representation_gap'][p]:+.3f} vs Stage "
                    f"{h['stage']['representation_gap'][p]:+.3f}" for p in positions)
    evidence = (f"gradient probe (cosine of a person's BIO-value and QA-answer gradients, matched − mismatched, "
                f"mean over layers): Mix {fmt(g_mix)} vs Stage {fmt(g_stage)}; representation gap (matched − "
                f"mismatched BIO/QA hidden-state cosine, mean over layers): {rep}; reported only: trace-direction "
                f"cos(Δ_BIO, Δ_QA) Mix {fmt(h['mix']['trace_direction'])} vs Stage "
                f"{fmt(h['stage']['trace_direction'])}, Mix logged per-step gradient cosine "
                f"{fmt(h['mix']['logged_gradient'])} (holds when Mix is higher on the probe and at every position)")
    return _claim("C7", holds, evidence, why)
