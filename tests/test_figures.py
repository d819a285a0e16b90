"""Report figures say what they show: an empty panel says so, equal curves stay apart, no 1e−17 scales."""

import math

from factrecall.report import figures
from factrecall.report.save import literal_text


def test_a_panel_with_no_value_says_so():
    with literal_text():
        fig = figures.per_layer({"probe": {"mix": [math.nan, math.nan], "stage": [None, None]},
                                 "trace": {"mix": [0.1, 0.2], "stage": [0.3, 0.1]}}, "t", "gap")
    empty, drawn = fig.axes
    assert not empty.axison and any(t.get_text() == "not measured here" for t in empty.texts)
    assert drawn.axison and len(drawn.lines) == 2


def test_equal_ablation_changes_read_as_no_change():
    sets = {"shared": {"change": {m: -1.4e-17 for m in ("qa_id", "qa_ood", "bio")}},
            **{n: {"mean_change": dict.fromkeys(("qa_id", "qa_ood", "bio"), 0.0),
                   "std_change": dict.fromkeys(("qa_id", "qa_ood", "bio"), 0.0)}
               for n in ("random", "top_bio_only", "top_qa_only")}, "k": 5.0}
    with literal_text():
        fig = figures.ablation({"mix": sets, "stage": sets})
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low <= -0.05 and high >= 0.05
        assert all(bar.get_height() == 0.0 for bar in ax.patches)


def test_head_curves_tell_equal_metrics_apart_and_label_the_thresholds():
    points = [{"n": n, "accuracy": {"qa_ood": 0.5}, "reset_fraction": n / 4} for n in range(5)]
    metric = {"sufficiency": points, "criticality": points}
    run = {"metrics": {"shared_size": metric, "qa_size": metric, "random": {**metric, "permutations": [[0]] * 3}},
           "unablated": {"qa_ood": 0.6}}
    with literal_text():
        fig = figures.circuit({"mix": run, "stage": run}, "head")
    styles = {(line.get_linestyle(), line.get_marker()) for line in fig.axes[0].lines if not line.get_label().startswith(
        ("90", "50"))}
    assert len(styles) == 3  # three metrics with one curve, three looks
    assert any("90% of θ_ft's OOD-QA" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert any("50% of θ_ft's OOD-QA" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
