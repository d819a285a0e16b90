"""The analysis registry (`analysis/registry.py`): declared once, iterated by the study, CLI, summary and report."""

import dataclasses
import shutil
import sys

import pytest

from factrecall import cli
from factrecall.analysis.config import ANALYSIS_NAMES, AnalysisConfig
from factrecall.analysis.registry import ANALYSES, REGISTRY
from factrecall.artifacts import read_json
from factrecall.layout import RunLayout
from factrecall.report.build import SECTIONS


def test_names_are_unique_and_reads_come_first():
    names = [a.name for a in ANALYSES]
    assert len(set(names)) == len(names) == len(REGISTRY)
    for i, analysis in enumerate(ANALYSES):
        assert set(analysis.reads) <= set(names[:i]), analysis.name  # the study's order satisfies every read


def test_every_analysis_has_its_report_sections():
    assert list(SECTIONS) == [a.name for a in ANALYSES]


def _other(value):
    """A valid value of a setting other than `value`."""
    if isinstance(value, str):
        return "grafted" if value == "finetuned" else "finetuned"
    if isinstance(value, tuple):
        return (*value, 0.5)
    return value + 1 if isinstance(value, int) else value / 2


def test_every_analysis_has_its_settings_and_they_are_its_cache_key():
    """Each analysis's settings are `AnalysisConfig.<name>`; each setting moves the key of its own analysis only
    (what an analysis reads enters its key through the files of the analyses it reads)."""
    assert [a.name for a in ANALYSES] == list(ANALYSIS_NAMES)
    base = AnalysisConfig()
    for name in ANALYSIS_NAMES:
        for field in dataclasses.fields(getattr(base, name)):
            own = getattr(base, name)
            changed = dataclasses.replace(base, **{name: dataclasses.replace(
                own, **{field.name: _other(getattr(own, field.name))})})
            changed.validate()
            assert {a.name for a in ANALYSES if a.settings(base) != a.settings(changed)} == {name}, field.name


def test_a_renamed_result_key_reruns_its_analysis():
    """ablation.json's "drop" became "change" (format 2): the version enters its key, so a study reruns it
    instead of reading an earlier file; analyses of format 1 keep the keys they had."""
    key = REGISTRY["ablation"].settings(AnalysisConfig())
    assert key[-1] == "format 2" and key[:-1] == list(dataclasses.astuple(AnalysisConfig().ablation))
    assert REGISTRY["graft"].settings(AnalysisConfig()) == list(dataclasses.astuple(AnalysisConfig().graft))


@pytest.mark.parametrize("command, name", [("shared_command", "shared"), ("ablate_command", "ablation"),
                                           ("graft_command", "graft"), ("heads_command", "heads"),
                                           ("consistency_command", "consistency"), ("forgetting_command", "forgetting")])
def test_the_cli_options_are_the_declared_settings(command, name):
    """An analysis command's options are its settings' fields, with the study's defaults and the declared help."""
    import inspect

    parameters = inspect.signature(getattr(cli, command)).parameters
    settings = getattr(AnalysisConfig(), name)
    for field in dataclasses.fields(settings):
        assert parameters[field.name].default == cli._option_text(getattr(settings, field.name)), field.name
        assert parameters[field.name].annotation.__metadata__[0].help.startswith(field.metadata["help"])


def test_a_bad_option_is_refused_naming_it(smoke_run, tmp_path, monkeypatch, capsys):
    for argv, message in ((["ablate", "--k", "0"], "analysis.ablation.k: --k must lie in (0, 100]"),
                          (["shared", "--sweep", "1,x"], "--sweep '1,x' must be comma-separated numbers"),
                          (["graft", "--grid", "1.5"], "analysis.graft.sparsities must be a list of fractions")):
        monkeypatch.setattr(sys, "argv", ["factrecall", argv[0], "--run", str(smoke_run), *argv[1:]])
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("command, analysis", [(["shared", "--k", "2"], "shared"),
                                               (["ablate", "--k", "5", "--seeds", "1", "--eval-people", "4"],
                                                "ablation"),
                                               (["consistency", "--people", "4", "--probe-people", "2"],
                                                "consistency")])
