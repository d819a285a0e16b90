"""Every analysis on every shipped tiny preset, through the CLI as a user runs it: a shipped model that one
analysis cannot take (as `heads` on GPT-2 once could not) fails here, not in a user's study."""

import shutil
import sys

import pytest

from factrecall import cli
from factrecall.analysis.config import DEFAULT
from factrecall.analysis.registry import REGISTRY
from factrecall.layout import RunLayout
from factrecall.models.tiny import TINY_MODELS

# the commands and their smallest settings; the registry's analyses each appear (forgetting needs a built base)
COMMANDS = [
    ("shared", ["shared", "--sweep", "1,5"]),
    ("ablation", ["ablate", "--seeds", "1", "--eval-people", "2", "--size", "0.01"]),
    ("graft", ["graft", "--steps", "1", "--eval-people", "2", "--sparsity", "0.3", "--bracket", "0.5"]),
    ("heads", ["heads", "--eval-people", "2", "--random-rankings", "1"]),  # neurons too
    ("inspect", ["inspect", "--aggregate", "4"]),  # attention too
    ("consistency", ["consistency", "--people", "2", "--probe-people", "2", "--bootstrap", "2"]),
]


def test_the_commands_cover_every_analysis():
    covered = {name for name, _ in COMMANDS} | {"neurons", "attention", "forgetting"}
    assert covered == set(REGISTRY)


def _cli(monkeypatch, capsys, argv) -> str:
    monkeypatch.setattr(sys, "argv", ["factrecall", *map(str, argv)])
    try:
        cli.main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("preset", list(TINY_MODELS))
def test_every_analysis_runs_on_every_shipped_preset(preset, train_smoke, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(train_smoke(f"family-{preset}", model=preset, max_steps=2), run)
    for name, argv in COMMANDS:
        out = _cli(monkeypatch, capsys, [argv[0], "--run", run, *argv[1:]])
        assert out.strip(), (preset, name)
    files = RunLayout(run)
    for name in ("shared", "ablation", "graft", "heads", "neurons", "inspect", "attention", "consistency"):
        assert REGISTRY[name].path(files, DEFAULT).is_file(), (preset, name)
