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
RESOLUTION = 2.0  # C3: a difference in excess over the null counts when larger than this many null std
RECOVER = 0.9  # C5: a graft reaches the target when its ID-QA is at least this share of θ_ft's
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


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def c3_concentration(shared: dict) -> dict:
    """`shared[strategy]` is a run's shared.json; judged on its `matched` sets (the same sizes in both runs).

    Rule: at every matched size, Mix's excess over the placement null (observed − null mean) is higher than
    Stage's by more than RESOLUTION null standard deviations on Gini and top-10 % share, for heads and for
    neurons; lower by that much on one: does not hold; otherwise undetermined (a tie in the observed values,
    e.g. both top-10 % shares at 1.000, a difference within the null's resolution, sets of different sizes,
    or no matched sizes in common). The values at k (sets of different sizes) are reported, not judged."""
    mix, stage = shared["mix"], shared["stage"]
    points = {s: {p["fraction"]: p for p in shared[s].get("matched", [])} for s in ("mix", "stage")}
    at_k = ", ".join(f"{kind} Gini Mix {mix['gini'][kind]:.3f} vs Stage {stage['gini'][kind]:.3f}"
                     for kind in ("heads", "neurons"))
    reported = f"reported only, at k={mix['k']:g}% (|Shared| Mix {mix['shared']} vs Stage {stage['shared']}): {at_k}"
    if not points["mix"] or points["mix"].keys() != points["stage"].keys():
        return _claim("C3", False, reported, "the two runs were not measured at the same matched sizes "
                      f"(Mix {sorted(points['mix'])}, Stage {sorted(points['stage'])}); rerun `shared`")
    mismatch = [f for f in points["mix"] if points["mix"][f]["size"] != points["stage"][f]["size"]]
    parts, outcomes = [], {"higher": [], "lower": [], "tie": [], "unresolved": []}
    for fraction in sorted(points["mix"]):
        m, s = points["mix"][fraction], points["stage"][fraction]
        cells = []
        for kind in ("heads", "neurons"):
            for metric in ("gini", "top_10%"):
                a, b = m[kind][metric], s[kind][metric]
                resolution = max(RESOLUTION * max(a["null_std"], b["null_std"]), TOLERANCE)
                gap = a["excess"] - b["excess"]
                outcome = ("tie" if a["observed"] == b["observed"] else "higher" if gap > resolution else
                           "lower" if gap < -resolution else "unresolved")
                name = f"{kind} {'Gini' if metric == 'gini' else 'top-10% share'} at {_pct(fraction)}"
                outcomes[outcome].append(name)
                cells.append(f"{kind} {'Gini' if metric == 'gini' else 'top-10%'} Mix {a['observed']:.3f}−"
                             f"{a['null_mean']:.3f}={a['excess']:+.3f} vs Stage {b['observed']:.3f}−"
                             f"{b['null_mean']:.3f}={b['excess']:+.3f} ({outcome}, ±{resolution:.3f})")
        sizes = (f"{m['size']:,} entries" if m["size"] == s["size"] else
                 f"Mix {m['size']:,} vs Stage {s['size']:,} entries")
        parts.append(f"at {_pct(fraction)} ({sizes}; neuron entries Mix {m['neurons']['entries']}, Stage "
                     f"{s['neurons']['entries']}): " + ", ".join(cells))
    evidence = ("excess over the placement null (observed − null mean) per matched size: " + "; ".join(parts)
                + f" (holds when Mix is higher on all four at every size, by more than {RESOLUTION:g} null std); "
                + reported)
    why = (f"a set-size mismatch at {', '.join(map(_pct, mismatch))}" if mismatch else None if outcomes["lower"] else
           "; ".join(f"{'a tie' if kind == 'tie' else 'within the null resolution'} in {', '.join(names)}"
                     for kind, names in outcomes.items() if kind in ("tie", "unresolved") and names) or None)
    return _claim("C3", not outcomes["lower"] and not why, evidence, why)


