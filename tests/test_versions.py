"""The library versions factrecall supports: declared floors, APIs that were renamed across them.

`make test` runs this file (with the training, FSDP and study tests) a second time in an
environment at the declared floors of transformers, accelerate and peft; FACTRECALL_FLOOR_PINS then
names the pins, and the installed versions must be exactly them.
"""

import os
import types
from importlib import metadata

import pytest
import torch
from packaging.version import Version

from factrecall.errors import UserError
from factrecall.models.compat import check_versions, declared_floor, enable_gradient_checkpointing
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer


@pytest.mark.parametrize("package", ["torch", "transformers", "accelerate", "tokenizers", "safetensors", "peft"])
def test_installed_versions_meet_the_declared_floors(package):
    assert Version(metadata.version(package).split("+")[0]) >= Version(declared_floor(package))


def test_the_floor_environment_has_the_floor_versions():
    pins = os.environ.get("FACTRECALL_FLOOR_PINS")
    if not pins:
        pytest.skip("not the floor environment (make test-floor sets FACTRECALL_FLOOR_PINS)")
    for pin in pins.split():
        name, version = pin.split("==")
        assert version == declared_floor(name)
        assert Version(metadata.version(name)) == Version(version), name


def _blocks_checkpointed(model) -> bool:
    return all(getattr(block, "gradient_checkpointing", False) for block in model.model.layers)


def test_gradient_checkpointing_is_enabled_on_the_installed_transformers():
    model = build_tiny_model("tiny-llama", word_tokenizer(["a b c"]), seed=0)
    enable_gradient_checkpointing(model)
    assert _blocks_checkpointed(model)
    model.train()
    model(input_ids=torch.tensor([[0, 4, 5, 6]]), labels=torch.tensor([[0, 4, 5, 6]])).loss.backward()


def test_the_older_name_is_used_where_the_newer_is_missing():
    calls = []
    older = types.SimpleNamespace(gradient_checkpointing_enable=lambda **kw: calls.append(kw))
    enable_gradient_checkpointing(older)
    assert calls == [{"gradient_checkpointing_kwargs": {"use_reentrant": False}}]


def test_a_missing_api_is_one_line_naming_the_version_to_install():
    with pytest.raises(UserError, match=r"^transformers [\d.]+\S* has no .*checkpointing.*; install transformers>=5\.17"):
        enable_gradient_checkpointing(types.SimpleNamespace())


def test_an_installed_library_below_its_floor_is_one_line(monkeypatch):
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "5.3.0" if name == "transformers" else real(name))
    with pytest.raises(UserError, match=r"^transformers 5\.3\.0 is older than the 5\.17 factrecall needs; pip install"):
        check_versions()


def test_floors_come_from_pyproject_when_run_from_a_checkout(monkeypatch):
    """`PYTHONPATH=src python -m factrecall` (as the GPU benchmark runs) has no installed metadata."""
    real = metadata.requires

    def requires(name):
        if name == "factrecall":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "requires", requires)
    assert declared_floor("transformers") == "5.17"
    check_versions()
