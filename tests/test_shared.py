import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.analysis import selection, threshold
from factrecall.analysis.masks import IndexMask, load_mask
from factrecall.analysis.selection import scan, select
from factrecall.analysis.shared import analyze_run
from factrecall.analysis.units import gini, top_unit_share, unit_counts
from factrecall.errors import UserError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=4), st.integers(0, 2**31 - 1),
       st.floats(0.01, 100), st.booleans())
def test_kth_largest_matches_topk(sizes, seed, k_percent, ties):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.rand(n, generator=gen) * 10 ** torch.randint(-8, 4, (1,), generator=gen).item() for n in sizes]
    if ties:  # few distinct values: many exact ties, also at the threshold
        tensors = [torch.round(t * 3) / 3 for t in tensors]
    flat = torch.cat(tensors)
    k = threshold.top_count(k_percent, flat.numel())
    value = threshold.kth_largest(lambda: iter(tensors), k)
    top = torch.topk(flat, k)
    assert value == float(top.values[-1])
    chosen = flat >= value
    assert chosen[top.indices].all()  # ⊇ topk's pick; equal without ties at the threshold
    if (flat == value).sum() == 1:
        assert chosen.sum() == k
    ks = sorted({1, k, flat.numel(), max(1, k // 2)})
    assert threshold.kth_largest_many(lambda: iter(tensors), ks) == [float(torch.topk(flat, j).values[-1]) for j in ks]


def test_kth_largest_streams_in_chunks(monkeypatch):
    monkeypatch.setattr(threshold, "CHUNK", 7)
    x = torch.rand(100)
    assert threshold.kth_largest(lambda: [x.view(10, 10)], 13) == float(torch.topk(x, 13).values[-1])


def test_threshold_rejects_bad_k_and_damaged_scores():
    with pytest.raises(UserError, match=r"\(0, 100\]"):
        threshold.top_count(0, 10)
    with pytest.raises(UserError, match=r"\(0, 100\]"):
        threshold.top_count(101, 10)
    with pytest.raises(UserError, match="NaN"):
        threshold.kth_largest(lambda: [torch.tensor([1.0, float("nan")])], 1)


def test_gini_and_top_share_on_hand_cases():
    assert gini(torch.ones(10)) == pytest.approx(0.0)
    assert gini(torch.tensor([0.0, 0, 0, 4])) == pytest.approx(0.75)  # (n-1)/n for one unit
    share = top_unit_share(torch.tensor([5.0] + [0.0] * 99))
    assert share == {"1%": 1.0, "5%": 1.0, "10%": 1.0}
    assert top_unit_share(torch.ones(100))["10%"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def run(train_smoke):
    return train_smoke("shared", model="tiny-llama-gqa")


def test_shared_sets_against_direct_computation(run):
    from factrecall.analysis.run import load_trace, model_config
    trace, config = load_trace(run), model_config(run)
    result = analyze_run(run, k=2.0, sweep=(1.0, 5.0))
    names = trace.names
    bio = torch.cat([trace.delta("bio", n).abs().flatten() for n in names])
    qa = torch.cat([trace.delta("qa", n).abs().flatten() for n in names])
    n = math.ceil(0.02 * bio.numel())
    top_bio = torch.zeros_like(bio, dtype=torch.bool)
    top_bio[torch.topk(bio, n).indices] = True
    top_qa = torch.zeros_like(qa, dtype=torch.bool)
    top_qa[torch.topk(qa, n).indices] = True
    shared = int((top_bio & top_qa).sum())
    assert result["top_bio"] == result["top_qa"] == n  # continuous scores: no ties
    assert result["shared"] == shared
    assert result["chance"] == pytest.approx(0.02 ** 2 * bio.numel())
    assert result["jaccard"] == pytest.approx(shared / int((top_bio | top_qa).sum()))
    assert [s["k"] for s in result["sweep"]] == [1.0, 5.0]
    per_tensor = result["per_tensor"]
    assert per_tensor["top_bio"] == sum(math.ceil(0.02 * trace.delta("bio", n).numel()) for n in names)
    # the saved masks are the dense top sets above, as sorted indices per tensor
    for kind, dense in (("shared", top_bio & top_qa), ("top_bio", top_bio), ("top_qa", top_qa)):
        saved = load_mask(run / "shared" / "mask.safetensors", kind)
        assert torch.equal(torch.cat([saved.dense(n).flatten() for n in names]), dense)
    masks = load_mask(run / "shared" / "mask.safetensors")
    assert masks.size() == shared
    # every shared attention entry lands on heads, every MLP entry on neurons
    attention = sum(masks.count(n) for n in names if "self_attn" in n)
    mlp = sum(masks.count(n) for n in names if ".mlp." in n)
    units = unit_counts(config, masks)
    assert float(units["heads"].sum()) == pytest.approx(attention)
    assert float(units["neurons"].sum()) == pytest.approx(mlp)
    assert sum(result["by_layer"].values()) == sum(result["by_module"].values()) == shared
    # heads counted from the indices = heads counted from the dense masks by the unit layout
    from factrecall.models.adapters import tensor_units
    heads = torch.zeros_like(units["heads"])
    for name in names:
        layout = tensor_units(config, name)
        if layout is None or layout.kind != "head":
            continue
        dense = masks.dense(name)
        per_feature = dense.sum(dim=1 - layout.axis).double()
        per_unit = torch.bincount(layout.feature_unit, weights=per_feature)
        heads[layout.layer] += (per_unit / layout.group_size).repeat_interleave(layout.group_size)
    assert torch.allclose(heads, units["heads"])


def test_one_scan_gives_what_separate_selections_give(run):
    from factrecall.analysis.run import load_trace, model_config
    trace, config = load_trace(run), model_config(run)
    points = [(1.0, "global"), (10.0, "per_tensor"), (5.0, "global")]
    summaries, kept = scan(trace, config, points, keep=(10.0, "per_tensor"))
    for k, mode in points:
        alone = select(trace, k, mode)
        assert summaries[(k, mode)]["shared"] == alone.shared.size()
        assert summaries[(k, mode)]["top_bio"] == alone.top_bio.size()
        assert summaries[(k, mode)]["heads"] == unit_counts(config, alone.shared)["heads"].tolist()
    alone = select(trace, 10.0, "per_tensor")
    assert all(torch.equal(kept.top_qa.index[n], alone.top_qa.index[n]) for n in trace.names)


def test_kv_group_entries_count_a_share_towards_each_head(run):
    from factrecall.analysis.run import model_config
    config = model_config(run)  # 4 query heads, 2 K/V groups
    mask = torch.zeros(64, 128, dtype=torch.bool)
    mask[0:32, :] = True  # all of K/V group 0 (head_dim 32)
    units = unit_counts(config, IndexMask.from_dense({"model.layers.1.self_attn.k_proj.weight": mask}))
    assert units["heads"][1].tolist() == [2048.0, 2048.0, 0.0, 0.0]


def test_selection_modes(run):
    from factrecall.analysis.run import load_trace, model_config
    trace = load_trace(run)
    s = scan(trace, model_config(run), [(10.0, "per_tensor")])[0][(10.0, "per_tensor")]
    assert s["mode"] == "per_tensor" and s["top_bio"] >= 0.1 * s["tracked"]
    for name in trace.names:  # per tensor: at least 10 % of each tensor
        assert select(trace, 10.0, "per_tensor").top_bio.count(name) >= 0.1 * trace.delta("bio", name).numel()


def test_bad_runs(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file
    with pytest.raises(UserError, match="no trace.safetensors"):
        analyze_run(tmp_path)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    trace = load_file(str(other / "trace.safetensors"))
    key = next(iter(trace))
    trace[key] = trace[key][:-1]
    save_file(trace, str(other / "trace.safetensors"))
    with pytest.raises(UserError, match="belongs to another model: .* has shape"):
        analyze_run(other)
    with pytest.raises(UserError, match=r"\(0, 100\]"):
        analyze_run(run, k=150)


def test_run_selection_reads_the_saved_masks_at_their_k_and_selects_otherwise(run, monkeypatch):
    from factrecall.analysis.run import load_trace

    analyze_run(run, 2.0, (2.0,))
    trace = load_trace(run)
    expected = select(trace, 2.0, "global")
    monkeypatch.setattr(selection, "select", lambda *a: pytest.fail("the saved masks were not read"))
    saved = selection.run_selection(run, trace, 2.0)
    for kind in ("top_bio", "top_qa", "shared"):
        a, b = getattr(saved, kind), getattr(expected, kind)
        assert a.shapes == b.shapes and a.index.keys() == b.index.keys(), kind
        assert all(torch.equal(a.index[n], b.index[n]) for n in a.index), kind
    monkeypatch.undo()
    other = selection.run_selection(run, trace, 1.0)  # another k: selected from the trace
    assert other.top_bio.size() == select(trace, 1.0, "global").top_bio.size() != saved.top_bio.size()


def _brute_ranks(trace):
    """r_T per entry over the concatenated trace (1 + the number of larger scores), by a full sort."""
    ranks = {}
    for task in ("bio", "qa"):
        scores = torch.cat([trace.delta(task, n).abs().flatten() for n in trace.names])
        ascending = scores.sort().values
        ranks[task] = 1 + scores.numel() - torch.searchsorted(ascending, scores, right=True)
    return ranks


def test_matched_set_of_the_size_of_shared_k_is_shared_k(run):
    from factrecall.analysis.run import load_trace
    trace = load_trace(run)
    for k in (0.5, 2.0):
        shared = select(trace, k).shared
        chosen = selection.matched(trace, [shared.size()])[shared.size()]
        assert chosen.size == chosen.shared.size() == shared.size()
        assert all(torch.equal(chosen.shared.index[n], shared.index[n]) for n in trace.names), k


def test_matched_sets_against_a_full_sort(run):
    """Matched(S) = the S entries of smallest (max rank, min rank, position), from ranks of a full sort; its top
    sets are the entries of rank ≤ its depth."""
    from factrecall.analysis.run import load_trace
    trace = load_trace(run)
    r = _brute_ranks(trace)
    worst, best = torch.maximum(r["bio"], r["qa"]), torch.minimum(r["bio"], r["qa"])
    position = torch.arange(worst.numel())
    order = sorted(range(worst.numel()), key=lambda i: (int(worst[i]), int(best[i]), int(position[i])))
    sizes = [1, 37, 500, trace.entries]
    got = selection.matched(trace, sizes)
    for size in sizes:
        expected = torch.zeros(trace.entries, dtype=torch.bool)
        expected[order[:size]] = True
        m = got[size]
        assert torch.equal(torch.cat([m.shared.dense(n).flatten() for n in trace.names]), expected), size
        assert m.depth == int(worst[expected].max())
        for task, top in (("bio", m.top_bio), ("qa", m.top_qa)):
            assert torch.equal(torch.cat([top.dense(n).flatten() for n in trace.names]), r[task] <= m.depth)
    with pytest.raises(ValueError):
        selection.matched(trace, [trace.entries + 1])


def test_placement_nulls_against_a_dense_simulation(run):
    """Both nulls' mean and sample sd match a simulation that places entries on dense masks (over all of a kind's
    tensors, or within each tensor) and counts heads and neurons from the unit layout; a set holding every entry of
    a kind's tensors equals both nulls exactly."""
    from factrecall.analysis.run import load_trace, model_config
    from factrecall.analysis.units import METRICS, NULLS, concentration_against_null, kind_shapes
    from factrecall.models.adapters import geometry, tensor_units
    trace, config = load_trace(run), model_config(run)
    g = geometry(config)
    mask = selection.matched(trace, [300])[300].shared
    draws = 300
    result = concentration_against_null(config, mask, draws)
    gen = torch.Generator().manual_seed(12345)

    def table_of(kind, shapes, parts):
        table = torch.zeros(g.n_layers, g.n_heads if kind == "heads" else config.intermediate_size, dtype=torch.float64)
        for (name, shape), part in zip(shapes.items(), parts):
            layout = tensor_units(config, name)
            per_feature = part.view(shape).sum(dim=[d for d in range(len(shape)) if d != layout.axis]).double()
            per_unit = torch.bincount(layout.feature_unit, weights=per_feature)
            table[layout.layer] += (per_unit / layout.group_size).repeat_interleave(layout.group_size)
        return table

    def place_dense(size, count):
        flat = torch.zeros(size, dtype=torch.bool)
        flat[torch.randperm(size, generator=gen)[:count]] = True
        return flat

    for kind, shapes in kind_shapes(config, trace.shapes).items():
        entries = sum(mask.count(n) for n in shapes)
        units = g.n_layers * (g.n_heads if kind == "heads" else config.intermediate_size)
        assert result[kind]["entries"] == entries and result[kind]["units"] == units
        sizes = [math.prod(s) for s in shapes.values()]
        simulate = {"kind_level": lambda: place_dense(sum(sizes), entries).split(sizes),
                    "per_tensor": lambda: [place_dense(n, mask.count(name)) for n, name in zip(sizes, shapes)]}
        for null in NULLS:
            tables = [table_of(kind, shapes, simulate[null]()).flatten() for _ in range(draws)]
            values = {"gini": torch.tensor([gini(t) for t in tables]),
                      "top_10%": torch.tensor([top_unit_share(t)["10%"] for t in tables])}
            for metric in METRICS:
                got = result[kind][metric][null]
                spread = float(values[metric].std(correction=1))
                assert got["null_sd"] == pytest.approx(spread, rel=0.25, abs=1e-9), (kind, metric, null)
                tolerance = 4 * spread * math.sqrt(2 / draws) + 1e-9
                assert got["null_mean"] == pytest.approx(float(values[metric].mean()), abs=tolerance), (kind, null)
                assert got["excess"] == pytest.approx(got["observed"] - got["null_mean"])
    everything = IndexMask.from_dense({n: torch.ones(s, dtype=torch.bool) for n, s in trace.shapes.items()})
    full = concentration_against_null(config, everything, 2)
    for kind in ("heads", "neurons"):
        for metric in METRICS:
            for null in NULLS:
                assert full[kind][metric][null]["null_sd"] == 0
                assert full[kind][metric][null]["excess"] == pytest.approx(0, abs=1e-12)


def test_analyze_run_reports_matched_sizes(run):
    from factrecall.analysis.run import load_trace
    trace = load_trace(run)
    result = analyze_run(run, k=1.0, sweep=(1.0,), matched_sizes=(0.001, 0.01))
    assert [p["fraction"] for p in result["matched"]] == [0.001, 0.01]
    for point in result["matched"]:
        assert point["size"] == math.ceil(point["fraction"] * trace.entries)
        assert point["heads"]["entries"] + point["neurons"]["entries"] == point["size"]  # every traced tensor has units
        for kind in ("heads", "neurons"):
            assert set(point[kind]) == {"entries", "units", "gini", "top_10%"}
            assert set(point[kind]["gini"]) == {"kind_level", "per_tensor"} and point["null_draws"] == 100
