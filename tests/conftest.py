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
