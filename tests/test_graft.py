import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from factrecall.analysis import graft as graft_module
from factrecall.analysis.graft import (
    BLOCKS,
    RECOVER,
    base_patch,
    bisect,
    graft_run,
    grafted,
    of_people,
    relaxed_mask,
    score_gradient,
    split_people,
)
from factrecall.analysis.masks import IndexMask, load_mask, save_masks
from factrecall.analysis.run import run_dataset
from factrecall.analysis.weights import load_weights, make_grafted
from factrecall.data.dataset import load_dataset
from factrecall.encode import pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.models.adapters import tracked_parameter_names
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


def _traced(model) -> dict[str, tuple[int, ...]]:
    """The block matrices grafting works on, with their shapes."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return {n: shapes[n] for n in tracked_parameter_names(model)}


def _report_sets(run, tok, eval_people):
    """What graft.json's accuracies are measured on: the report half of the ID people and the OOD people."""
    dataset = run_dataset(run)
    _, report = split_people(dataset, 0)
    ood = [p["person_id"] for p in dataset.people if p["split"] == "ood"]
    return eval_sets(tok, of_people(dataset, [*report, *ood]), eval_people), pad_id(tok)


def test_all_ones_is_theta_ft_and_all_zeros_is_theta_pre_on_the_traced_tensors(run, models):
    """γ ≡ 1 over the traced block matrices is θ_ft; γ ≡ 0 is θ_pre there and θ_ft in every other tensor
    (embeddings, norms, head), checked parameter by parameter and in logits against the functional form."""
    ft, pre, tok = models
    ids = torch.tensor([tok("Where did he work? Answer:")["input_ids"]])
    traced = _traced(ft)
    p_ft, p_pre = _params(ft), _params(pre)
    assert traced and set(traced) < set(p_ft)  # embeddings and norms are not grafted
    for fill in (True, False):
        copy, _ = load_model(run / "model")
        make_grafted(copy.eval(), TensorFiles(run / "base"), IndexMask.from_dense(
            {n: torch.full(s, fill) for n, s in traced.items()}))
        expected = {n: (p_ft[n] if fill or n not in traced else p_pre[n]) for n in p_ft}  # computed independently
        for n, p in copy.named_parameters():
            assert torch.equal(p.detach(), expected[n]), n
        with torch.no_grad():
            reference = functional_call(ft, expected, args=(ids,)).logits
        assert torch.equal(_logits(copy, ids), _logits(ft, ids) if fill else reference)
        # the relaxed formula at γ ≡ 1 / 0 on the traced tensors, in the functional form
        params = {n: grafted(p_pre[n], p_ft[n], torch.full_like(p_ft[n], float(fill))) if n in traced else p_ft[n]
                  for n in p_ft}
        with torch.no_grad():
            torch.testing.assert_close(functional_call(ft, params, args=(ids,)).logits, reference,
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
    ft, _, tok = models
    result = graft_run(run, sparsity=0.5, steps=2, eval_people=5)
    assert (run / "analysis" / "graft.json").is_file() and (run / "analysis" / "graft_mask.safetensors").is_file()
    traced = _traced(ft)
    assert result["traced"] == sum(math.prod(s) for s in traced.values())
    assert result["base_patch"]["size"] == round(0.5 * result["traced"])
    assert set(result["graft"]["accuracy"]) == {"qa_id", "qa_ood", "bio"}
    assert result["steps_run"] % 2 == 0 and result["converged"] == (result["best_step"] < result["steps_run"])
    mask = load_mask(run / "analysis" / "graft_mask.safetensors", "graft")
    assert mask.size() == result["graft"]["size"] and set(mask.index) == set(traced)
    # the reported accuracy is that of θ(γ) rebuilt from the saved mask, on the report people; θ_ft's on the same
    sets, pad = _report_sets(run, tok, 5)
    copy, _ = load_model(run / "model")
    finetuned = evaluate(copy.eval(), sets, pad)
    assert {m: a["accuracy"] for m, a in finetuned.items()} == result["finetuned"]
    assert {m: a["n"] for m, a in finetuned.items()} == result["n"]
    make_grafted(copy, TensorFiles(run / "base"), mask)
    assert {m: a["accuracy"] for m, a in evaluate(copy, sets, pad).items()} == result["graft"]["accuracy"]
    assert result["people"]["selection"] + result["people"]["report"] == sum(
        p["split"] == "id" for p in run_dataset(run).people)


def test_selection_and_report_people_are_disjoint_halves_fixed_by_the_seed(small_data):
    dataset = load_dataset(small_data)
    ids = {p["person_id"] for p in dataset.people if p["split"] == "id"}
    selection, report = split_people(dataset, 0)
    assert not set(selection) & set(report) and set(selection) | set(report) == ids
    assert len(report) - len(selection) == len(ids) % 2 and len(selection) == len(ids) // 2
    assert split_people(load_dataset(small_data), 0) == (selection, report)  # fixed for the dataset and seed
    assert split_people(dataset, 1) != (selection, report)
    half = of_people(dataset, report)
    assert {q["person_id"] for q in half.qa} == set(report) == {b["person_id"] for b in half.bios}


@settings(max_examples=300, deadline=None)
@given(threshold=st.floats(0.0, 1.0), width=st.sampled_from([0.3, 0.1, 0.02, 0.005]),
       grid=st.lists(st.floats(0.001, 0.999), max_size=6))
def test_bisection_brackets_a_monotone_target(threshold, width, grid):
    """A synthetic graft that reaches the target from sparsity `threshold` on (never, when it is 1): the bracket
    holds the threshold, is at most `width` wide, reports the sizes `reaches` gave, and probes each point once."""
    total, probes = 10_000, []

    def reaches(s: float) -> tuple[bool, int]:
        probes.append(s)
        return s >= threshold, round(s * total) + 7  # a size the search chose, not the base patch's

    b = bisect(reaches, grid, width, total)
    assert b["miss"]["sparsity"] < threshold <= b["hit"]["sparsity"] or (threshold == 0 and b["miss"]["sparsity"] == 0)
    assert b["width"] == b["hit"]["sparsity"] - b["miss"]["sparsity"] <= width * (1 + 1e-9)
    assert len(set(probes)) == len(probes) and all(0 < s < 1 for s in probes)
    for end, reached in (("miss", False), ("hit", True)):
        s = b[end]["sparsity"]
        assert b[end]["size"] == ({0.0: 0, 1.0: total}[s] if s in (0.0, 1.0) else round(s * total) + 7)
        assert s in (0.0, 1.0) or (s >= threshold) == reached
    assert len(probes) <= len(set(grid)) + math.ceil(math.log2(1 / width)) + 1


def test_bisection_probes_the_grid_first_and_keeps_the_exact_ends():
    probes = []

    def never(s: float) -> tuple[bool, int]:
        probes.append(s)
        return False, 1
    b = bisect(never, (0.4, 0.2), 0.1, 50)
    assert probes == [0.4, 0.7, 0.85, 0.925]  # the middle grid point, then halving above it
    assert b == {"miss": {"sparsity": 0.925, "size": 1}, "hit": {"sparsity": 1.0, "size": 50},
                 "width": pytest.approx(0.075)}
    assert bisect(lambda s: (True, 1), (), 0.25, 50)["miss"] == {"sparsity": 0.0, "size": 0}


def _fake_evaluate(accuracies):
    """`evaluate` answering `next(accuracies)` on every set (the search's criterion and every report)."""
    def evaluate(model, sets, pad, batch_size=256):
        value = next(accuracies)
        return {n: {"accuracy": value, "n": 1} for n in sets}
    return evaluate


def test_a_search_goes_on_while_its_best_step_is_its_last(run, monkeypatch):
    import itertools
    monkeypatch.setattr(graft_module, "evaluate", _fake_evaluate(itertools.count(0, 1e-3)))  # every step improves
    always = graft_run(run, sparsity=0.5, steps=2, eval_people=2)
    assert (always["best_step"], always["steps_run"], always["converged"]) == (2 * BLOCKS, 2 * BLOCKS, False)
    monkeypatch.setattr(graft_module, "evaluate", _fake_evaluate(itertools.repeat(0.5)))  # none improves on B
    never = graft_run(run, sparsity=0.5, steps=2, eval_people=2)
    assert (never["best_step"], never["steps_run"], never["converged"]) == (0, 2, True)


@pytest.mark.parametrize("kwargs, message", [({"sparsity": 0.0}, "strictly between 0 and 1"),
                                             ({"sparsity": 1.5}, "strictly between 0 and 1"),
                                             ({"grid": (0.2, 1.0)}, "strictly between 0 and 1"),
                                             ({"bracket": 0.0}, "--bracket must lie strictly between"),
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
    params = {n: grafted(p_pre[n], p_ft[n], mask.dense(n).float()) if n in mask.index else p_ft[n] for n in p_ft}
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



def test_bisected_points_are_the_grafts_of_their_base_patches(run, models):
    """Without search steps every searched point is its base patch B: θ(B) rebuilt and evaluated here gives its
    accuracy; `finetuned` is γ ≡ 1 (θ_ft) on the same people; the bracket's ends are a miss and a hit of the target."""
    ft, pre, tok = models
    result = graft_run(run, sparsity=0.5, steps=0, eval_people=5, grid=(0.2,), bracket=0.1)
    sweep, b = result["sweep"], result["bracket"]
    searched = [p["sparsity"] for p in sweep]
    assert searched == sorted(searched) and 0.5 in searched
    sets, pad = _report_sets(run, tok, 5)
    traced = _traced(ft)

    def accuracy(mask: IndexMask) -> dict:
        copy, _ = load_model(run / "model")
        make_grafted(copy.eval(), TensorFiles(run / "base"), mask)
        return {m: a["accuracy"] for m, a in evaluate(copy, sets, pad).items()}

    target = RECOVER * result["finetuned"]["qa_id"]
    for point in sweep:
        patch = base_patch(traced, _params(ft), _params(pre), point["sparsity"])
        assert point["size"] == point["base_patch"]["size"] == patch.size()
        assert (point["best_step"], point["steps_run"], point["converged"]) == (0, 0, True)
        assert point["accuracy"] == point["base_patch"]["accuracy"] == accuracy(patch)
    assert result["finetuned"] == accuracy(IndexMask.from_dense({n: torch.ones(s, dtype=torch.bool)
                                                                 for n, s in traced.items()}))
    by_sparsity = {p["sparsity"]: p for p in sweep}
    assert by_sparsity[0.5]["accuracy"] == result["graft"]["accuracy"]
    assert b["width"] == b["hit"]["sparsity"] - b["miss"]["sparsity"] <= 0.1 + 1e-12
    for end, reached in (("miss", False), ("hit", True)):
        point = by_sparsity.get(b[end]["sparsity"])
        if point:  # a searched end (s = 0 and s = 1 are exact: γ ≡ 0 and γ ≡ 1)
            assert (point["accuracy"]["qa_id"] >= target - 1e-9) == reached and point["size"] == b[end]["size"]
    assert [s for s in by_sparsity if b["miss"]["sparsity"] < s < b["hit"]["sparsity"]] == []


def test_bisection_leaves_the_main_search_as_it_was(run):
    alone = graft_run(run, sparsity=0.5, steps=1, eval_people=5)
    bisected = graft_run(run, sparsity=0.5, steps=1, eval_people=5, grid=(0.2,), bracket=0.2)
    assert bisected["graft"] == alone["graft"] and bisected["best_step"] == alone["best_step"]
    assert "sweep" not in alone and "bracket" not in alone and bisected["recover"] == RECOVER
    assert {p["sparsity"]: p["size"] for p in bisected["sweep"]}[0.5] == alone["graft"]["size"]
