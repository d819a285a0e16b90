"""The verdict framework (`study/claims/verdict.py`) and the rules of C1, C2, C4a and C4b, table-driven and by
property. C3, C5, C6 and C7 have their own files (tests/test_claim_<id>.py).

Each row builds only the keys a rule reads, states the verdict, and names numbers the evidence or the one-line
reason must repeat. The antisymmetry law: a Mix-vs-Stage rule turns "holds" into "does not hold" when the runs are
swapped and keeps "undetermined".
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.study.claims import CLAIMS, STATEMENTS, c1_recall, c2_shared_size, c4_ablation, check_claims
from factrecall.study.claims.verdict import (
    AGAINST,
    FAILS,
    FOR,
    HOLDS,
    NOT_MEASURABLE,
    UNDETERMINED,
    UNRESOLVED,
    Claim,
    Measure,
    fit_gate,
    judge,
    swap,
)

VERDICT = {True: HOLDS, False: FAILS, None: UNDETERMINED}
FLIP = {HOLDS: FAILS, FAILS: HOLDS, UNDETERMINED: UNDETERMINED}


def fit(**over) -> dict:
    return {"qa_id": 0.95, "qa_ood": 0.5, "bio": 0.95, "bio_after_bio_training": 0.99,
            "n": {"qa_id": 3000, "qa_ood": 3000, "bio": 2000}} | over


# ---- the framework -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("measure, outcome", [
    (Measure("m", 0.5, 0.2, 0.1), FOR), (Measure("m", 0.2, 0.5, 0.1), AGAINST), (Measure("m", 0.5, 0.45, 0.1), UNRESOLVED),
    (Measure("m", 0.5, 0.4, 0.1), UNRESOLVED),  # exactly the resolution does not count
    (Measure("m", 3, 3), UNRESOLVED), (Measure("m", 4, 3), FOR),  # counts: any difference resolves
    (Measure("m", 2, 5, 1, lower_is_for=True), FOR), (Measure("m", None, 5), NOT_MEASURABLE),
    (Measure("m", 9, 1, unmeasurable="saturated"), NOT_MEASURABLE),
])
def test_measure_outcome(measure, outcome):
    assert measure.outcome == outcome
    assert measure.swapped().outcome == {FOR: AGAINST, AGAINST: FOR}.get(outcome, outcome)


@pytest.mark.parametrize("outcomes, verdict, words", [
    ((FOR, FOR, UNRESOLVED), HOLDS, "2 measures for"),
    ((AGAINST,), FAILS, "1 measure against"),
    ((FOR, AGAINST, FOR), UNDETERMINED, "resolved measures disagree"),
    ((UNRESOLVED, NOT_MEASURABLE), UNDETERMINED, "no measure is resolved"),
    ((), UNDETERMINED, "no measure is resolved"),
    ((FOR,) * 11 + (AGAINST,), UNDETERMINED, "disagree"),  # one cell of twelve never decides "does not hold"
])
def test_judge(outcomes, verdict, words):
    make = {FOR: Measure("f", 1, 0), AGAINST: Measure("a", 0, 1), UNRESOLVED: Measure("u", 1, 1),
            NOT_MEASURABLE: Measure("n", None, 1)}
    result = judge([make[o] for o in outcomes])
    assert result.verdict == verdict and words in result.why


measures = st.lists(st.builds(Measure, st.just("m"), st.one_of(st.none(), st.floats(-2, 2)),
                              st.one_of(st.none(), st.floats(-2, 2)), st.floats(0, 1), st.booleans()), max_size=8)


@given(measures)
def test_judge_is_antisymmetric(ms):
    assert judge([m.swapped() for m in ms]).verdict == FLIP[judge(ms).verdict]


@pytest.mark.parametrize("mix, stage, reason", [
    (fit(), fit(), None),
    (fit(qa_id=0.9), fit(bio=0.9), None),  # at FIT fits
    (fit(), fit(bio=0.352), "Stage's final BIO 0.352"),
    (fit(), fit(bio=0.352), "Stage forgot its biographies (0.990 after its BIO phase, 0.352 at the end)"),
    (fit(qa_id=0.12, bio=0.067, bio_after_bio_training=0.067), fit(), "Mix's ID-QA 0.120, Mix's final BIO 0.067"),
])
def test_fit_gate(mix, stage, reason):
    gate = fit_gate({"mix": mix, "stage": stage})
    assert (gate is None) if reason is None else (reason in gate and "did not fit" in gate)


def test_check_gates_every_verdict_and_keeps_the_measured_one():
    claim = Claim("CX", "x", ("shared",), lambda e: judge([Measure("m", 2, 1)], "numbers"))
    fits = claim.check({"accuracy": {"mix": fit(), "stage": fit()}, "shared": {}})
    assert fits["verdict"] == HOLDS and fits["measured"]["verdict"] == HOLDS and fits["evidence"] == "numbers"
    unfit = claim.check({"accuracy": {"mix": fit(), "stage": fit(bio=0.35)}, "shared": {}})
    assert unfit["verdict"] == UNDETERMINED and unfit["holds"] is None and "did not fit" in unfit["why"]
    assert unfit["measured"] == {"verdict": HOLDS, "why": fits["why"]} and unfit["measures"][0]["outcome"] == FOR
    missing = claim.check({"accuracy": {"mix": fit(), "stage": fit()}})
    assert missing["verdict"] == UNDETERMINED and "shared did not run" in missing["why"]


def test_claims_are_declared_once():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids)) and list(STATEMENTS) == ids
    assert all(c.ladder and c.needs and c.statement for c in CLAIMS)


def test_a_smoke_study_that_learned_nothing_gets_no_verdict():
    """Every claim is undetermined when the models did not fit (the review's smoke study: accuracies ≤ 0.12)."""
    poor = fit(qa_id=0.12, qa_ood=0.0, bio=0.067, bio_after_bio_training=0.067)
    entries = check_claims({"accuracy": {"mix": poor, "stage": poor}})
    assert {e["verdict"] for e in entries} == {UNDETERMINED}
    assert all("did not fit" in e["why"] for e in entries)


# ---- C1 -----------------------------------------------------------------------------------------------------------

def c1(mix_ood, stage_ood, n=3000) -> dict:
    return {"accuracy": {"mix": fit(qa_ood=mix_ood, n={"qa_ood": n}), "stage": fit(qa_ood=stage_ood, n={"qa_ood": n})}}


@pytest.mark.parametrize("evidence, holds, words", [
    pytest.param(c1(0.98, 0.08), True, ("+0.900", "0.980", "0.080"), id="far_above"),
    pytest.param(c1(0.08, 0.98), False, ("-0.900",), id="stage_far_above"),
    pytest.param(c1(0.70, 0.40, n=0), True, ("+0.300",), id="gap_0.3_from_fractions_at_the_margin"),
    pytest.param(c1(0.70, 0.40, n=10**9), None, ("straddles 0.3",), id="at_the_margin_with_any_noise"),
    pytest.param(c1(0.72, 0.40, n=100), None, ("straddles 0.3",), id="small_sample_straddles"),
    pytest.param(c1(0.45, 0.40), False, ("below 0.3",), id="gap_small"),
    pytest.param(c1(0.98, 0.08, n=0), True, ("± 0.000",), id="no_counts_no_interval"),
])
def test_c1(evidence, holds, words):
    v = c1_recall.rule(evidence)
    assert v.verdict == VERDICT[holds]
    assert all(w in v.evidence + v.why for w in words), (words, v.evidence, v.why)


def test_c1_judges_bio_at_the_end_of_training():
    e = c1(0.98, 0.08)
    e["accuracy"]["stage"] = fit(qa_ood=0.08, bio=0.352)
    entry = c1_recall.CLAIM.check(e)
    assert entry["verdict"] == UNDETERMINED and "Stage forgot its biographies" in entry["why"]
    assert entry["measured"]["verdict"] == HOLDS


@given(st.floats(0, 1), st.floats(0, 1), st.integers(0, 5000))
def test_c1_holds_turns_when_swapped(a, b, n):
    e = c1(a, b, n)
    if c1_recall.rule(e).verdict == HOLDS:
        assert c1_recall.rule(swap(e)).verdict == FAILS


# ---- C2 -----------------------------------------------------------------------------------------------------------

def shared_json(n: int, sweep: tuple, ks=(0.5, 5.0, 10.0)) -> dict:
    return {"k": 1.0, "shared": n, "chance": 10.0, "enrichment": n / 10, "per_tensor": {"shared": n + 1},
            "sweep": [{"k": k, "global": {"shared": m}} for k, m in zip(ks, sweep)]}


def c2(mix=500, stage=100, mix_sweep=(600, 700, 800), stage_sweep=(200, 300, 400), **kw) -> dict:
    return {"shared": {"mix": shared_json(mix, mix_sweep, **kw), "stage": shared_json(stage, stage_sweep)}}


@pytest.mark.parametrize("evidence, holds, words", [
    pytest.param(c2(), True, ("Mix 500 vs Stage 100", "k=5%: 700 vs 300", "4 measures for"), id="holds"),
    pytest.param(c2(100, 500, (200, 300, 400), (600, 700, 800)), False, ("4 measures against",), id="stage_larger"),
    pytest.param(c2(mix=100), True, ("3 measures for", "1 of 4 not resolved"), id="default_k_tie_is_unresolved"),
    pytest.param(c2(mix_sweep=(150, 700, 800)), None, ("disagree", "k=0.5%"), id="one_k_the_other_way"),
    pytest.param(c2(100, 100, (200, 300, 400), (200, 300, 400)), None, ("no measure is resolved",), id="all_tie"),
    pytest.param(c2(mix_sweep=(600, 700), ), None, ("not measured at the same k",), id="shorter_sweep"),
    pytest.param({"shared": {"mix": shared_json(500, (600, 700, 800), ks=(10.0, 0.5, 5.0)) | {"sweep": [
        {"k": k, "global": {"shared": m}} for k, m in ((10.0, 800), (0.5, 600), (5.0, 700))]},
        "stage": shared_json(100, (200, 300, 400))}}, True, ("k=0.5%: 600 vs 200", "k=10%: 800 vs 400"),
        id="paired_by_k_not_position"),
])
def test_c2(evidence, holds, words):
    v = c2_shared_size.rule(evidence)
    assert v.verdict == VERDICT[holds], v.why
    assert all(w in v.evidence + v.why for w in words), (words, v.evidence, v.why)


@given(st.lists(st.integers(0, 50), min_size=4, max_size=4), st.lists(st.integers(0, 50), min_size=4, max_size=4))
def test_c2_is_antisymmetric(m, s):
    e = c2(m[0], s[0], tuple(m[1:]), tuple(s[1:]))
    assert c2_shared_size.rule(swap(e)).verdict == FLIP[c2_shared_size.rule(e).verdict]


# ---- C4a, C4b -----------------------------------------------------------------------------------------------------

def block(shared_drop: float, random_drops=(-0.05, -0.06, -0.04), size=1000, p0=0.8) -> dict:
    return {"fraction": 0.02, "size": size, "depth": 5000,
            "shared": {"size": size, "accuracy": {"qa_ood": p0 + shared_drop}, "change": {"qa_ood": shared_drop,
                                                                                         "qa_id": -0.01}},
            "random": {"size": size, "runs": [{"change": {"qa_ood": d}} for d in random_drops],
                       "mean_change": {"qa_ood": sum(random_drops) / len(random_drops)}},
            **{k: {"size": size, "mean_change": {"qa_ood": -0.1}} for k in ("top_bio_only", "top_qa_only")}}


def ablation(shared_drop, random_drops=(-0.05, -0.06, -0.04), p0=0.8, n=1000, size=1000) -> dict:
    return {"k": 5.0, "unablated": {"qa_ood": p0, "qa_id": 1.0}, "n": {"qa_ood": n},
            "matched": block(shared_drop, random_drops, size, p0)}


def c4(mix: dict, stage: dict) -> dict:
    return {"ablation": {"mix": mix, "stage": stage}}


@pytest.mark.parametrize("evidence, holds, words", [
    pytest.param(c4(ablation(-0.4), ablation(-0.1)), True, ("shared 50.0%", "random 6.2%"), id="costs_more"),
    pytest.param(c4(ablation(-0.05), ablation(-0.1)), None, ("no measure is resolved",), id="within_seed_spread"),
    pytest.param(c4(ablation(-0.05, (-0.2, -0.25, -0.3)), ablation(-0.1)), False, ("1 measure against",),
                 id="random_costs_more"),
    pytest.param(c4(ablation(-0.4, p0=0.0), ablation(-0.1)), None, ("a floor",), id="floor"),
    pytest.param(c4(ablation(-0.4), {"unablated": {}, "k": 5.0}), None, ("no same-size ablation in Stage",),
                 id="old_json"),
])
def test_c4a(evidence, holds, words):
    v = c4_ablation.rule_a(evidence)
    assert v.verdict == VERDICT[holds], v.why
    assert all(w in v.evidence + v.why for w in words), (words, v.evidence, v.why)


@pytest.mark.parametrize("evidence, holds, words", [
    pytest.param(c4(ablation(-0.4), ablation(-0.1)), True, ("ratio Mix 8.00",), id="ratio_higher"),
    pytest.param(c4(ablation(-0.1), ablation(-0.4)), False, ("1 measure against",), id="ratio_lower"),
    pytest.param(c4(ablation(-0.4), ablation(-0.3, (-0.2, -0.25, -0.22))), None,
                 ("Stage: random sets alone cost 28% > 15%",), id="stage_fragile"),
    pytest.param(c4(ablation(-0.3, (-0.2, -0.25, -0.22)), ablation(-0.1)), None, ("Mix: random sets alone cost",),
                 id="mix_fragile_symmetric"),
    pytest.param(c4(ablation(-0.12), ablation(-0.1)), None, ("no measure is resolved",), id="within_interval"),
    pytest.param(c4(ablation(-0.4, (0.0, 0.0, 0.0)), ablation(-0.1)), None, ("within its uncertainty of 0",),
                 id="random_costs_nothing_the_ratio_is_unbounded"),
    pytest.param(c4(ablation(-0.4, size=1000), ablation(-0.1, size=999)), None, ("the same-size sets differ",),
                 id="size_mismatch"),
])
def test_c4b(evidence, holds, words):
    v = c4_ablation.rule_b(evidence)
    assert v.verdict == VERDICT[holds], v.why
    assert all(w in v.evidence + v.why for w in words), (words, v.evidence, v.why)


drops = st.floats(-0.8, 0.0)


@settings(max_examples=200)
@given(drops, st.lists(drops, min_size=1, max_size=4), drops, st.lists(drops, min_size=1, max_size=4),
       st.sampled_from([0.0, 0.5, 0.8]), st.integers(0, 3000))
def test_c4b_is_antisymmetric(ms, mr, ss, sr, p0, n):
    e = c4(ablation(ms, tuple(mr), p0=p0, n=n), ablation(ss, tuple(sr), p0=0.8, n=n))
    assert c4_ablation.rule_b(swap(e)).verdict == FLIP[c4_ablation.rule_b(e).verdict]


def test_c4_ladders_read_the_summary_entry():
    summary = {"ablation": {"mix": {"unablated": {"qa_ood": 0.8}, "matched": {"shared": {"qa_ood": -0.4},
                                                                              "random": {"qa_ood": -0.08}}}}}
    ladders = {label: get for c in CLAIMS if c.id in ("C4a", "C4b") for label, get in c.ladder}
    values = {label: get(summary, "mix") for label, get in ladders.items()}
    assert sorted(values.values()) == pytest.approx([0.5, 5.0])
    assert all(get(summary, "stage") is None for get in ladders.values())
    assert not math.isnan(sum(values.values()))


def _evaluation(bio_first: float, bio: float, qa_id: float) -> dict:
    return {"phases": {"bio": {"bio": {"accuracy": bio_first}}, "qa": {}}, "bio": {"accuracy": bio},
            "qa_id": {"accuracy": qa_id}}


@pytest.mark.parametrize("first, final, qa_id, words", [
    (0.999, 0.964, 1.0, []),
    (0.412, 0.400, 1.0, ["BIO accuracy 0.412 after the BIO training is below 0.9: the model has not memorised the "
                         "biographies in 40 BIO micro-batches; raise --bio-epochs (now 20) or --lr (now 0.002)"]),
    (0.999, 0.352, 1.0, ["BIO accuracy fell from 0.999 to 0.352 in the QA training (below 0.9): the run forgot its "
                         "biographies; lower --qa-phase-lr (now 0.002), as a study's [stage_arms] does"]),
    (0.999, 0.999, 0.5, ["ID-QA accuracy 0.500 is below 0.9: raise --qa-epochs (now 20)"]),
    (0.900, 0.900, 0.9, []),  # at the threshold: fits
])
def test_fit_warnings_say_what_to_change(first, final, qa_id, words):
    from factrecall.study.claims.verdict import fit_warnings

    train = {"bio_epochs": 20, "bio_batch_size": 32, "lr": 2e-3, "qa_phase_lr": 0.0, "qa_epochs": 20}
    assert fit_warnings(_evaluation(first, final, qa_id), train, bios=60) == words
