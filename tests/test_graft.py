import pytest
import torch
from torch.func import functional_call

from factrecall.analysis.graft import (
    base_patch,
    graft_run,
    grafted,
    relaxed_mask,
    score_gradient,
)
from factrecall.analysis.masks import IndexMask, load_mask, save_masks
from factrecall.analysis.weights import load_weights, make_grafted
from factrecall.errors import UserError
from factrecall.models.loading import load_model
from factrecall.models.tensor_files import TensorFiles


@pytest.fixture(scope="module")
def run(train_smoke):
    return train_smoke("graft")


@pytest.fixture(scope="module")
def models(run):
    ft, tok = load_model(run / "model")
    pre, _ = load_model(run / "base")
    ft.eval()
    pre.eval()
    return ft, pre, tok


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_all_ones_is_theta_ft_and_all_zeros_is_theta_pre(run, models):
    ft, pre, tok = models
    ids = torch.tensor([tok("Where did he work? Answer:")["input_ids"]])
    shapes = {n: tuple(p.shape) for n, p in ft.named_parameters()}
    for fill, reference in ((True, ft), (False, pre)):
        copy, _ = load_model(run / "model")
        mask = IndexMask.from_dense({n: torch.full(s, fill) for n, s in shapes.items()})
        make_grafted(copy.eval(), TensorFiles(run / "base"), mask)
        assert torch.equal(_logits(copy, ids), _logits(reference, ids))
        # the relaxed formula at γ ≡ 1 / 0, in the functional form
        p_ft, p_pre = _params(ft), _params(pre)
        params = {n: grafted(p_pre[n], p_ft[n], torch.full_like(p_ft[n], float(fill))) for n in p_ft}
        with torch.no_grad():
            torch.testing.assert_close(functional_call(ft, params, args=(ids,)).logits, _logits(reference, ids),
                                       rtol=1e-5, atol=1e-5)


def test_base_patch_takes_the_largest_moves():
    ft = {"a": torch.tensor([0.1, -5.0, 0.2]), "b": torch.tensor([[3.0, -0.05], [0.0, 1.0]])}
    pre = {n: torch.zeros_like(t) for n, t in ft.items()}
    patch = base_patch({"a": (3,), "b": (2, 2)}, ft, pre, 3 / 7)
    assert patch.dense("a").tolist() == [False, True, False]
    assert patch.dense("b").tolist() == [[True, False], [False, True]]


