"""`--device` reaches every model an analysis loads (this machine has no GPU: the device is resolved by a
stand-in that records what was asked for and answers with the CPU)."""

import shutil
from pathlib import Path

import pytest
import torch
from test_train_cli import run_cli

from factrecall import devices
from factrecall.config.study import study_config
from factrecall.models import loading


@pytest.fixture(scope="module")
def run(smoke_run, tmp_path_factory):
    """A copy of the smoke run: the analyses write into it."""
    return Path(shutil.copytree(smoke_run, tmp_path_factory.mktemp("device") / "run"))


COMMANDS = {
    "eval": lambda r, d: ["eval", "--model", r / "model", "--data", d],
    "ablate": lambda r, d: ["ablate", "--run", r, "--seeds", 1, "--eval-people", 2],
    "graft": lambda r, d: ["graft", "--run", r, "--steps", 1, "--eval-people", 2, "--sparsity", 0.5],
    "heads": lambda r, d: ["heads", "--run", r, "--metrics", "shared_size", "--eval-people", 2, "--no-neurons"],
    "inspect": lambda r, d: ["inspect", "--run", r, "--aggregate", 4, "--out", r / "inspect-device"],
    "consistency": lambda r, d: ["consistency", "--run", r, "--people", 4, "--probe-people", 2],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_model_an_analysis_loads_goes_to_the_asked_device(command, run, small_data, monkeypatch, capsys):
    asked = []

    def resolve(name):
        asked.append(name)
        return torch.device("cpu")

    monkeypatch.setattr(devices, "resolve_device", resolve)
    loads = []
    load_model = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **kw: loads.append(kw.get("device")) or load_model(*a, **kw))
    for module in ("factrecall.analysis.run", "factrecall.analysis.weights", "factrecall.analysis.forgetting"):
        monkeypatch.setattr(f"{module}.load_model", loading.load_model)
    code, _, err = run_cli(monkeypatch, capsys, *COMMANDS[command](run, small_data), "--device", "cuda")
    assert code == 0, err
    assert loads and set(loads) == {"cuda"} and set(asked) == {"cuda"}, (loads, asked)


def test_study_device_sets_training_and_analyses():
    config = study_config("smoke", device="cpu")
    assert config.train.device == config.analysis.device == "cpu"
    assert study_config("smoke").analysis.device == "auto"
