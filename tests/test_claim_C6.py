"""C6's rule (`study/claims/c6_heads.py`): shared_size against every other metric on Mix's heads, table-driven
and by property.

Each row builds the keys the rule reads from Mix's heads.json: per metric its `ranking` and both n, the head grid
(shared_size's sufficiency curve) and `random`'s permutations, whose n the median gives.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.analysis.circuit import head_counts, median_n
from factrecall.study.claims import c6_heads
from factrecall.study.claims.verdict import AGAINST, FAILS, FOR, HOLDS, NOT_MEASURABLE, UNDETERMINED, UNRESOLVED

HEADS = [[layer, head] for layer in range(2) for head in range(4)]  # tiny-llama: 2 layers × 4 heads


def rotated(by: int, units: list = HEADS) -> list:
    """A ranking whose top heads differ from every other rotation's."""
    return units[by:] + units[:by]


def metric(n: tuple, ranking: list, units: int) -> dict:
    sufficient, critical = n
    return {"ranking": ranking, "minimal_sufficient": sufficient, "critical": critical,
            "sufficiency": [{"n": n} for n in head_counts(units)]}


def heads_json(ns: dict, random=((7, 4),) * 10, ood=0.98, same_as_ours=(), units_list=HEADS) -> dict:
    """Mix's heads.json: {metric: (minimal sufficient n, critical n)} plus `random`'s permutations; the metrics in
    `same_as_ours` rank the heads as shared_size does."""
    units = len(units_list)
    metrics = {m: metric(n, units_list if m in ("shared_size", *same_as_ours) else rotated(1 + i, units_list), units)
               for i, (m, n) in enumerate(ns.items())}
    permutations = [{"index": i, "ranking": rotated(2 + i, units_list), "minimal_sufficient": s, "critical": c}
                    for i, (s, c) in enumerate(random)]
    metrics["random"] = {**metric((median_n([s for s, _ in random]), median_n([c for _, c in random])),
                                  permutations[0]["ranking"], units), "permutations": permutations}
    return {"mix": {"units": units, "unablated": {"qa_ood": ood}, "metrics": metrics}}


def judged(heads: dict):
    return c6_heads.rule({"heads": heads})


def outcome(verdict, name: str) -> str:
    return next(m.outcome for m in verdict.measures if m.name == name)


ROWS = [  # (id, heads.json, verdict, {measure: outcome}, words the reason or evidence repeats)
    ("holds", heads_json({"shared_size": (6, 1), "qa_size": (6, 1), "delta_norm": (7, 3)}), HOLDS,
     {"critical n: shared_size vs random": FOR, "critical n: shared_size vs qa_size": UNRESOLVED,
      "critical n: shared_size vs delta_norm": FOR},
     ("1 shared_size head halves Mix's OOD-QA; random needs 4 (median of 10)", "random 4 (median of 10: 4, 4")),
    ("loses_by_more_than_a_grid_step", heads_json({"shared_size": (8, 6), "delta_norm": (5, 2)}, random=((6, 3),) * 10),
     FAILS, {"critical n: shared_size vs delta_norm": AGAINST, "sufficient n: shared_size vs random": AGAINST}, ()),
    ("loses_by_exactly_one_step_is_unresolved", heads_json({"shared_size": (6, 2), "delta_norm": (6, 1)}), HOLDS,
     {"critical n: shared_size vs delta_norm": UNRESOLVED, "critical n: shared_size vs random": FOR}, ()),
    ("same_top_n_is_not_measurable_not_a_loss",
     heads_json({"shared_size": (6, 1), "qa_size": (6, 1)}, same_as_ours=("qa_size",)), HOLDS,
     {"critical n: shared_size vs qa_size": NOT_MEASURABLE, "sufficient n: shared_size vs qa_size": NOT_MEASURABLE},
     ("the same top 1 head",)),
    ("a_loss_and_a_win_disagree", heads_json({"shared_size": (6, 1), "delta_norm": (3, 1)}), UNDETERMINED,
     {"sufficient n: shared_size vs delta_norm": AGAINST, "critical n: shared_size vs random": FOR}, ("disagree",)),
    ("random_within_one_step_only", heads_json({"shared_size": (6, 3), "delta_norm": (8, 8)}, random=((7, 4),) * 10),
     UNDETERMINED, {"critical n: shared_size vs random": UNRESOLVED, "critical n: shared_size vs delta_norm": FOR},
     ("no comparison against random is resolved",)),
    ("floor", heads_json({"shared_size": (6, 1)}, ood=0.0), UNDETERMINED, {}, ("a floor",)),
    ("never_reached_ranks_after_every_head", heads_json({"shared_size": (6, 1)}, random=((7, None),) * 10), HOLDS,
     {"critical n: shared_size vs random": FOR}, ("random never does (median of 10)",)),
    ("random_is_the_median_of_its_permutations",  # medians 7 and 4.5: 1 head is 3.5 fewer
     heads_json({"shared_size": (6, 1)}, random=((5, 2),) * 4 + ((7, 4), (7, 5)) + ((8, 8),) * 4), HOLDS,
     {"critical n: shared_size vs random": FOR, "sufficient n: shared_size vs random": UNRESOLVED},
     ("random needs 4.5 (median of 10)",)),
]


