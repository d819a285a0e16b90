import pytest
import torch

from factrecall.data.generate import generate_dataset
from factrecall.presets import data_config

torch.set_num_threads(1)  # tests run in parallel workers on 2 cores


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """40 people, 2 bios each (the smoke preset's data)."""
    out = tmp_path_factory.mktemp("data") / "smoke"
    generate_dataset(data_config("smoke"), out)
    return out


@pytest.fixture(scope="session")
def smoke_run(small_data, tmp_path_factory):
    """A tiny Mix run (3 steps) with its trace and shared parameters; copy it before writing into it."""
    from factrecall.analysis.shared import analyze_run
    from factrecall.presets import train_config
    from factrecall.training.loop import train

    run = tmp_path_factory.mktemp("smoke_run") / "run"
    train(train_config("smoke", strategy="mix", max_steps=3, eval_people=2, checkpoint_every=0), small_data, run)
    analyze_run(run)
    return run
