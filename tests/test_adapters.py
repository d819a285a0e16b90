"""The adapter's unit layout against the model's own forward pass (hooks on the real modules).

For every attention tensor of a layer and every unit u the adapter names, zeroing the features it
assigns to u must change the input of the output projection in u's heads' chunks only — and change
them. A contiguous-thirds reading of NeoX's interleaved `query_key_value`, or a missed transpose of
GPT-2's Conv1D, fails this. Head outputs are checked at the output projection: removing head h's
input columns subtracts exactly that head's computed contribution.
"""

import pytest
import torch

from factrecall.data.dataset import load_dataset
from factrecall.models.adapters import adapter_for, geometry, tensor_units, tracked_parameter_names
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer

PRESETS = ["tiny-llama-gqa", "small-llama", "tiny-neox", "tiny-gpt2"]
LAYER = 1


@pytest.fixture(scope="module")
def tokenizer(small_data):
    return word_tokenizer(load_dataset(small_data).vocabulary_fragments())


def _capture(model, module_path, ids):
    """(input, output) of a module during a forward pass."""
    seen = {}
    handle = model.get_submodule(module_path).register_forward_hook(
        lambda m, args, out: seen.update(x=args[0].detach().clone(), y=out.detach().clone()))
    with torch.no_grad():
        model(ids)
    handle.remove()
    return seen["x"], seen["y"]


def _zeroed(model, name, units, unit):
    p = dict(model.named_parameters())[name]
    keep = p.detach().clone()
    index = (units.feature_unit == unit).nonzero().squeeze(1)
    with torch.no_grad():
        p.index_fill_(units.axis, index, 0.0)
    return p, keep


@pytest.mark.parametrize("preset", PRESETS)
def test_every_attention_and_mlp_entry_maps_to_one_unit(preset, tokenizer):
    model = build_tiny_model(preset, tokenizer, seed=0)
    g = geometry(model.config)
    params = dict(model.named_parameters())
    for name in tracked_parameter_names(model, ("biases",)):
        units = tensor_units(model.config, name)
        if units is None:
            assert name.endswith(".bias")
            continue
        assert units.feature_unit.numel() == params[name].shape[units.axis]
        n_units = {"head": g.n_heads // units.group_size}.get(units.kind, units.feature_unit.numel())
        counts = torch.bincount(units.feature_unit, minlength=n_units)
        assert counts.numel() == n_units and (counts == counts[0]).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_head_slices_isolate_heads_in_the_real_forward(preset, tokenizer):
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    a, g = adapter_for(model.config), geometry(model.config)
    out_path = f"{a.layers}.{LAYER}.{a.attn_out}"
    ids = torch.randint(4, len(tokenizer), (2, 9))
    x0, y0 = _capture(model, out_path, ids)  # x0: [B, T, H·d] per-head outputs before the projection
    chunks = x0.view(*x0.shape[:2], g.n_heads, g.head_dim)
    for module in a.attention:
        name = f"{a.layers}.{LAYER}.{module}.weight"
        units = tensor_units(model.config, name)
        for unit in units.feature_unit.unique().tolist():
            p, keep = _zeroed(model, name, units, unit)
            x1, y1 = _capture(model, out_path, ids)
            with torch.no_grad():
                p.copy_(keep)
            if module == a.attn_out:  # removing head h's columns subtracts exactly its contribution
                w = keep.T if not a.transposed else keep  # [H·d, hidden]
                sl = slice(unit * g.head_dim, (unit + 1) * g.head_dim)
                torch.testing.assert_close(y1, y0 - x0[..., sl] @ w[sl], rtol=1e-4, atol=1e-5)
                continue
            heads = set(range(unit * units.group_size, (unit + 1) * units.group_size))
            changed = (x1.view_as(chunks) - chunks).abs().amax(dim=(0, 1, 3)) > 1e-6  # [H]
            assert set(changed.nonzero().squeeze(1).tolist()) == heads, (module, unit)


@pytest.mark.parametrize("preset", PRESETS)
def test_neuron_slices_isolate_neurons(preset, tokenizer):
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    a = adapter_for(model.config)
    down = next(m for m, role in a.mlp.items() if role == "out")
    down_path = f"{a.layers}.{LAYER}.{down}"
    ids = torch.randint(4, len(tokenizer), (2, 9))
    x0, _ = _capture(model, down_path, ids)
    for module, role in a.mlp.items():
        if role != "in":
            continue
        name = f"{a.layers}.{LAYER}.{module}.weight"
        units = tensor_units(model.config, name)
        for neuron in (0, 7, units.feature_unit.numel() - 1):
            p, keep = _zeroed(model, name, units, neuron)
            x1, _ = _capture(model, down_path, ids)
            with torch.no_grad():
                p.copy_(keep)
            changed = ((x1 - x0).abs() > 1e-7).any(dim=(0, 1))
            assert changed.nonzero().squeeze(1).tolist() == [neuron], (module, neuron)
