import pytest
import torch

from factrecall.analysis.circuit import circuit_curves, delta_norms, ranking, unit_masks, unit_output_ablation
from factrecall.analysis.weights import reset_to_base
from factrecall.config.presets import train_config
from factrecall.data.dataset import load_dataset
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer
from factrecall.training.loop import train


@pytest.fixture(scope="module")
def tokenizer(small_data):
    return word_tokenizer(load_dataset(small_data).vocabulary_fragments())


def _reset_diff(model, masks):
    """Entries that change when `masks` are reset to a θ_pre that differs everywhere (state-dict diff)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shifted = {n: p + 1.0 for n, p in before.items()}
    with reset_to_base(model, shifted, masks):
        after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return {n: before[n] != after[n] for n in before}


@pytest.mark.parametrize("preset", ["tiny-llama-gqa", "tiny-neox", "tiny-gpt2"])
def test_resetting_a_head_changes_exactly_its_entries(preset, tokenizer):
    model = build_tiny_model(preset, tokenizer, seed=0)
    a = adapter_for(model.config)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    masks = unit_masks(model.config, shapes, "head", {(1, 2)})
    changed = _reset_diff(model, masks)
    for name, diff in changed.items():
        expected = masks.get(name, torch.zeros_like(diff))
        assert torch.equal(diff, expected), name
    d = model.config.hidden_size // model.config.num_attention_heads
    out = dict(model.named_parameters())[f"{a.layers}.1.{a.attn_out}.weight"]
    cols = masks[f"{a.layers}.1.{a.attn_out}.weight"]
    axis = 0 if a.transposed else 1
    owned = cols.any(dim=1 - axis).nonzero().squeeze(1).tolist()
    assert owned == list(range(2 * d, 3 * d)) and out.shape[axis] == 4 * d
    if preset == "tiny-llama-gqa":  # one head of a K/V group leaves the group's K/V alone...
        assert f"{a.layers}.1.self_attn.k_proj.weight" not in masks or not masks[
            f"{a.layers}.1.self_attn.k_proj.weight"].any()
        both = unit_masks(model.config, shapes, "head", {(1, 2), (1, 3)})  # ...both heads reset it
        assert both[f"{a.layers}.1.self_attn.k_proj.weight"][d:2 * d].all()
        assert not both[f"{a.layers}.1.self_attn.k_proj.weight"][:d].any()


@pytest.mark.parametrize("preset", ["tiny-llama-gqa", "tiny-neox", "tiny-gpt2"])
def test_zero_ablating_a_head_output_equals_zeroing_its_output_columns(preset, tokenizer):
    model = build_tiny_model(preset, tokenizer, seed=0).eval()
    a = adapter_for(model.config)
    ids = torch.randint(4, len(tokenizer), (2, 7))
    with torch.no_grad():
        plain = model(ids).logits
        with unit_output_ablation(model, model.config, "head", {(0, 1), (1, 3)}, "zero"):
            ablated = model(ids).logits
        assert torch.equal(model(ids).logits, plain)  # hooks removed
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        masks = unit_masks(model.config, shapes, "head", {(0, 1), (1, 3)})
        params = dict(model.named_parameters())
        for layer in (0, 1):
            name = f"{a.layers}.{layer}.{a.attn_out}.weight"
            params[name].masked_fill_(masks[name], 0.0)
        torch.testing.assert_close(ablated, model(ids).logits, rtol=1e-5, atol=1e-6)


def test_ranking_is_descending_with_stable_ties():
    scores = torch.tensor([[1.0, 3.0], [3.0, 0.0]])
    assert ranking(scores) == [(0, 1), (1, 0), (0, 0), (1, 1)]


def test_curves_on_a_tiny_run(small_data, tmp_path):
    run = tmp_path / "run"
    train(train_config("smoke", strategy="mix", max_steps=3, eval_people=2, checkpoint_every=0), small_data, run)
    r = circuit_curves(run, "head", ("shared_size", "random", "graft_size"), eval_people=3)
    assert set(r["metrics"]) == {"shared_size", "random"}  # graft_size needs a graft mask: skipped
    curve = r["metrics"]["shared_size"]["sufficiency"]
    assert [p["n"] for p in curve] == list(range(9)) and curve[-1]["reset_fraction"] == 0.0
    assert curve[-1]["accuracy"] == r["unablated"]
    crit = r["metrics"]["random"]["criticality"]
    assert crit[0]["accuracy"] == r["unablated"] and crit[-1]["accuracy"] == curve[0]["accuracy"]
    assert r["evaluations"] < 2 * 2 * 9  # shared interventions are evaluated once
    assert (run / "analysis" / "heads.json").is_file()
    with pytest.raises(UserError, match="unknown metric 'size'"):
        circuit_curves(run, "head", ("size",))
    n = circuit_curves(run, "neuron", ("delta_norm",), eval_people=3, points=(0, 0.5, 1.0))
    assert [p["n"] for p in n["metrics"]["delta_norm"]["sufficiency"]] == [0, 512, 1024]
    for mode in ("zero", "mean"):
        z = circuit_curves(run, "head", ("random",), eval_people=3, intervention=mode)
        assert z["intervention"] == mode and z["metrics"]["random"]["criticality"][0]["accuracy"] == z["unablated"]
    with pytest.raises(UserError, match="unknown intervention"):
        circuit_curves(run, "head", ("random",), intervention="patch")


def test_head_counts_every_n_for_small_models_and_a_grid_for_large_ones():
    from factrecall.analysis.circuit import EVERY_HEAD, head_counts

    assert head_counts(8) == list(range(9)) and head_counts(EVERY_HEAD) == list(range(EVERY_HEAD + 1))
    grid = head_counts(672)  # Llama-3.2-3B: 28 layers × 24 heads
    assert grid[:9] == list(range(9)) and grid[-1] == 672 and grid == sorted(set(grid))
    assert all(b / a <= 1.5 for a, b in zip(grid[8:], grid[9:]))  # at least two points per doubling
    assert len(grid) < 30


IMPORTANT = {(0, 1), (1, 2)}  # the heads the fake evaluation below needs


def _fake_evaluation(monkeypatch):
    """Make `circuit_curves` score a reset set without a forward: OOD-QA 1.0 with both IMPORTANT heads kept, 0.4
    with one, 0 with none (ID-QA alike); records every OOD-only scoring. Returns that record."""
    import contextlib

    from factrecall.analysis import circuit

    state, ood_only = {}, []

    @contextlib.contextmanager
    def reset(model, base, masks):
        state["reset"] = {tuple(map(int, name.split("."))) for name in masks}
        yield

    def evaluate(model, sets, pad):
        if set(sets) == {"qa_ood"}:
            ood_only.append(frozenset(state["reset"]))
        kept = len(IMPORTANT - state["reset"])
        return {name: {"accuracy": (0.0, 0.4, 1.0)[kept]} for name in sets}

    monkeypatch.setattr(circuit, "unit_masks", lambda config, shapes, kind, units:
                        {f"{layer}.{unit}": torch.ones(1, dtype=torch.bool) for layer, unit in units})
    monkeypatch.setattr(circuit, "reset_to_base", reset)
    monkeypatch.setattr(circuit, "evaluate", evaluate)
    state["reset"] = set()
    return ood_only


def test_random_is_the_median_over_permutations_seeded_by_the_run(smoke_run, tmp_path, monkeypatch):
    import json
    import shutil
    import statistics

    from factrecall.analysis.circuit import circuit_curves

    ood_only = _fake_evaluation(monkeypatch)
    runs = {}
    for seed in (0, 1):
        runs[seed] = tmp_path / f"seed{seed}"
        shutil.copytree(smoke_run, runs[seed])
        config = json.loads((runs[seed] / "config.json").read_text())
        config["train"]["seed"] = seed
        (runs[seed] / "config.json").write_text(json.dumps(config))
    r = circuit_curves(runs[0], "head", ("shared_size", "random"), random_rankings=5)
    random = r["metrics"]["random"]
    assert random["seed"] == 0 and len(random["permutations"]) == 5
    for p in random["permutations"]:  # each permutation's n, from its own ranking: exact despite the early stop
        where = [p["ranking"].index(list(u)) + 1 for u in sorted(IMPORTANT)]
        assert (p["minimal_sufficient"], p["critical"]) == (max(where), min(where))
        assert p["sufficiency"][-1]["n"] == p["minimal_sufficient"] and p["criticality"][-1]["n"] == p["critical"]
    for key in ("minimal_sufficient", "critical"):
        assert random[key] == statistics.median(p[key] for p in random["permutations"])
    assert random["ranking"] == random["permutations"][0]["ranking"]  # the drawn curves are permutation 0's
    assert [p["n"] for p in random["sufficiency"]] == list(range(9))  # ...and complete
    assert ood_only  # the other permutations are scored on OOD-QA alone
    rankings = [p["ranking"] for p in random["permutations"]]
    assert len({json.dumps(x) for x in rankings}) == 5  # the permutations differ
    again = circuit_curves(runs[0], "head", ("random",), random_rankings=5)["metrics"]["random"]
    assert [p["ranking"] for p in again["permutations"]] == rankings  # the same seed, the same permutations
    other = circuit_curves(runs[1], "head", ("random",), random_rankings=5)["metrics"]["random"]
    assert other["seed"] == 1 and [p["ranking"] for p in other["permutations"]] != rankings
    with pytest.raises(UserError, match="random-rankings must be at least 1"):
        circuit_curves(runs[0], "head", ("random",), random_rankings=0)


@pytest.mark.parametrize("preset", ["tiny-llama-gqa", "tiny-neox", "tiny-gpt2"])
def test_delta_norms_match_each_units_own_entries(preset, tokenizer):
    """‖θ − θ_pre‖ per unit (`delta_norm`) equals the norm over the entries `unit_masks` gives that unit, for every
    family (GPT-2's and NeoX's 1-D biases included; a K/V group's entries count 1/g towards each head)."""
    base_model, model = build_tiny_model(preset, tokenizer, seed=0), build_tiny_model(preset, tokenizer, seed=1)
    base = {n: p.detach() for n, p in base_model.named_parameters()}
    norms = delta_norms(model.config, model, base)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    params = {n: p.detach() for n, p in model.named_parameters()}
    for kind, table in (("head", "heads"), ("neuron", "neurons")):
        layers, units = norms[table].shape
        for layer, unit in ((0, 0), (layers - 1, units - 1)):
            masks = unit_masks(model.config, shapes, kind, {(layer, unit)})
            share = {n: 1.0 for n in masks}
            if preset == "tiny-llama-gqa" and kind == "head":  # K/V rows reset only with the whole group
                group = model.config.num_attention_heads // model.config.num_key_value_heads
                whole = unit_masks(model.config, shapes, kind, {(layer, h) for h in range(
                    unit // group * group, unit // group * group + group)})
                masks |= {n: m for n, m in whole.items() if ("k_proj" in n or "v_proj" in n)}
                share |= {n: 1.0 / group for n in masks if "k_proj" in n or "v_proj" in n}
            expected = sum(share[n] * float(((params[n] - base[n])[m].double() ** 2).sum()) for n, m in masks.items())
            assert float(norms[table][layer, unit]) ** 2 == pytest.approx(expected, rel=1e-6), (kind, layer, unit)
