"""C7's rule (`study/claims/c7_consistency.py`): centred gaps, retrieval top-1 and the gradient-probe gap, Mix vs
Stage with their bootstrap standard errors, table-driven and by property.

Each row builds the keys the rule reads from a run's consistency.json: per position `representation.<p>.all
.over_layers` and `gradient_probe.over_layers.all.gap`, each {value, se}.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.study.claims import c7_consistency
from factrecall.study.claims.verdict import (
    AGAINST,
    FAILS,
    FOR,
    HOLDS,
    NOT_MEASURABLE,
    UNDETERMINED,
    UNRESOLVED,
    Z,
    swap,
)

FLIP = {HOLDS: FAILS, FAILS: HOLDS, UNDETERMINED: UNDETERMINED}
CENTRED_SUBJECT, CENTRED_ANSWER = "centred gap at the subject", "centred gap at the answer"
TOP1_SUBJECT, TOP1_ANSWER = "retrieval top-1 at the subject", "retrieval top-1 at the answer"
PROBE = "gradient probe gap"


def pair(value: float, se: float = 0.01) -> dict:
    return {"value": value, "se": se}


def run_json(centred=(0.9, 0.9), top1=(1.0, 1.0), probe: float | None = 0.2, gap=(0.6, 0.6), se=0.01) -> dict:
    """A run's consistency.json as far as C7 reads it: (subject, answer) per measure; probe None = no probe."""
    representation = {p: {"all": {"over_layers": {"gap": pair(gap[i], se), "centred_gap": pair(centred[i], se),
                                                   "top1": pair(top1[i], se), "mrr": pair(top1[i], se)}}}
                      for i, p in enumerate(("subject", "answer"))}
    return {"people": 200, "representation": representation, "trace_direction": {"all": 0.1},
            "gradient": {"all": -0.02},
            "gradient_probe": None if probe is None else {"over_layers": {"all": {"gap": pair(probe, se)}}}}


def c7(mix: dict, stage: dict) -> dict:
    return {"consistency": {"mix": mix, "stage": stage}}


REVIEW = c7(run_json(centred=(0.920, 0.876), top1=(1.000, 0.993), gap=(0.593, 0.5)),  # issue 24's default study
            run_json(centred=(0.695, 0.620), top1=(0.924, 0.889), gap=(0.611, 0.4), probe=0.1))

ROWS = [  # (id, evidence, verdict, {measure: outcome}, words the why or evidence repeat)
    ("holds_where_the_uncentred_gap_is_lower", REVIEW, HOLDS,
     {CENTRED_SUBJECT: FOR, CENTRED_ANSWER: FOR, TOP1_SUBJECT: FOR, TOP1_ANSWER: FOR, PROBE: FOR},
     ("5 measures for", "subject Mix +0.920 ± 0.010 vs Stage +0.695 ± 0.010",
      "reported only: uncentred gap subject Mix +0.593 ± 0.010 vs Stage +0.611 ± 0.010")),
    ("fails", c7(run_json(centred=(0.5, 0.5), top1=(0.8, 0.8), probe=0.1), run_json()), FAILS,
     {CENTRED_SUBJECT: AGAINST, PROBE: AGAINST}, ("5 measures against",)),
    ("one_measure_within_its_resolution", c7(run_json(probe=0.2 + Z * 0.01), run_json(centred=(0.5, 0.5),
                                                                                      top1=(0.8, 0.8))), HOLDS,
     {PROBE: UNRESOLVED, CENTRED_ANSWER: FOR}, ("4 measures for", "1 of 5 not resolved")),
    ("a_larger_se_unresolves_it", c7(run_json(centred=(0.93, 0.93), se=0.05), run_json(centred=(0.85, 0.85))),
     UNDETERMINED, {CENTRED_SUBJECT: UNRESOLVED, PROBE: UNRESOLVED}, ("no measure is resolved",)),
    ("measures_disagree", c7(run_json(centred=(0.95, 0.95), probe=0.05), run_json(centred=(0.7, 0.7))), UNDETERMINED,
     {CENTRED_SUBJECT: FOR, PROBE: AGAINST}, ("resolved measures disagree",)),
    ("missing_probe_is_not_measurable", c7(run_json(centred=(0.95, 0.95)), run_json(centred=(0.7, 0.7), probe=None)),
     HOLDS, {PROBE: NOT_MEASURABLE, CENTRED_SUBJECT: FOR, TOP1_SUBJECT: UNRESOLVED},
     ("2 measures for", "vs Stage n/a", "3 of 5 not resolved")),
    ("old_json_without_standard_errors", c7({"people": 200, "representation": {"subject": {"all": {"gap": [0.1]}}},
                                             "gradient": {}}, run_json()), UNDETERMINED,
     {CENTRED_SUBJECT: NOT_MEASURABLE, CENTRED_ANSWER: NOT_MEASURABLE, PROBE: NOT_MEASURABLE},
     ("no measure is resolved", "not measurable")),
]


