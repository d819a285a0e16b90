import pickle

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from factrecall.data.dataset import load_dataset
from factrecall.errors import UserError
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.loading import load_model
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer

FAMILIES = {"tiny-llama-gqa": ("llama", 14), "tiny-neox": ("gpt_neox", 8), "tiny-gpt2": ("gpt2", 8)}


@pytest.fixture(scope="module")
def tokenizer(small_data):
    return word_tokenizer(load_dataset(small_data).vocabulary_fragments())


@pytest.mark.parametrize("preset", FAMILIES)
def test_save_and_load_every_family(preset, tokenizer, tmp_path):
    model = build_tiny_model(preset, tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path)
    assert loaded.config.model_type == FAMILIES[preset][0]
    ids = torch.tensor([tok("Which university did he attend? Answer:")["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    names = tracked_parameter_names(loaded)
    assert len(names) == FAMILIES[preset][1]
    assert all(dict(loaded.named_parameters())[n].dim() == 2 for n in names)
    assert not any("embed" in n or "wte" in n or "norm" in n or "ln_" in n for n in names)
    with_extras = tracked_parameter_names(loaded, ("biases", "norms", "embeddings"))
    assert set(names) < set(with_extras)


def test_same_seed_same_weights(tokenizer):
    a = build_tiny_model("tiny-llama", tokenizer, seed=5).state_dict()
    b = build_tiny_model("tiny-llama", tokenizer, seed=5).state_dict()
    c = build_tiny_model("tiny-llama", tokenizer, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"])


def test_refuses_directory_without_config_or_safetensors(tokenizer, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "noconfig")
    model = build_tiny_model("tiny-llama", tokenizer, seed=0)
    model.config.save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UserError, match="no .safetensors"):
        load_model(tmp_path / "pickled")


class _Boom:
    def __reduce__(self):
        import os
        return (os.mkdir, ("PICKLE_RAN",))


def test_planted_pickle_and_python_never_run(tokenizer, tmp_path, monkeypatch):
    model = build_tiny_model("tiny-llama", tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()))
    (tmp_path / "modeling_evil.py").write_text("import os\nos.mkdir('PY_RAN')\n")
    monkeypatch.chdir(tmp_path)
    load_model(tmp_path)
    assert not (tmp_path / "PICKLE_RAN").exists() and not (tmp_path / "PY_RAN").exists()


def test_unsupported_family_names_supported_ones(tmp_path):
    OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                             num_attention_heads=2, word_embed_proj_dim=16)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="'opt' is not supported; supported: gpt2, gpt_neox, llama"):
        load_model(tmp_path)


def test_temporary_hooks_are_removed_also_when_the_block_raises():
    from factrecall.models.hooks import temporary_hooks

    layer, seen = torch.nn.Linear(2, 2), []
    with pytest.raises(RuntimeError):
        with temporary_hooks([(layer, "forward", lambda m, a, out: seen.append("forward")),
                              (layer, "pre", lambda m, a: seen.append("pre")),
                              (layer, "pre_kwargs", lambda m, a, kw: seen.append("pre_kwargs"))]):
            layer(torch.zeros(1, 2))
            raise RuntimeError("inside")
    assert seen == ["pre", "pre_kwargs", "forward"]
    layer(torch.zeros(1, 2))
    assert len(seen) == 3 and not layer._forward_hooks and not layer._forward_pre_hooks
