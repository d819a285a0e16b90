import pytest
import torch
from torch.func import functional_call

from factrecall.analysis.graft import base_patch, graft_run, grafted_parameters, relaxed_mask
from factrecall.errors import UserError
from factrecall.models.loading import load_model
from factrecall.presets import train_config
from factrecall.training.loop import train


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("graft") / "run"
    train(train_config("smoke", strategy="mix", max_steps=4, eval_people=2, checkpoint_every=0), small_data, out)
    return out


@pytest.fixture(scope="module")
def models(run):
    ft, tok = load_model(run / "model")
    pre, _ = load_model(run / "base")
    ft.eval()
    pre.eval()
    return ft, pre, tok


def _params(model):
    return {n: p.detach() for n, p in model.named_parameters()}


def test_all_ones_is_theta_ft_and_all_zeros_is_theta_pre(models):
    ft, pre, tok = models
    p_ft, p_pre = _params(ft), _params(pre)
    delta = {n: p_ft[n] - p_pre[n] for n in p_ft}
    ids = torch.tensor([tok("Where did he work? Answer:")["input_ids"]])
    with torch.no_grad():
        for fill, reference in ((1.0, ft), (0.0, pre)):
            gamma = {n: torch.full_like(d, fill) for n, d in delta.items()}
            grafted = functional_call(ft, grafted_parameters(p_pre, delta, gamma), args=(ids,))
            torch.testing.assert_close(grafted.logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(p_ft[n], _params(ft)[n]) for n in p_ft)  # nothing edited in place


def test_base_patch_takes_the_largest_moves():
    delta = {"a": torch.tensor([0.1, -5.0, 0.2]), "b": torch.tensor([[3.0, -0.05], [0.0, 1.0]])}
    patch = base_patch(delta, 3 / 7)
    assert patch["a"].tolist() == [0.0, 1.0, 0.0] and patch["b"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_mask_gradient_matches_finite_differences(models, small_data):
    ft, pre, tok = models
    from factrecall.data.dataset import load_dataset
    from factrecall.encode import collate, encode_qa
    ft64, pre64 = ft.double(), pre.double()
    try:
        p_pre = _params(pre64)
        noise = torch.Generator().manual_seed(3)  # a sizeable Δ: a 4-step run moves weights by ~1e-3 only
        delta = {n: torch.randn(p.shape, generator=noise, dtype=torch.float64) * 0.05 for n, p in p_pre.items()}
        base = {n: (torch.rand(d.shape, generator=torch.Generator().manual_seed(1)) < 0.5).double()
                for n, d in delta.items()}
        gen = torch.Generator().manual_seed(2)
        scores = {n: (torch.rand(d.shape, generator=gen, dtype=torch.float64) * 4 - 2) for n, d in delta.items()}
        rows = load_dataset(small_data).qa_split("id")[:8]
        batch = collate([encode_qa(tok, q) for q in rows], tok.pad_token_id)

        labels = batch.pop("labels")[:, 1:]

        def loss(s):  # bias 0 keeps σ' large; the loss in float64 (HF's own loss upcasts only to float32)
            logits = functional_call(ft64, grafted_parameters(p_pre, delta, relaxed_mask(base, s, bias=0.0)),
                                     args=(), kwargs=batch).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)

        name = "model.layers.0.self_attn.q_proj.weight"
        s = {n: v.clone().requires_grad_(n == name) for n, v in scores.items()}
        grad = torch.autograd.grad(loss(s), s[name])[0]
        eps = 1e-2  # HF computes rotary cos/sin in float32 even in a float64 model: ~1e-7 noise in the loss
        largest = grad.abs().flatten().topk(3).indices  # entries whose loss change stands above rounding
        for index in [tuple(int(i) for i in torch.unravel_index(j, grad.shape)) for j in largest]:
            plus = {n: v.detach().clone() for n, v in s.items()}
            minus = {n: v.detach().clone() for n, v in s.items()}
            plus[name][index] += eps
            minus[name][index] -= eps
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            assert float(grad[index]) == pytest.approx(float(fd), rel=5e-3)
    finally:
        ft.float()
        pre.float()


def test_graft_run_writes_mask_and_json(run):
    result = graft_run(run, sparsity=0.5, steps=2, eval_people=5)
    assert (run / "analysis" / "graft.json").is_file() and (run / "analysis" / "graft_mask.safetensors").is_file()
    assert result["base_patch"]["size"] == round(0.5 * result["parameters"])
    assert set(result["graft"]["accuracy"]) == {"qa_id", "qa_ood", "bio"}
    from factrecall.analysis.shared import load_masks
    mask = load_masks(run / "analysis" / "graft_mask.safetensors", "graft")
    assert sum(int(m.sum()) for m in mask.values()) == result["graft"]["size"]


@pytest.mark.parametrize("kwargs, message", [({"sparsity": 0.0}, "strictly between 0 and 1"),
                                             ({"sparsity": 1.5}, "strictly between 0 and 1"),
                                             ({"lr": -1.0}, "--lr positive")])
def test_graft_bad_input(run, kwargs, message):
    with pytest.raises(UserError, match=message):
        graft_run(run, **kwargs)


def test_heads_on_the_grafted_model(run, models, tmp_path):
    import shutil

    from factrecall.analysis.circuit import circuit_curves
    from factrecall.analysis.graft import make_grafted
    from factrecall.analysis.shared import load_masks, save_bool_masks

    graft_run(run, sparsity=0.5, steps=1, eval_people=5)
    r = circuit_curves(run, "head", ("shared_size",), eval_people=5, on="grafted")
    assert r["on"] == "grafted" and (run / "analysis" / "heads-grafted.json").is_file()
    assert set(r["unablated"]) == {"qa_id", "qa_ood"}  # BIO only with bio=True
    # the in-memory grafted copy equals the functional θ_pre + γ⊙Δ, in logits
    ft, pre, tok = models
    mask = load_masks(run / "analysis" / "graft_mask.safetensors", "graft")
    p_ft, p_pre = _params(ft), _params(pre)
    params = grafted_parameters(p_pre, {n: p_ft[n] - p_pre[n] for n in p_ft}, {n: m.float() for n, m in mask.items()})
    ids = torch.tensor([tok("Where did he work? Answer:")["input_ids"]])
    copy, _ = load_model(run / "model")
    make_grafted(copy.eval(), p_pre, mask)
    with torch.no_grad():
        torch.testing.assert_close(copy(ids).logits, functional_call(ft, params, args=(ids,)).logits,
                                   rtol=1e-6, atol=1e-6)

    # a graft mask of another model is refused, and so is --on grafted without a mask
    other = tmp_path / "other"
    shutil.copytree(run, other)
    bad = {n: torch.zeros(3, 3, dtype=torch.bool) for n in mask}
    save_bool_masks(other / "analysis" / "graft_mask.safetensors", {"graft": bad}, {})
    with pytest.raises(UserError, match="belongs to another model: its graft mask"):
        circuit_curves(other, "head", ("shared_size",), eval_people=2, on="grafted")
    (other / "analysis" / "graft_mask.safetensors").unlink()
    with pytest.raises(UserError, match="has no graft mask; run 'factrecall graft"):
        circuit_curves(other, "head", ("shared_size",), eval_people=2, on="grafted")
    with pytest.raises(UserError, match="unknown --on"):
        circuit_curves(other, "head", ("shared_size",), on="pretrained")