@pytest.mark.parametrize("heads, verdict, outcomes, words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_rule(heads, verdict, outcomes, words):
    v = judged(heads)
    assert v.verdict == verdict, v.why
    for name, expected in outcomes.items():
        assert outcome(v, name) == expected, name
    for word in words:
        assert word in " ".join([v.why, v.evidence, *(m.unmeasurable or "" for m in v.measures)])


def test_resolution_is_one_step_of_the_head_grid():
    """672 heads: the grid runs 0–8, 10, 15, 21, …; from 8 one step is 2 heads."""
    units = [[layer, head] for layer in range(28) for head in range(24)]
    near = heads_json({"shared_size": (600, 8), "delta_norm": (600, 10)}, random=((600, 15),) * 10, units_list=units)
    v = judged(near)
    assert outcome(v, "critical n: shared_size vs delta_norm") == UNRESOLVED  # one grid step
    assert outcome(v, "critical n: shared_size vs random") == FOR  # two grid steps
    assert v.verdict == HOLDS


def test_median_n_ranks_never_last():
    assert median_n([3, 1, 2]) == 2 and median_n([1, 2, 3, 4]) == 2.5 and median_n([4, 4]) == 4
    assert median_n([1, None, None]) is None and median_n([1, 2, None]) == 2 and median_n([1, 2, 3, None]) == 2.5


def test_old_heads_json_asks_for_a_rerun():
    heads = heads_json({"shared_size": (6, 1)})
    del heads["mix"]["metrics"]["random"]["permutations"]
    assert "rerun `heads`" in judged(heads).why


NS = st.one_of(st.none(), st.integers(0, 8))


@settings(max_examples=200, deadline=None)
@given(ours=st.tuples(NS, NS), others=st.lists(st.tuples(NS, NS), min_size=1, max_size=4),
       random=st.lists(st.tuples(NS, NS), min_size=1, max_size=10), order=st.randoms(use_true_random=False))
def test_verdict_does_not_depend_on_the_order_of_the_metrics(ours, others, random, order):
    heads = heads_json({"shared_size": ours, **{f"m{i}": n for i, n in enumerate(others)}}, random=random)
    metrics = list(heads["mix"]["metrics"].items())
    order.shuffle(metrics)
    shuffled = {"mix": {**heads["mix"], "metrics": dict(metrics)}}
    a, b = judged(heads), judged(shuffled)
    assert a.verdict == b.verdict
    assert sorted(m.row()["outcome"] for m in a.measures) == sorted(m.row()["outcome"] for m in b.measures)