def _relative_loss(block: dict, unablated: dict, task: str, kind: str = "shared") -> float:
    """−drop / unablated accuracy of one ablated set (`shared`'s drop, else the set's mean drop over seeds)."""
    drop = block[kind]["drop" if kind == "shared" else "mean_drop"][task]
    return (0.0 - drop) / unablated[task]  # 0.0 − 0.0 is +0.0: a set that costs nothing shows 0 %, not −0 %


def c4_ablation(ablation: dict) -> dict:
    """`ablation[strategy]` is a run's ablation.json; judged on its `matched` block (a same-size shared set).

    Rule: with shared sets of the same size in both runs, Mix loses a larger share of its OOD-QA accuracy
    (relative loss = −drop / unablated) than Stage and than Mix's own count-matched random sets, and at least
    as large a share of its ID-QA accuracy as Stage; undetermined when the sets differ in size, a run has no
    same-size ablation, or an unablated OOD-QA or ID-QA accuracy is 0 (a floor: relative loss undefined).
    Top_BIO∖Shared and Top_QA∖Shared controls and the sets at k are reported, not judged."""
    mix, stage = ablation["mix"], ablation["stage"]
    at_k = (f"reported only, at k={mix['k']:g}% (sets of different sizes): OOD-QA drop Mix "
            f"{mix['shared']['drop']['qa_ood']:+.3f} ({mix['shared']['size']:,} entries) vs Stage "
            f"{stage['shared']['drop']['qa_ood']:+.3f} ({stage['shared']['size']:,})")
    m, s = mix.get("matched"), stage.get("matched")
    if not m or not s:
        return _claim("C4", False, at_k, "no same-size ablation in "
                      + " and ".join(n for n, b in (("Mix", m), ("Stage", s)) if not b) + "; rerun `ablation`")
    u = {"mix": mix["unablated"], "stage": stage["unablated"]}
    floors = [f"{n.capitalize()}'s unablated {t.replace('qa_', '').upper()}-QA is 0" for n in ("mix", "stage")
              for t in ("qa_ood", "qa_id") if not u[n][t]]
    sizes = {n: b["shared"]["size"] for n, b in (("mix", m), ("stage", s))}
    head = (f"same-size shared sets ({_pct(m['fraction'])} of the tracked entries: Mix {sizes['mix']:,}, Stage "
            f"{sizes['stage']:,} entries; rank depth Mix {m['depth']:,}, Stage {s['depth']:,})")
    if floors or sizes["mix"] != sizes["stage"] or m["fraction"] != s["fraction"]:
        why = (f"a floor: {', '.join(floors)}, so a relative loss is undefined" if floors else
               f"a set-size mismatch (Mix {sizes['mix']:,} vs Stage {sizes['stage']:,} entries)")
        return _claim("C4", False, f"{head}; {at_k}", why)
    rel = {n: {t: _relative_loss(b, u[n], t) for t in ("qa_ood", "qa_id")} for n, b in (("mix", m), ("stage", s))}
    random = _relative_loss(m, u["mix"], "qa_ood", "random")

    def controls(b: dict, n: str) -> str:
        names = (("random", "random"), ("top_bio_only", "Top_BIO∖Shared"), ("top_qa_only", "Top_QA∖Shared"))
        return ", ".join(f"{label} {_relative_loss(b, u[n], 'qa_ood', kind):.0%} ({b[kind]['size']:,})"
                         for kind, label in names)

    evidence = (f"{head}: OOD-QA relative loss Mix {rel['mix']['qa_ood']:.1%} (drop "
                f"{m['shared']['drop']['qa_ood']:+.3f} of {u['mix']['qa_ood']:.3f}) vs Stage "
                f"{rel['stage']['qa_ood']:.1%} (drop {s['shared']['drop']['qa_ood']:+.3f} of "
                f"{u['stage']['qa_ood']:.3f}); ID-QA relative loss Mix "
                f"{rel['mix']['qa_id']:.1%} (drop {m['shared']['drop']['qa_id']:+.3f}) vs Stage "
                f"{rel['stage']['qa_id']:.1%} (drop {s['shared']['drop']['qa_id']:+.3f}); controls, OOD-QA relative "
                f"loss (entries), mean of {mix['seeds']} seeds: Mix {controls(m, 'mix')}; Stage {controls(s, 'stage')}"
                f" (holds when Mix's OOD-QA relative loss exceeds Stage's and Mix's random sets', and its ID-QA "
                f"relative loss is at least Stage's); {at_k}")
    holds = (rel["mix"]["qa_ood"] > rel["stage"]["qa_ood"] and rel["mix"]["qa_ood"] > random
             and rel["mix"]["qa_id"] >= rel["stage"]["qa_id"] - TOLERANCE)
    return _claim("C4", holds, evidence)


