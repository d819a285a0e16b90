import pytest
import torch

from factrecall.analysis import masks as masks_module
from factrecall.analysis.masks import IndexMask, draw, load_mask, random_like, sample_from, save_masks
from factrecall.errors import UserError


def _dense_pair(seed: int):
    gen = torch.Generator().manual_seed(seed)
    a = {"x": torch.rand(30, 40, generator=gen) > 0.7, "y": torch.rand(50, generator=gen) > 0.4}
    b = {"x": torch.rand(30, 40, generator=gen) > 0.5, "y": torch.rand(50, generator=gen) > 0.5}
    return a, b


def test_set_operations_equal_dense_ones():
    a, b = _dense_pair(0)
    ia, ib = IndexMask.from_dense(a), IndexMask.from_dense(b)
    for n in a:
        assert torch.equal((ia & ib).dense(n), a[n] & b[n])
        assert torch.equal((ia - ib).dense(n), a[n] & ~b[n])
        assert torch.equal(ia.dense(n), a[n])
    assert ia.size() == sum(int(m.sum()) for m in a.values()) and ia.total() == 30 * 40 + 50
    assert list(ia.restrict(["y"]).index) == ["y"]


@pytest.mark.parametrize("small", [1 << 22, 16])  # the permutation path, then the bounded-memory path
@pytest.mark.parametrize("population, count", [(1000, 0), (1000, 7), (1000, 400), (1000, 900), (1000, 1000)])
def test_draw_gives_distinct_positions_in_range(monkeypatch, small, population, count):
    monkeypatch.setattr(masks_module, "SMALL", small)
    out = draw(population, count, torch.Generator().manual_seed(5))
    assert out.numel() == count and out.unique().numel() == count
    assert count == 0 or (int(out.min()) >= 0 and int(out.max()) < population)
    again = draw(population, count, torch.Generator().manual_seed(5))
    assert torch.equal(out.sort().values, again.sort().values)  # seeded


def test_draw_is_uniform_on_the_bounded_memory_path(monkeypatch):
    monkeypatch.setattr(masks_module, "SMALL", 16)
    hits = torch.zeros(100)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        hits[draw(100, 10, gen)] += 1
    # each position is drawn with probability 0.1: 200 expected, sd ≈ 13.4
    assert float(hits.min()) > 200 - 5 * 13.4 and float(hits.max()) < 200 + 5 * 13.4


def test_random_sets_match_counts_per_tensor_and_differ_between_seeds():
    a, _ = _dense_pair(1)
    mask = IndexMask.from_dense(a)
    r0, r1 = random_like(mask, 0), random_like(mask, 1)
    for n in a:
        assert r0.count(n) == r1.count(n) == mask.count(n) and r0.dense(n).shape == a[n].shape
        assert bool((r0.index[n][1:] > r0.index[n][:-1]).all())  # sorted, distinct
    assert not all(torch.equal(r0.index[n], r1.index[n]) for n in a)
    assert all(torch.equal(r0.index[n], random_like(mask, 0).index[n]) for n in a)


def test_sample_from_stays_inside_candidates_with_the_requested_size():
    a, _ = _dense_pair(2)
    candidates = IndexMask.from_dense(a)
    picked = sample_from(candidates, 37, seed=3)
    assert picked.size() == 37
    assert (picked - candidates).size() == 0
    assert sample_from(candidates, 10**6, seed=3).size() == candidates.size()  # capped at what there is


def test_files_round_trip_and_refuse_damage(tmp_path):
    a, b = _dense_pair(3)
    path = tmp_path / "m.safetensors"
    save_masks(path, {"one": IndexMask.from_dense(a), "two": IndexMask.from_dense(b)}, {"k": "1"})
    for kind, dense in (("one", a), ("two", b)):
        loaded = load_mask(path, kind, {"x": (30, 40), "y": (50,)})
        assert all(torch.equal(loaded.dense(n), dense[n]) for n in dense)
    with pytest.raises(UserError, match="belongs to another model: its one mask for x has shape"):
        load_mask(path, "one", {"x": (40, 30), "y": (50,)})
    unsorted = IndexMask({"x": (10,)}, {"x": torch.tensor([3, 1])})
    save_masks(path, {"one": unsorted}, {})
    with pytest.raises(UserError, match="not a sorted index list"):
        load_mask(path, "one")
    outside = IndexMask({"x": (10,)}, {"x": torch.tensor([3, 10])})
    save_masks(path, {"one": outside}, {})
    with pytest.raises(UserError, match="damaged"):
        load_mask(path, "one")
