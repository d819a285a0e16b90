from pathlib import Path

import pytest
import torch

from factrecall.config.presets import data_config
from factrecall.data.generate import generate_dataset

torch.set_num_threads(1)  # tests run in parallel workers on 2 cores


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """40 people, 2 bios each (the smoke preset's data)."""
    out = tmp_path_factory.mktemp("data") / "smoke"
    generate_dataset(data_config("smoke"), out)
    return out


@pytest.fixture(scope="session")
def train_smoke(small_data, tmp_path_factory):
    """Train a tiny run of the smoke data into a new folder named after `name`: the smoke preset, Mix,
    4 steps, 2 people per split in evaluations between steps, no checkpoints, unless `overrides` say
    otherwise (any TrainConfig field). Returns the run directory."""
    from factrecall.config.presets import train_config
    from factrecall.training.loop import train

    def make(name: str, **overrides) -> Path:
        out = tmp_path_factory.mktemp(name) / "run"
        settings = {"strategy": "mix", "max_steps": 4, "eval_people": 2, "checkpoint_every": 0, **overrides}
        train(train_config("smoke", **settings), small_data, out)
        return out
    return make


@pytest.fixture(scope="session")
def smoke_run(train_smoke):
    """A tiny Mix run (3 steps) with its trace and shared parameters; copy it before writing into it."""
    from factrecall.analysis.shared import analyze_run

    run = train_smoke("smoke_run", max_steps=3)
    analyze_run(run)
    return run


@pytest.fixture
def stop_after_qa_step(monkeypatch):
    """stop(n): `training.loop.train` raises KeyboardInterrupt right after it logs QA step n (counted from 1), as
    if the process were killed there; stop(None): it trains on undisturbed again."""
    from factrecall.training import loop

    real = loop.append_jsonl

    def stop(n: int | None) -> None:
        def die(path, row):
            real(path, row)
            if row.get("event") == "step" and row["phase"] == "qa" and row["step"] + 1 == n:
                raise KeyboardInterrupt
        monkeypatch.setattr(loop, "append_jsonl", real if n is None else die)
    return stop
