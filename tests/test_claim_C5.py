"""C5 (grafting needs fewer parameters for Mix): the bracket rule, table-driven and by property.

Each row builds graft.json's keys the rule reads: the bisection's bracket ({miss, hit}: {sparsity, size,
converged}) over `traced` entries, `finetuned` (θ_ft on the report people), `recover`, and the searched points.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.analysis.registry import REGISTRY
from factrecall.study.claims import c5_grafting
from factrecall.study.claims.verdict import FAILS, HOLDS, UNDETERMINED, swap

FLIP = {HOLDS: FAILS, FAILS: HOLDS, UNDETERMINED: UNDETERMINED}
TRACED = 1000


def graft(miss: int, hit: int, *, hit_converged: bool = True, miss_converged: bool = True, qa_id: float = 1.0,
          recover: float = 0.9, traced: int = TRACED) -> dict:
    """A graft.json whose bracket is [miss, hit] entries; sparsities equal sizes / traced; s = 1 is θ_ft itself."""
    def end(size: int, converged: bool) -> dict:
        return {"sparsity": size / traced, "size": size, "converged": converged}

    ends = {"miss": end(miss, miss_converged), "hit": end(hit, hit_converged)}
    sweep = [{"sparsity": e["sparsity"], "size": e["size"], "best_step": 3, "steps_run": 10 if e["converged"] else 40,
              "converged": e["converged"], "accuracy": {"qa_id": qa_id * (0.95 if name == "hit" else 0.5)}}
             for name, e in ends.items() if 0 < e["sparsity"] < 1]
    return {"traced": traced, "recover": recover, "finetuned": {"qa_id": qa_id, "qa_ood": 0.1, "bio": 0.9},
            "people": {"selection": 125, "report": 125, "train_questions": 750},
            "n": {"qa_id": 600, "qa_ood": 600, "bio": 1200}, "sweep": sweep,
            "bracket": {**ends, "width": (hit - miss) / traced}}


def evidence(mix: dict, stage: dict) -> dict:
    return {"graft": {"mix": mix, "stage": stage}}


ROWS = {
    "Mix's bracket entirely below Stage's": (graft(280, 300), graft(340, 360), HOLDS,
                                             "Mix reaches 90% of θ_ft's ID-QA with 28.0%–30.0% of the traced "
                                             "entries, Stage with 34.0%–36.0%"),
    "entirely above": (graft(340, 360), graft(280, 300), FAILS, "Mix reaches 90% of θ_ft's ID-QA with 34.0%–36.0%"),
    "overlapping brackets": (graft(280, 300), graft(295, 315), UNDETERMINED,
                             "a tie within the bisection's resolution"),
    "brackets that touch": (graft(280, 300), graft(300, 320), UNDETERMINED, "a tie within the bisection's resolution"),
    "only Mix reaches the target below θ_ft itself": (graft(280, 300), graft(985, TRACED), HOLDS,
                                                      "Stage only as θ_ft itself (missing with 98.5%)"),
    "only Stage reaches it": (graft(985, TRACED), graft(280, 300), FAILS, "Mix reaches 90% of θ_ft's ID-QA only as "
                                                                          "θ_ft itself"),
    "neither reaches it": (graft(990, TRACED), graft(985, TRACED), UNDETERMINED, "a tie"),
    "θ_ft answers no report ID question": (graft(280, 300, qa_id=0.0), graft(340, 360), UNDETERMINED,
                                           "a floor: Mix's θ_ft answers no ID question"),
    "a first hit from an unconverged search": (graft(280, 300), graft(340, 360, hit_converged=False), UNDETERMINED,
                                               "Stage's first hit (s = 0.36) comes from a search whose kept step is "
                                               "its last"),
    "an unconverged miss is reported, not gating": (graft(280, 300, miss_converged=False), graft(340, 360), HOLDS,
                                                    "28.0%–30.0%"),
    "no bisection (an older graft.json)": ({k: v for k, v in graft(280, 300).items() if k != "bracket"},
                                           graft(340, 360), UNDETERMINED, "Mix's graft.json has no bisection"),
    "different targets": (graft(280, 300), graft(340, 360, recover=0.8), UNDETERMINED, "different targets"),
    "different traced counts compare fractions": (graft(280, 300), graft(680, 720, traced=2000), HOLDS,
                                                  "Stage with 34.0%–36.0%"),
}


@pytest.mark.parametrize("name", ROWS)
def test_rule(name):
    mix, stage, verdict, words = ROWS[name]
    result = c5_grafting.rule(evidence(mix, stage))
    assert result.verdict == verdict, result.why
    assert words in result.why, result.why
    assert c5_grafting.rule(swap(evidence(mix, stage))).verdict == FLIP[verdict]
    assert "\n" not in result.why and result.why.count(". ") == 0  # one sentence


def test_evidence_lists_every_searched_point():
    result = c5_grafting.rule(evidence(graft(280, 300, miss_converged=False), graft(340, 360)))
    assert "s=0.28: 28.0% ID-QA 0.500 (step 3 of 40, unconverged)" in result.evidence
    assert "s=0.36: 36.0% ID-QA 0.950 (step 3 of 10)" in result.evidence
    assert "θ_ft ID-QA 1.000 on 600 questions of the report half, 125 people" in result.evidence


def test_fit_gate_overrides_the_rule():
    low = {"qa_id": 0.1, "qa_ood": 0.0, "bio": 0.1, "bio_after_bio_training": 0.1}
    entry = c5_grafting.CLAIM.check(evidence(graft(280, 300), graft(340, 360))
                                    | {"accuracy": {"mix": low, "stage": low}})
    assert entry["verdict"] == UNDETERMINED and "did not fit" in entry["why"]
    assert entry["measured"]["verdict"] == HOLDS


def _ends() -> st.SearchStrategy:
    """[miss, hit] sizes of a bracket, in entries (a hit at TRACED is θ_ft itself)."""
    return st.tuples(st.integers(0, TRACED), st.integers(0, TRACED)).map(sorted)


@settings(max_examples=400, deadline=None)
@given(mix=_ends(), stage=_ends(), mix_converged=st.booleans(), stage_converged=st.booleans(),
       mix_floor=st.sampled_from([0.0, 0.6, 1.0]), stage_floor=st.sampled_from([0.0, 0.6, 1.0]),
       stage_traced=st.sampled_from([TRACED, 3 * TRACED]))
def test_the_rule_is_antisymmetric(mix, stage, mix_converged, stage_converged, mix_floor, stage_floor, stage_traced):
    """Swapping the runs turns holds into does not hold and back, and keeps undetermined; a verdict is reached only
    when both brackets are measurable and disjoint, in the direction of their order."""
    e = evidence(graft(*mix, hit_converged=mix_converged, qa_id=mix_floor),
                 graft(*(3 * x if stage_traced > TRACED else x for x in stage), hit_converged=stage_converged,
                       qa_id=stage_floor, traced=stage_traced))
    verdict = c5_grafting.rule(e).verdict
    assert c5_grafting.rule(swap(e)).verdict == FLIP[verdict]
    measurable = mix_converged and stage_converged and mix_floor and stage_floor
    expected = (HOLDS if measurable and mix[1] < stage[0] else FAILS if measurable and stage[1] < mix[0]
                else UNDETERMINED)
    assert verdict == expected


def test_ladder_reads_the_first_hit_from_the_summary_entry():
    g = graft(280, 300) | {"sparsity": 0.3, "steps": 10, "lr": 1e7, "best_step": 3, "steps_run": 10,
                           "converged": True, "graft": {"size": 300, "accuracy": {"qa_id": 0.95, "qa_ood": 0.1}},
                           "base_patch": {"size": 300, "accuracy": {"qa_id": 0.9, "qa_ood": 0.1}}}
    summary = {"graft": {"mix": REGISTRY["graft"].summary(g)}}
    (label, getter), = c5_grafting.CLAIM.ladder
    assert getter(summary, "mix") == pytest.approx(0.3) and getter(summary, "stage") is None
    assert summary["graft"]["mix"]["bracket"] == g["bracket"] and summary["graft"]["mix"]["traced"] == TRACED
    assert [p["converged"] for p in summary["graft"]["mix"]["sweep"]] == [True, True]
