import pytest
import torch

from factrecall.analysis.ablation import ablate_run, random_like, reset_to_base, sample_from
from factrecall.errors import UserError
from factrecall.models.loading import load_model
from factrecall.presets import train_config
from factrecall.training.loop import train


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate") / "run"
    train(train_config("smoke", strategy="mix", max_steps=4, eval_people=2, checkpoint_every=0), small_data, out)
    return out


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_empty_set_changes_nothing_and_full_set_gives_theta_pre(run):
    model, tok = load_model(run / "model")
    base, _ = load_model(run / "base")
    model.eval()
    base.eval()
    base_state = {n: p.detach() for n, p in base.named_parameters()}
    ids = torch.tensor([tok("Which university did he attend? Answer:")["input_ids"]])
    before = _logits(model, ids)
    params = dict(model.named_parameters())
    empty = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    with reset_to_base(model, base_state, empty):
        assert torch.equal(_logits(model, ids), before)
    everything = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    with reset_to_base(model, base_state, everything):
        assert torch.equal(_logits(model, ids), _logits(base, ids))
    assert torch.equal(_logits(model, ids), before)  # θ_ft restored after the block


def test_random_sets_match_counts_per_tensor_and_differ_between_seeds():
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(30, 40, generator=gen) > 0.9, "b": torch.rand(50, generator=gen) > 0.5}
    r0, r1 = random_like(masks, 0), random_like(masks, 1)
    for n in masks:
        assert r0[n].sum() == r1[n].sum() == masks[n].sum() and r0[n].shape == masks[n].shape
    assert not all(torch.equal(r0[n], r1[n]) for n in masks)
    assert all(torch.equal(r0[n], random_like(masks, 0)[n]) for n in masks)


def test_sample_from_stays_inside_candidates_with_the_requested_size():
    gen = torch.Generator().manual_seed(1)
    candidates = {"a": torch.rand(20, 20, generator=gen) > 0.7, "b": torch.rand(100, generator=gen) > 0.2}
    picked = sample_from(candidates, 37, seed=3)
    assert sum(int(m.sum()) for m in picked.values()) == 37
    assert all(not (picked[n] & ~candidates[n]).any() for n in candidates)


def test_ablate_run_writes_every_set(run):
    result = ablate_run(run, k=5.0, seeds=2, eval_people=5)
    assert (run / "analysis" / "ablation.json").is_file()
    size = result["shared"]["size"]
    assert size > 0 and result["random"]["size"] == size
    assert result["top_bio_only"]["size"] <= size and len(result["random"]["runs"]) == 2
    for name in ("random", "top_bio_only", "top_qa_only"):
        assert set(result[name]["mean_drop"]) == {"qa_id", "qa_ood", "bio"}
    with pytest.raises(UserError, match="at least 1"):
        ablate_run(run, seeds=0)


def test_ablate_refuses_run_without_base(run, tmp_path):
    import shutil
    other = tmp_path / "run"
    shutil.copytree(run, other)
    shutil.rmtree(other / "base")
    with pytest.raises(UserError, match="no base/"):
        ablate_run(other)
