"""Each model family is declared once, in its own module of `models/families/` (adapter, tiny presets, memory
constants, distributed modes); the loader, the tiny presets, the plan and the loop read that declaration."""

import json
import sys

import pytest

from factrecall import cli
from factrecall.data.dataset import load_dataset
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for
from factrecall.models.families import BY_NAME, FAMILIES, family_for
from factrecall.models.tiny import TINY_MODELS, build_tiny_model
from factrecall.models.tokenizer import word_tokenizer


def test_names_model_types_and_presets_are_declared_once():
    types = [t for f in FAMILIES for t in f.model_types]
    presets = [p for f in FAMILIES for p in f.tiny]
    assert len(set(types)) == len(types) and len(set(presets)) == len(presets)
    assert list(TINY_MODELS) == presets and set(BY_NAME) == {f.adapter.family for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_family_s_tiny_models_have_the_modules_its_adapter_names(family, small_data):
    tokenizer = word_tokenizer(load_dataset(small_data).vocabulary_fragments())
    for preset in family.tiny:
        model = build_tiny_model(preset, tokenizer, seed=0)
        assert model.config.model_type in family.model_types and family_for(model.config) is family
        a = adapter_for(model.config)
        block = f"{a.layers}.0"
        for module in (*a.attention, *a.mlp, *a.norms):
            model.get_submodule(f"{block}.{module}")
        for module in (a.final_norm, *a.embeddings, a.unembedding):
            model.get_submodule(module)


def test_an_unknown_family_is_one_line():
    class Config:
        model_type = "mamba"
    with pytest.raises(UserError, match="model family 'mamba' is not supported; supported: gpt2, gpt_neox, llama"):
        family_for(Config())


@pytest.mark.parametrize("model, fsdp", [("tiny-gpt2", False), ("tiny-neox", True), ("tiny-llama", True)])
def test_plan_takes_a_study_config_of_any_family(model, fsdp, tmp_path, monkeypatch, capsys):
    config = tmp_path / "study.toml"
    config.write_text(f'preset = "smoke"\n[train]\nmodel = "{model}"\n')
    for extra in ([], ["--json"]):
        monkeypatch.setattr(sys, "argv", ["factrecall", "plan", "--config", str(config), *extra])
        with pytest.raises(SystemExit) as done:
            cli.main()
        assert done.value.code in (0, None)
        out = capsys.readouterr().out
        if extra:
            plan = json.loads(out)
            assert plan["model"]["family"] == family_for_model(model) and plan["fsdp_supported"] is fsdp
            assert plan["preset"] == "smoke" and set(plan["analyses"]) >= {"graft", "heads", "consistency"}
        else:
            assert ("FSDP2 GPUs needed" in out) is fsdp and ("FSDP2: not supported" in out) is not fsdp


def family_for_model(preset: str) -> str:
    return next(f.name for f in FAMILIES if preset in f.tiny)


def test_plan_refuses_a_sweep_in_one_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('preset = "smoke"\nseeds = [0, 1]\n')
    monkeypatch.setattr(sys, "argv", ["factrecall", "plan", "--config", str(config)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and "is a sweep; 'factrecall plan' plans one study" in err and err.count("\n") == 1
