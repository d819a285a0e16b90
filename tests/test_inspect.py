"""Inspection (docs/method.md §9) against independent computations.

Attention patterns are recomputed from each head's q and k, sliced from the weights by the
adapter's head layout with HF's own rotary function; the logit lens and the direct contributions
are checked against the model's logits; token labels against hand-made texts.
"""

import json

import pytest
import torch

from factrecall.analysis.attention import attention_stats
from factrecall.analysis.inspect import inspect_run
from factrecall.analysis.labels import bio_views, dataset_pools, qa_view
from factrecall.analysis.readout import direct_contributions, head_outputs, logit_lens, read
from factrecall.data.dataset import load_dataset
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for, geometry, tensor_units
from factrecall.models.loading import load_model
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer
from factrecall.report.inspect_figures import write_figures
from factrecall.report.inspect_html import fragment, write_fragment

PRESETS = ["tiny-llama-gqa", "tiny-neox", "tiny-gpt2"]


@pytest.fixture(scope="module")
def tokenizer(small_data):
    return word_tokenizer(load_dataset(small_data).vocabulary_fragments())


@pytest.fixture(scope="module")
def models(tokenizer, tmp_path_factory):
    """Each preset with random weights large enough for peaked attention, reloaded with eager attention."""
    loaded = {}
    for preset in PRESETS:
        model = build_tiny_model(preset, tokenizer, seed=0)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1) if p.dim() == 1 else p.normal_(0, 0.1, generator=gen)
        path = tmp_path_factory.mktemp(preset)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        loaded[preset] = load_model(path, attn_implementation="eager")[0].eval()
    return loaded


@pytest.fixture(scope="module")
def run(train_smoke):
    return train_smoke("inspect", max_steps=3)


IDS = "Danielle Luca Holden was born in Madrid . She attended Witwatersrand University . Where did she work ?"