def test_score_gradient_is_the_chain_rule_checked_by_autograd_and_finite_differences(run, small_data):
    from factrecall.data.dataset import load_dataset
    from factrecall.encode import collate, encode_qa
    model, tok = load_model(run / "model")
    base_model, _ = load_model(run / "base")
    model, p_pre = model.double().eval(), _params(base_model.double())
    names = list(p_pre)
    noise = torch.Generator().manual_seed(3)  # a sizeable Δ: a 4-step run moves weights by ~1e-3 only
    delta = {n: torch.randn(p.shape, generator=noise, dtype=torch.float64) * 0.05 for n, p in p_pre.items()}
    p_ft = {n: p_pre[n] + delta[n] for n in names}
    base = {n: (torch.rand(d.shape, generator=torch.Generator().manual_seed(1)) < 0.5).double()
            for n, d in delta.items()}
    gen = torch.Generator().manual_seed(2)
    scores = {n: (torch.rand(d.shape, generator=gen, dtype=torch.float64) * 4 - 2) for n, d in delta.items()}
    rows = load_dataset(small_data).qa_split("id")[:8]
    batch = collate([encode_qa(tok, q) for q in rows], tok.pad_token_id)
    labels = batch.pop("labels")[:, 1:]

    def loss(logits):  # in float64 (HF's own loss upcasts only to float32); bias 0 keeps σ' large
        return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100)

    def theta(s):
        return {n: grafted(p_pre[n], p_ft[n], relaxed_mask(base[n], s[n], bias=0.0)) for n in names}

    # what graft_run does: the model's own parameter gradients at θ(γ(S)), then the chain rule per tensor
    at = theta(scores)
    load_weights(model, lambda n, p: at[n])
    model.zero_grad(set_to_none=True)
    loss(model(**batch).logits).backward()
    chain = {n: score_gradient(p.grad, delta[n], base[n], scores[n], bias=0.0) for n, p in model.named_parameters()}

    # autograd through the functional θ(γ(S)) with S as leaves
    s = {n: v.clone().requires_grad_() for n, v in scores.items()}
    auto = torch.autograd.grad(loss(functional_call(model, theta(s), args=(), kwargs=batch).logits),
                               [s[n] for n in names])
    for n, g in zip(names, auto):
        torch.testing.assert_close(chain[n], g, rtol=1e-9, atol=1e-12)

    # and finite differences on the entries that move the loss most
    name = "model.layers.0.self_attn.q_proj.weight"
    eps = 1e-2  # HF computes rotary cos/sin in float32 even in a float64 model: ~1e-7 noise in the loss
    for j in chain[name].abs().flatten().topk(3).indices:
        index = tuple(int(i) for i in torch.unravel_index(j, chain[name].shape))
        values = []
        for sign in (1, -1):
            moved = {n: v.clone() for n, v in scores.items()}
            moved[name][index] += sign * eps
            with torch.no_grad():
                values.append(loss(functional_call(model, theta(moved), args=(), kwargs=batch).logits))
        fd = (values[0] - values[1]) / (2 * eps)
        assert float(chain[name][index]) == pytest.approx(float(fd), rel=5e-3)


def test_graft_run_writes_mask_and_json(run, models):
    result = graft_run(run, sparsity=0.5, steps=2, eval_people=5)
    assert (run / "analysis" / "graft.json").is_file() and (run / "analysis" / "graft_mask.safetensors").is_file()
    assert result["base_patch"]["size"] == round(0.5 * result["parameters"])
    assert set(result["graft"]["accuracy"]) == {"qa_id", "qa_ood", "bio"}
    mask = load_mask(run / "analysis" / "graft_mask.safetensors", "graft")
    assert mask.size() == result["graft"]["size"]
    # the reported accuracy is that of θ_pre + γ ⊙ Δ rebuilt from the saved mask
    from factrecall.analysis.run import run_dataset
    from factrecall.encode import pad_id
    from factrecall.evaluation.exact_match import eval_sets, evaluate
    copy, tok = load_model(run / "model")
    make_grafted(copy.eval(), TensorFiles(run / "base"), mask)
    acc = evaluate(copy, eval_sets(tok, run_dataset(run), 5), pad_id(tok))
    assert {m: a["accuracy"] for m, a in acc.items()} == result["graft"]["accuracy"]


@pytest.mark.parametrize("kwargs, message", [({"sparsity": 0.0}, "strictly between 0 and 1"),
                                             ({"sparsity": 1.5}, "strictly between 0 and 1"),
                                             ({"lr": -1.0}, "--lr positive")])
def test_graft_bad_input(run, kwargs, message):
    with pytest.raises(UserError, match=message):
        graft_run(run, **kwargs)