def test_cli_prints_the_registry_headline_of_what_it_wrote(command, analysis, smoke_run, tmp_path, monkeypatch,
                                                           capsys):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    monkeypatch.setattr(sys, "argv", ["factrecall", command[0], "--run", str(run), *command[1:]])
    try:
        cli.main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    entry = REGISTRY[analysis]
    written = entry.writes(RunLayout(run), AnalysisConfig())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [entry.headline(read_json(entry.path(RunLayout(run), AnalysisConfig()), analysis)),
                     f"written to {', '.join(map(str, written))}"]
    assert all(p.is_file() for p in written)


def _concentration(observed: float) -> dict:
    return {"entries": 7, "units": 8, **{m: {null: {"observed": observed, "null_mean": 0.25, "null_sd": 0.01,
                                                    "excess": observed - 0.25} for null in ("kind_level", "per_tensor")}
                                         for m in ("gini", "top_10%")}}


def test_summaries_carry_the_same_size_numbers_and_read_old_results():
    """The summary entries of shared, ablation and graft hold the matched-size and sweep numbers the claims judge;
    results written before those existed still summarise (without them)."""
    shared = {"k": 1.0, "top_bio": 10, "top_qa": 10, "shared": 3, "chance": 0.1, "enrichment": 30.0, "jaccard": 0.2,
              "gini": {"heads": 0.5, "neurons": 0.6}, "top_unit_share": {"heads": {}, "neurons": {}}}
    point = {"fraction": 0.001, "size": 5, "depth": 9, "null_draws": 100, "heads": _concentration(0.75),
             "neurons": _concentration(1.0)}
    summary = REGISTRY["shared"].summary(shared | {"matched": [point]})
    measures = {v: {"observed": v, **{null: {"excess": v - 0.25, "null_sd": 0.01} for null in ("kind_level",
                                                                                               "per_tensor")}}
                for v in (0.75, 1.0)}
    assert summary["matched"] == {"0.001": {"size": 5, "depth": 9,
                                            **{kind: {"entries": 7, "units": 8, "gini": measures[v], "top_10%": measures[v]}
                                               for kind, v in (("heads", 0.75), ("neurons", 1.0))}}}
    assert REGISTRY["shared"].summary(shared)["matched"] == {}

    def sets(drop: float, size: int) -> dict:
        controls = ("random", "top_bio_only", "top_qa_only")
        return {"shared": {"size": size, "change": {"qa_ood": drop}},
                **{n: {"size": size, "mean_change": {"qa_ood": drop / 2}} for n in controls}}
    ablation = {"k": 5.0, "unablated": {"qa_ood": 0.5}, **sets(-0.2, 40)}
    summary = REGISTRY["ablation"].summary(ablation | {"matched": {"fraction": 0.02, "size": 30, "depth": 99,
                                                                   **sets(-0.3, 30)}})
    assert summary["shared"] == {"qa_ood": -0.2} and summary["sizes"]["shared"] == 40
    assert summary["matched"]["shared"] == {"qa_ood": -0.3} and summary["matched"]["random"] == {"qa_ood": -0.15}
    assert summary["matched"]["sizes"] == dict.fromkeys(("shared", "random", "top_bio_only", "top_qa_only"), 30)
    assert REGISTRY["ablation"].summary(ablation)["matched"] is None

    graft = {"traced": 100, "sparsity": 0.4, "converged": True, "graft": {"size": 40, "accuracy": {"qa_id": 0.9}},
             "base_patch": {"accuracy": {"qa_id": 0.5}}}
    point = {"sparsity": 0.1, "size": 12, "best_step": 3, "steps_run": 10, "converged": True,
             "accuracy": {"qa_id": 0.8}, "base_patch": {}}
    bracket = {"miss": {"sparsity": 0.08, "size": 9}, "hit": {"sparsity": 0.1, "size": 12}, "width": 0.02}
    summary = REGISTRY["graft"].summary(graft | {"finetuned": {"qa_id": 1.0}, "sweep": [point], "bracket": bracket})
    assert summary["finetuned"] == {"qa_id": 1.0} and summary["bracket"] == bracket
    assert summary["sweep"] == [{"sparsity": 0.1, "size": 12, "converged": True, "accuracy": {"qa_id": 0.8}}]
    assert REGISTRY["graft"].summary(graft)["sweep"] == [] and REGISTRY["graft"].summary(graft)["finetuned"] is None