def _block_inputs(model, ids):
    a = adapter_for(model.config)
    inputs, handles = [], []
    for block in model.get_submodule(a.layers):
        handles.append(block.register_forward_pre_hook(
            lambda m, args, kwargs: inputs.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return inputs


def _qk_pattern(model, x, layer, head):
    """[T, T] softmax(q kᵀ/√d + causal) of one head, q and k sliced by the adapter's layout."""
    config = model.config
    a, g = adapter_for(config), geometry(config)
    block = model.get_submodule(f"{a.layers}.{layer}")
    h = block.get_submodule(a.norms[0])(x)[0]  # [T, D]
    d, q, k = g.head_dim, None, None
    for module, role in a.attention.items():
        if role in ("v", "out"):
            continue
        lin = block.get_submodule(module)
        weight = lin.weight.T if a.transposed else lin.weight  # [out, in]
        owner = tensor_units(config, f"{a.layers}.{layer}.{module}.weight").feature_unit
        unit = head // g.group_size if role == "k" else head
        out = h @ weight[owner == unit].T + (lin.bias[owner == unit] if lin.bias is not None else 0)
        if role == "q":
            q = out
        elif role == "k":
            k = out
        else:  # fused: this head's [q k v] features in order
            q, k = out[:, :d], out[:, d:2 * d]
    q, k = q[None, None], k[None, None]  # [1, 1, T, d]
    if config.model_type != "gpt2":
        rotary = next(m for n, m in model.named_modules() if n.endswith("rotary_emb"))
        cos, sin = rotary(x, position_ids=torch.arange(x.shape[1])[None])
        if config.model_type == "gpt_neox":
            from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb
        else:
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = (q[0, 0] @ k[0, 0].T) / d ** 0.5
    causal = torch.ones_like(scores, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@pytest.mark.parametrize("preset", PRESETS)
def test_eager_attention_equals_recomputation_from_q_and_k(preset, models, tokenizer):
    model = models[preset]
    ids = torch.tensor([tokenizer(IDS)["input_ids"]])
    attentions = read(model, ids).attentions  # [L, 1, H, T, T]
    inputs = _block_inputs(model, ids)
    g = geometry(model.config)
    with torch.no_grad():
        for layer in range(g.n_layers):
            for head in range(g.n_heads):
                expected = _qk_pattern(model, inputs[layer], layer, head)
                torch.testing.assert_close(attentions[layer, 0, head], expected, rtol=1e-4, atol=1e-5)
                other = attentions[layer, 0, (head + 1) % g.n_heads]
                assert not torch.allclose(other, expected, atol=1e-3)  # the heads are told apart
    assert attentions.max() > 0.5  # the weights make peaked patterns, not uniform ones


@pytest.mark.parametrize("preset", PRESETS)
def test_logit_lens_at_the_last_layer_is_the_models_logits(preset, models, tokenizer):
    model = models[preset]
    readout = read(model, torch.tensor([tokenizer(IDS)["input_ids"]]))
    torch.testing.assert_close(logit_lens(model, readout.residual[-1, 0]), readout.logits[0], rtol=1e-5, atol=1e-5)
    assert readout.residual.shape[0] == geometry(model.config).n_layers + 1


@pytest.mark.parametrize("preset", PRESETS)
def test_direct_contributions_sum_to_the_logits(preset, models, tokenizer):
    model = models[preset]
    ids = torch.tensor([tokenizer(IDS)["input_ids"]])
    readout = read(model, ids)
    t = ids.shape[1] - 1
    g = geometry(model.config)
    a = adapter_for(model.config)
    for layer in range(g.n_layers):  # heads (+ bias) decompose the output projection
        bias = model.get_submodule(f"{a.layers}.{layer}.{a.attn_out}").bias
        total = head_outputs(model, readout, layer, 0, t).sum(0) + (bias.detach() if bias is not None else 0)
        torch.testing.assert_close(total, readout.attn_out[layer, 0, t], rtol=1e-4, atol=1e-5)
    parts = direct_contributions(model, readout, 0, t)
    assert sum(k.startswith("L") and ".H" in k for k in parts) == g.n_layers * g.n_heads
    torch.testing.assert_close(sum(parts.values()), readout.logits[0, t], rtol=1e-4, atol=1e-4)


PERSON = {"person_id": 7, "name": "Danielle Luca Holden", "gender": "F", "split": "ood",
          "birth_date": "June 15, 2011", "birth_city": "Madrid", "university": "Witwatersrand University",
          "major": "Public Relations", "employer": "Rakuten", "employer_city": "Tokyo"}
BIO = ("Danielle Luca Holden was born in Madrid and developed a love of learning early on. She was born on June 15, 2011. "
       "She attended Witwatersrand University. She majored in Public Relations. She worked for Rakuten. "
       "She had a job in the city of Tokyo.")


def _marked(view):
    return [(t, label) for t, label in zip(view.tokens, view.labels) if label != "other"]


def test_labels_mark_exactly_subject_and_relation_tokens(tokenizer, small_data):
    pools = dataset_pools(load_dataset(small_data))
    spans = {a: [BIO.index(PERSON[a]), BIO.index(PERSON[a]) + len(PERSON[a])] for a in
             ("birth_date", "birth_city", "university", "major", "employer", "employer_city")}
    views = {v.attribute: v for v in bio_views(tokenizer, {"person_id": 7, "text": BIO, "spans": spans}, PERSON, pools)}
    name = [("Danielle", "subject"), ("Luca", "subject"), ("Holden", "subject")]
    # the first sentence: the name, then "born" as its relation word (every shipped template names the person first)
    assert _marked(views["birth_city"]) == name + [("born", "relation")] and views["birth_city"].tokens[-1] == "in"
    assert views["birth_city"].last_subject == views["birth_city"].tokens.index("Holden")
    # later sentences: the name of the first sentence, the relation words of the value's own sentence only
    assert _marked(views["birth_date"]) == name + [("born", "relation")]
    assert _marked(views["employer_city"]) == name + [("job", "relation"), ("city", "relation")]
    assert _marked(views["university"]) == name + [("attended", "relation")]
    assert views["employer"].tokens[-2:] == ("worked", "for") and views["employer"].gold == tuple(
        tokenizer("Rakuten", add_special_tokens=False)["input_ids"])
    prompt = "Which company did Danielle Luca Holden work for? Answer:"
    question = {"person_id": 7, "attribute": "employer", "split": "ood", "prompt": prompt, "answer": "Rakuten",
                "text": prompt + " Rakuten", "answer_start": len(prompt) + 1}
    view = qa_view(tokenizer, question, PERSON, pools)
    assert _marked(view) == [("company", "relation")] + name + [("work", "relation")]
    assert view.tokens[-2:] == ("Answer", ":") and view.last_subject == view.tokens.index("Holden")


def test_inspect_run_writes_json_and_report_draws_figures_and_a_safe_fragment(run, tmp_path):
    result = inspect_run(run, out=tmp_path / "inspect")
    assert sorted(p.name for p in (tmp_path / "inspect").iterdir()) == ["inspect.json"]  # drawing is the report's
    write_figures(result, tmp_path / "inspect")
    write_fragment(result, tmp_path / "inspect" / "inspect.html")
    for name in ("inspect.json", "attention.png", "logit_lens.png", "direct.png", "inspect.html"):
        assert (tmp_path / "inspect" / name).stat().st_size > 0
    assert json.loads((tmp_path / "inspect" / "inspect.json").read_text())["head"] == result["head"]
    assert result["person"]["split"] == "ood" and [v["form"] for v in result["views"]] == ["bio", "qa"]
    for view in result["views"]:
        assert view["direct"]["sum_error"] < 1e-3
        assert len(view["logit_lens"]) == 3 and abs(sum(view["attention"]["final_share"].values()) - 1) < 1e-4
    html = (tmp_path / "inspect" / "inspect.html").read_text()
    assert html.startswith('<div class="fr-inspect"') and "<html" not in html and "<body" not in html
    assert "http" not in html and "src=" not in html  # nothing loaded from elsewhere
    evil = json.loads(json.dumps(result))
    evil["person"]["name"] = "<img src=x onerror=alert(1)>"
    evil["views"][0]["tokens"][0] = "</script><script>alert(2)</script>"
    text = fragment(evil)
    assert "<img" not in text and "</script><script>alert" not in text and "&lt;img" in text
    dollars = json.loads(json.dumps(result))  # matplotlib would read `$…$` as mathtext and fail on it
    dollars["person"]["name"] = "Ann $x^{ Lee$"
    dollars["views"][0]["tokens"][0] = "$\\frac{"
    write_figures(dollars, tmp_path / "dollars")
    assert (tmp_path / "dollars" / "attention.png").stat().st_size > 0
    grafted = inspect_run(run, layer=1, head=3, person=0, attribute="major", out=tmp_path / "b")
    assert (grafted["layer"], grafted["head"], grafted["person"]["person_id"]) == (1, 3, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"person": 999}, "person 999 does not exist .* valid ids are 0–39"),
    ({"layer": 2, "head": 0}, "head L2.H0 does not exist; layers are 0–1, heads 0–3"),
    ({"layer": 0, "head": 4}, "heads 0–3"),
    ({"layer": 0}, "--layer and --head together"),
    ({"on": "grafted"}, "no graft mask"),
    ({"on": "base"}, "--on 'base'"),
    ({"attribute": "age"}, "--attribute 'age'"),
])
def test_bad_input_is_a_user_error(run, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        inspect_run(run, out=tmp_path, **kwargs)


def test_a_run_without_a_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no trained model/"):
        inspect_run(tmp_path)
    with pytest.raises(UserError, match="no trained model/"):
        attention_stats(tmp_path)


def test_attention_stats_shares_sum_to_one(run):
    result = attention_stats(run, people=6)
    assert result["people"] == 6 and result["views"] == {"bio": 36, "qa": 36}
    for form in ("bio", "qa"):
        total = torch.tensor([result["shares"][form][label] for label in ("subject", "relation", "other")]).sum(0)
        torch.testing.assert_close(total, torch.ones(2, 4), rtol=0, atol=1e-5)
    assert set(result["by_split"]) <= {"id", "ood"} and "top_shared_head" in result
    assert (run / "analysis" / "attention.json").is_file()
    with pytest.raises(UserError, match="--people must be at least 1"):
        attention_stats(run, people=0)