def test_heads_on_the_grafted_model(run, models, tmp_path):
    import shutil

    from factrecall.analysis.circuit import circuit_curves
    graft_run(run, sparsity=0.5, steps=1, eval_people=5)
    r = circuit_curves(run, "head", ("shared_size",), eval_people=5, on="grafted")
    assert r["on"] == "grafted" and (run / "analysis" / "heads-grafted.json").is_file()
    assert set(r["unablated"]) == {"qa_id", "qa_ood"}  # BIO only with bio=True
    # the in-memory grafted copy equals the functional θ_pre + γ⊙Δ, in logits
    ft, pre, tok = models
    mask = load_mask(run / "analysis" / "graft_mask.safetensors", "graft")
    p_ft, p_pre = _params(ft), _params(pre)
    params = {n: grafted(p_pre[n], p_ft[n], mask.dense(n).float()) for n in p_ft}
    ids = torch.tensor([tok("Where did he work? Answer:")["input_ids"]])
    copy, _ = load_model(run / "model")
    make_grafted(copy.eval(), TensorFiles(run / "base"), mask)
    with torch.no_grad():
        torch.testing.assert_close(copy(ids).logits, functional_call(ft, params, args=(ids,)).logits,
                                   rtol=1e-6, atol=1e-6)

    # a graft mask of another model is refused, and so is --on grafted without a mask
    other = tmp_path / "other"
    shutil.copytree(run, other)
    bad = IndexMask.from_dense({n: torch.zeros(3, 3, dtype=torch.bool) for n in mask.index})
    save_masks(other / "analysis" / "graft_mask.safetensors", {"graft": bad}, {})
    with pytest.raises(UserError, match="belongs to another model: its graft mask"):
        circuit_curves(other, "head", ("shared_size",), eval_people=2, on="grafted")
    (other / "analysis" / "graft_mask.safetensors").unlink()
    with pytest.raises(UserError, match="has no graft mask; run 'factrecall graft"):
        circuit_curves(other, "head", ("shared_size",), eval_people=2, on="grafted")
    with pytest.raises(UserError, match="unknown --on"):
        circuit_curves(other, "head", ("shared_size",), on="pretrained")



def test_graft_sweep_points_are_the_grafts_of_their_base_patches(run, models):
    """Without search steps every sweep point is its base patch B: θ_pre + B ⊙ Δ rebuilt and evaluated here gives its
    accuracy; `finetuned` is the all-ones graft (θ_ft) on the same people."""
    from factrecall.analysis.run import run_dataset
    from factrecall.encode import pad_id
    from factrecall.evaluation.exact_match import eval_sets, evaluate
    ft, pre, tok = models
    result = graft_run(run, sparsity=0.5, steps=0, eval_people=5, sweep=(0.5, 1e-9, 0.2))
    assert [p["sparsity"] for p in result["sweep"]] == [1e-9, 0.2, 0.5]
    sets, pad = eval_sets(tok, run_dataset(run), 5), pad_id(tok)
    shapes = {n: tuple(p.shape) for n, p in ft.named_parameters()}

    def accuracy(mask: IndexMask) -> dict:
        copy, _ = load_model(run / "model")
        make_grafted(copy.eval(), TensorFiles(run / "base"), mask)
        return {m: a["accuracy"] for m, a in evaluate(copy, sets, pad).items()}

    for point in result["sweep"]:
        patch = base_patch(shapes, _params(ft), _params(pre), point["sparsity"])
        assert point["size"] == point["base_patch"]["size"] == patch.size() and point["best_step"] == 0
        assert point["accuracy"] == point["base_patch"]["accuracy"] == accuracy(patch)
    assert result["sweep"][0]["size"] == 1  # the top 1e-9 of the entries is one entry
    assert result["finetuned"] == accuracy(IndexMask.from_dense({n: torch.ones(s, dtype=torch.bool)
                                                                 for n, s in shapes.items()}))
    assert result["sweep"][-1]["accuracy"] == result["graft"]["accuracy"]


def test_graft_sweep_leaves_the_main_search_as_it_was(run):
    alone = graft_run(run, sparsity=0.5, steps=1, eval_people=5)
    swept = graft_run(run, sparsity=0.5, steps=1, eval_people=5, sweep=(0.2, 0.5))
    assert swept["graft"] == alone["graft"] and swept["best_step"] == alone["best_step"]
    assert "sweep" not in alone and [p["sparsity"] for p in swept["sweep"]] == [0.2, 0.5]
    assert swept["sweep"][1]["size"] == alone["graft"]["size"]
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        graft_run(run, sparsity=0.5, sweep=(1.0,))
