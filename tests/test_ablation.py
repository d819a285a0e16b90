import pytest
import torch

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.masks import IndexMask
from factrecall.analysis.weights import reset_to_base
from factrecall.errors import UserError
from factrecall.models.loading import load_model
from factrecall.models.tensor_files import TensorFiles


@pytest.fixture(scope="module")
def run(train_smoke):
    return train_smoke("ablate")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_empty_set_changes_nothing_and_full_set_gives_theta_pre(run):
    model, tok = load_model(run / "model")
    base, _ = load_model(run / "base")
    model.eval()
    base.eval()
    base_files = TensorFiles(run / "base")  # θ_pre read from disk a tensor at a time, as ablate_run does
    assert base_files.shapes == {n: tuple(p.shape) for n, p in base.named_parameters()}
    ids = torch.tensor([tok("Which university did he attend? Answer:")["input_ids"]])
    before = _logits(model, ids)
    params = dict(model.named_parameters())
    empty = IndexMask.from_dense({n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()})
    with reset_to_base(model, base_files, empty):
        assert torch.equal(_logits(model, ids), before)
    everything = IndexMask.from_dense({n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})
    with reset_to_base(model, base_files, everything):
        assert torch.equal(_logits(model, ids), _logits(base, ids))
    assert torch.equal(_logits(model, ids), before)  # θ_ft restored after the block
    # a dense bool mask and its index mask reset the same entries to the same values
    gen = torch.Generator().manual_seed(0)
    dense = {n: torch.rand(p.shape, generator=gen) < 0.3 for n, p in params.items()}
    with reset_to_base(model, base_files, dense):
        by_dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    with reset_to_base(model, base_files, IndexMask.from_dense(dense)):
        by_index = {n: p.detach().clone() for n, p in model.named_parameters()}
    pre = dict(base.named_parameters())
    for n, p in params.items():
        assert torch.equal(by_dense[n], by_index[n])
        assert torch.equal(by_dense[n], torch.where(dense[n], pre[n].detach(), p.detach()))


def test_ablate_run_writes_every_set(run):
    result = ablate_run(run, k=5.0, seeds=2, eval_people=5)
    assert (run / "analysis" / "ablation.json").is_file()
    size = result["shared"]["size"]
    assert size > 0 and result["random"]["size"] == size
    assert result["top_bio_only"]["size"] <= size and len(result["random"]["runs"]) == 2
    for name in ("random", "top_bio_only", "top_qa_only"):
        assert set(result[name]["mean_change"]) == {"qa_id", "qa_ood", "bio"}
    with pytest.raises(UserError, match="at least 1"):
        ablate_run(run, seeds=0)


def test_ablate_refuses_run_without_base(run, tmp_path):
    import shutil
    other = tmp_path / "run"
    shutil.copytree(run, other)
    shutil.rmtree(other / "base")
    with pytest.raises(UserError, match="no base/"):
        ablate_run(other)


def test_ablate_run_with_a_size_ablates_the_matched_set_and_its_controls(run):
    import math

    from factrecall.analysis.run import load_pair, load_trace, run_dataset
    from factrecall.analysis.selection import matched
    from factrecall.encode import pad_id
    from factrecall.evaluation.exact_match import eval_sets, evaluate
    result = ablate_run(run, k=5.0, seeds=1, eval_people=5, size=0.01)
    trace = load_trace(run)
    n = math.ceil(0.01 * trace.entries)
    m = result["matched"]
    assert m["fraction"] == 0.01 and m["shared"]["size"] == m["random"]["size"] == n
    assert 0 < m["top_bio_only"]["size"] <= n and 0 < m["top_qa_only"]["size"] <= n
    assert result["shared"]["size"] != n  # the set at k is reported beside it
    # the ablated set is Matched(n): resetting it directly gives the same accuracies
    model, tok, base = load_pair(run, "", "cpu")
    sets = eval_sets(tok, run_dataset(run), 5)
    with reset_to_base(model, base, matched(trace, [n])[n].shared):
        acc = evaluate(model, sets, pad_id(tok))
    assert {s: a["accuracy"] for s, a in acc.items()} == m["shared"]["accuracy"]
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        ablate_run(run, size=1.5)