def smallest_reaching(graft: dict) -> dict | None:
    """C5's measure of one run (its graft.json or summary entry): the sweep point of smallest |γ|₀ whose grafted
    ID-QA reaches RECOVER × θ_ft's on the same people, or None."""
    full = (graft.get("finetuned") or {}).get("qa_id")
    points = [p for p in graft.get("sweep") or [] if full and p["accuracy"]["qa_id"] >= RECOVER * full - TOLERANCE]
    return min(points, key=lambda p: p["size"], default=None)


def c5_grafting(graft: dict, accuracy: dict) -> dict:
    """`graft[strategy]` is a run's graft.json (with its `sweep` over base-patch sparsities and `finetuned`, θ_ft's
    accuracy on the same people); `accuracy[strategy]` its final evaluation (reported).

    Rule: per strategy, the smallest |γ|₀ over the sweep whose grafted ID-QA reaches RECOVER × θ_ft's; holds
    when Mix's is smaller than Stage's or only Mix reaches the target, does not hold when Stage's is smaller or
    only Stage reaches it; undetermined when neither reaches it, both first reach it from the same base-patch
    sparsity (their sizes then differ only by the search's flips, below the sweep's resolution), the sweeps
    differ, or θ_ft's ID-QA is 0."""
    sweeps = {s: graft[s].get("sweep") or [] for s in ("mix", "stage")}
    full = {s: (graft[s].get("finetuned") or {}).get("qa_id") for s in ("mix", "stage")}
    parameters = graft["mix"]["parameters"] or 1  # a model without parameters has nothing to graft

    def line(s: str) -> str:
        points = ", ".join(f"s={p['sparsity']:g}: |γ|₀ {p['size']:,} ({p['size'] / parameters:.1%}) ID-QA "
                           f"{p['accuracy']['qa_id']:.3f}" for p in sweeps[s])
        best = smallest_reaching(graft[s])
        return (f"{s.capitalize()} (θ_ft ID-QA {full[s] if full[s] is None else f'{full[s]:.3f}'} on the graft's "
                f"people, {accuracy[s]['qa_id']:.3f} on all): {points or 'no sweep'}; smallest reaching "
                + ("none" if best is None else f"{best['size']:,} ({best['size'] / parameters:.1%}, "
                                               f"s={best['sparsity']:g})"))

    evidence = (f"target: grafted ID-QA ≥ {RECOVER:g} × θ_ft's; " + "; ".join(map(line, ("mix", "stage")))
                + " (holds when Mix's smallest mask reaching the target is smaller than Stage's, or only Mix's "
                  "reaches it)")
    same = [p["sparsity"] for p in sweeps["mix"]] == [p["sparsity"] for p in sweeps["stage"]]
    mix, stage = smallest_reaching(graft["mix"]), smallest_reaching(graft["stage"])
    both = mix is not None and stage is not None
    why = ("no sparsity sweep in graft.json; rerun `graft`" if not sweeps["mix"] or not sweeps["stage"] else
           "the two sweeps were not run at the same sparsities" if not same else
           "a floor: θ_ft's ID-QA is 0" if not full["mix"] or not full["stage"] else
           "neither strategy's graft reaches the target at any swept sparsity" if mix is None and stage is None else
           f"a tie: both first reach the target from the base patch at s={mix['sparsity']:g}, so their sizes differ "
           f"only by the search's flips (a finer sweep could separate them)"
           if both and mix["sparsity"] == stage["sparsity"] else None)
    holds = mix is not None and (stage is None or mix["size"] < stage["size"])
    return _claim("C5", holds, evidence, why)


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
