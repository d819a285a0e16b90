"""The analysis registry (`study/registry.py`): declared once, iterated by the study, CLI, summary and report."""

import shutil
import sys

import pytest

from factrecall import cli
from factrecall.analysis.config import AnalysisConfig
from factrecall.artifacts import read_json
from factrecall.layout import RunLayout
from factrecall.report.build import SECTIONS
from factrecall.study.registry import ANALYSES, REGISTRY


def test_names_are_unique_and_reads_come_first():
    names = [a.name for a in ANALYSES]
    assert len(set(names)) == len(names) == len(REGISTRY)
    for i, analysis in enumerate(ANALYSES):
        assert set(analysis.reads) <= set(names[:i]), analysis.name  # the study's order satisfies every read


def test_every_analysis_has_its_report_sections():
    assert list(SECTIONS) == [a.name for a in ANALYSES]


def test_settings_are_the_cache_key():
    """A setting an analysis declares changes its key; the others' keys stay."""
    base, changed = AnalysisConfig(), AnalysisConfig(graft_steps=3)
    moved = {a.name for a in ANALYSES if a.settings(base) != a.settings(changed)}
    assert moved == {"graft"}
    assert REGISTRY["neurons"].settings(AnalysisConfig(neuron_points=(0.0, 1.0))) != REGISTRY["neurons"].settings(base)
    assert REGISTRY["heads"].settings(AnalysisConfig(neuron_points=(0.0, 1.0))) == REGISTRY["heads"].settings(base)


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