@pytest.mark.parametrize("evidence, verdict, outcomes, words", [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_c7(evidence, verdict, outcomes, words):
    v = c7_consistency.rule(evidence)
    assert v.verdict == verdict, v.why
    got = {m.name: m.outcome for m in v.measures}
    assert {name: got[name] for name in outcomes} == outcomes
    assert all(w in v.evidence + v.why for w in words), (words, v.why, v.evidence)


def test_runs_analysed_on_different_people_are_not_compared():
    v = c7_consistency.rule(c7(run_json(centred=(0.95, 0.95)), {**run_json(centred=(0.7, 0.7)), "people": 100}))
    assert v.verdict == UNDETERMINED and v.why == "the runs were analysed on different numbers of people (Mix 200, Stage 100)"


def test_the_missing_probe_names_the_run():
    v = c7_consistency.rule(c7(run_json(), run_json(probe=None)))
    assert next(m for m in v.measures if m.name == PROBE).unmeasurable == "Stage: not measured"


def test_resolution_is_z_times_the_combined_se():
    v = c7_consistency.rule(c7(run_json(se=0.03), run_json(se=0.04)))
    assert all(m.resolution == pytest.approx(Z * 0.05) for m in v.measures)


values = st.floats(-1, 1)
ses = st.floats(0, 0.2)


@settings(max_examples=300)
@given(st.lists(values, min_size=10, max_size=10), st.lists(ses, min_size=10, max_size=10),
       st.booleans(), st.booleans())
def test_c7_is_antisymmetric(v, s, mix_probe, stage_probe):
    def run(i: int, probe: bool) -> dict:
        r = run_json(centred=(v[i], v[i + 1]), top1=(v[i + 2], v[i + 3]), probe=v[i + 4] if probe else None)
        for j, (p, key) in enumerate((("subject", "centred_gap"), ("answer", "centred_gap"), ("subject", "top1"),
                                      ("answer", "top1"))):
            r["representation"][p]["all"]["over_layers"][key]["se"] = s[i + j]
        if probe:
            r["gradient_probe"]["over_layers"]["all"]["gap"]["se"] = s[i + 4]
        return r

    e = c7(run(0, mix_probe), run(5, stage_probe))
    assert c7_consistency.rule(swap(e)).verdict == FLIP[c7_consistency.rule(e).verdict]


def test_c7_ladders_read_the_summary_entry():
    summary = {"consistency": {s: c7_consistency.consistency_headline(r) for s, r in REVIEW["consistency"].items()}}
    ladder = dict(c7_consistency.CLAIM.ladder)
    assert ladder["centred representation gap at the subject"](summary, "mix") == pytest.approx(0.920)
    assert ladder["gradient probe gap"](summary, "stage") == pytest.approx(0.1)
    no_probe = {"consistency": {"mix": c7_consistency.consistency_headline(run_json(probe=None))}}
    assert ladder["gradient probe gap"](no_probe, "mix") is None


def test_c7_is_a_comparison_of_the_two_runs():
    assert c7_consistency.CLAIM.compares and c7_consistency.CLAIM.needs == ("consistency",)