@pytest.mark.parametrize("function, defaults", [
    ("factrecall.analysis.shared:analyze_run", {"k": "shared.k", "sweep": "shared.sweep",
                                                "matched_sizes": "shared.matched_sizes", "null_draws": "shared.null_draws"}),
    ("factrecall.analysis.ablation:ablate_run", {"k": "ablation.k", "seeds": "ablation.seeds", "size": "ablation.size",
                                                 "eval_people": "ablation.eval_people", "device": "device"}),
    ("factrecall.analysis.graft:graft_run", {"sparsity": "graft.sparsity", "steps": "graft.steps", "lr": "graft.lr",
                                             "eval_people": "graft.eval_people"}),
    ("factrecall.analysis.circuit:circuit_curves", {"k": "shared.k", "eval_people": "heads.eval_people", "on": "heads.on",
                                                    "random_rankings": "heads.random_rankings",
                                                    "points": "neurons.points"}),
    ("factrecall.analysis.attention:attention_stats", {"people": "attention.people"}),
    ("factrecall.analysis.consistency:consistency_run", {"people": "consistency.people",
                                                         "probe_people": "consistency.probe_people",
                                                         "bootstrap": "consistency.bootstrap", "device": "device"}),
    ("factrecall.analysis.forgetting:forgetting_run", {"eval_people": "forgetting.eval_people"}),
])
def test_the_api_defaults_are_the_studys(function, defaults):
    """An analysis called from Python or the CLI with no options computes what a study computes (issue 26: they
    had drifted, e.g. ablate_run's k 1 against the study's 5)."""
    import importlib
    import inspect

    module, name = function.split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    study = AnalysisConfig()
    for parameter, setting in defaults.items():
        owner, _, key = setting.rpartition(".")
        assert parameters[parameter].default == getattr(getattr(study, owner) if owner else study, key), (name, parameter)


def test_cli_ablate_writes_the_same_size_sets_c4_judges(smoke_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    for size, matched in (("0.01", True), ("0", False)):
        monkeypatch.setattr(sys, "argv", ["factrecall", "ablate", "--run", str(run), "--seeds", "1",
                                          "--eval-people", "2", "--size", size])
        with pytest.raises(SystemExit) as done:
            cli.main()
        assert done.value.code in (0, None)
        result = read_json(RunLayout(run).result("ablation"), "ablation")
        assert ("matched" in result) == matched and (not matched or result["matched"]["fraction"] == 0.01)


def test_the_settings_table_in_the_docs_is_the_declared_one():
    """docs/method.md's "Analysis settings" is generated from analysis/config.py; regenerate it with
    `python -c "from factrecall.analysis.config import settings_table; print(settings_table())"`."""
    from pathlib import Path

    from factrecall.analysis.config import settings_table

    text = (Path(__file__).parents[1] / "docs" / "method.md").read_text()
    start = text.index("<!-- settings: generated by factrecall.analysis.config.settings_table -->\n")
    table = text[text.index("\n", start) + 1:text.index("<!-- /settings -->")]
    assert table == settings_table()


def test_show_reads_a_run_analysed_by_an_earlier_format(smoke_run, tmp_path):
    """An ablation.json of format 1 ("drop"): `show` says to rerun it instead of a traceback."""
    import json

    from factrecall.report.show import show

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    path = RunLayout(run).result("ablation")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"k": 5.0, "shared": {"drop": {"qa_ood": -0.1}}, "random": {"mean_drop": {}}}))
    lines = show(run)["lines"]
    assert "ablation: written by an earlier factrecall's format: rerun the analysis (or the study) to read it" in lines
