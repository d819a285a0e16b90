"""C3's rule (`study/claims/c3_concentration.py`) table-driven and by property, and its two placement nulls
(`analysis/units.py`) against exact computations.

Each rule row builds the `matched` block of both runs' shared.json from a few numbers per unit kind: the entries
(units: 8 heads, 1,024 neurons) and, per size, Mix's and Stage's excess in every (measure, null) cell with the
null's sd and mean.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, LlamaConfig

from factrecall.analysis.masks import IndexMask
from factrecall.analysis.units import (
    METRICS,
    NULLS,
    KindLayout,
    concentration_against_null,
    kind_shapes,
    place,
    unit_counts,
)
from factrecall.analysis.registry import REGISTRY
from factrecall.models.tiny import TINY_MODELS
from factrecall.study.claims import c3_concentration
from factrecall.study.claims.verdict import AGAINST, FAILS, FOR, HOLDS, NOT_MEASURABLE, UNDETERMINED, UNRESOLVED, swap

SIZES = (0.001, 0.01, 0.05)
UNITS = {"heads": 8, "neurons": 1024}
FLIP = {HOLDS: FAILS, FAILS: HOLDS, UNDETERMINED: UNDETERMINED}


def kind(entries: int, excess: float, sd: float = 0.01, null_mean: float = 0.5, units: int = 0, **cells) -> dict:
    """One unit kind of one matched point: every (metric, null) cell at `excess` unless `cells` names it
    ("gini_per_tensor": (excess, sd, null_mean))."""
    out = {"entries": entries, "units": units}
    for metric in METRICS:
        out[metric] = {}
        for null in NULLS:
            e, s, m = cells.get(f"{metric}_{null}", (excess, sd, null_mean))
            out[metric][null] = {"observed": m + e, "null_mean": m, "null_sd": s, "excess": e}
    return out


def shared_json(heads: dict, neurons: dict) -> dict:
    """A run's shared.json: {fraction: (entries, excess, **cells)} per unit kind, the same sizes for both kinds."""
    points = []
    for f in SIZES:
        h, n = heads[f], neurons[f]
        points.append({"fraction": f, "size": 1000 * round(f * 1000), "depth": 1,
                       "heads": kind(*h[:2], **h[2] if len(h) > 2 else {}, units=UNITS["heads"]),
                       "neurons": kind(*n[:2], **n[2] if len(n) > 2 else {}, units=UNITS["neurons"])})
    return {"matched": points}


def everywhere(entries: int, excess: float, **cells) -> dict:
    return {f: (entries, excess, cells) for f in SIZES}


def evidence(mix: dict, stage: dict) -> dict:
    return {"shared": {"mix": mix, "stage": stage}}


FLAT = shared_json(everywhere(5000, 0.0), everywhere(5000, 0.0))
SATURATED_TOP = {f"top_10%_{null}": (-0.5, 0.01, 1.0) for null in NULLS}  # a null at 1.000: room for nothing

ROWS = [  # (id, Mix's shared.json, Stage's, verdict, {measure: outcome}, words the reason or evidence repeats)
    ("holds", shared_json(everywhere(5000, 0.3), everywhere(5000, 0.3)), FLAT, HOLDS,
     {"heads Gini at 1%, per-tensor null": FOR, "neurons top-10% share at 5%, kind-level null": FOR},
     ("both unit kinds favour Mix", "heads holds: 12 of 12 measurable cells favour Mix, none Stage",
      "per unit kind: heads holds, neurons holds", "heads (8 units)", "+0.300 vs +0.000 Mix")),
    ("fails", FLAT, shared_json(everywhere(5000, 0.3), everywhere(5000, 0.3)), FAILS,
     {"heads Gini at 1%, per-tensor null": AGAINST},
     ("both unit kinds favour Stage", "0 of 12 measurable cells favour Mix, 12 Stage")),
    ("kinds_disagree", shared_json(everywhere(5000, 0.3), everywhere(5000, 0.0)),
     shared_json(everywhere(5000, 0.0), everywhere(5000, 0.3)), UNDETERMINED, {},
     ("the unit kinds differ", "heads holds", "neurons does not hold")),
    ("within_the_null_resolution", shared_json(everywhere(5000, 0.02), everywhere(5000, 0.02)), FLAT, UNDETERMINED,
     {"heads Gini at 1%, kind-level null": UNRESOLVED},  # 0.02 < 2·√(0.01² + 0.01²) = 0.028
     ("neither unit kind decides",)),
    ("one_cell_against_does_not_fail_a_kind",
     shared_json(everywhere(5000, 0.3, gini_per_tensor=(-0.3, 0.01, 0.5)), everywhere(5000, 0.3)), FLAT,
     UNDETERMINED, {"heads Gini at 5%, per-tensor null": AGAINST},
     ("heads undetermined: 9 of 12 measurable cells favour Mix, 3 Stage", "neurons holds")),
    ("too_few_entries_are_not_measurable_and_ignored",  # Stage's higher excess at 0.1 % counts for nothing
     shared_json(everywhere(5000, 0.3), {0.001: (900, -0.5), 0.01: (5000, 0.3), 0.05: (5000, 0.3)}),
     shared_json(everywhere(5000, 0.0), {0.001: (2, 0.5), 0.01: (5000, 0.0), 0.05: (5000, 0.0)}), HOLDS,
     {"neurons Gini at 0.1%, kind-level null": NOT_MEASURABLE},
     ("neurons holds: not measurable below 1%, 8 of 8", "Stage has 2 neurons entries for 1,024 units",
      "0.1% (entries Mix 900, Stage 2): not measurable")),
    ("a_saturated_null_is_not_measurable", shared_json(everywhere(5000, 0.3), everywhere(5000, 0.3)),
     shared_json(everywhere(5000, 0.0), everywhere(5000, 0.0, **SATURATED_TOP)), HOLDS,
     {"neurons top-10% share at 1%, kind-level null": NOT_MEASURABLE, "neurons Gini at 1%, kind-level null": FOR},
     ("neurons holds: 6 of 6 measurable cells", "Stage's null is saturated (mean 1.000)", "n/m")),
    ("one_kind_only_is_undetermined",
     shared_json(everywhere(5000, 0.3), everywhere(10, 0.3)), shared_json(everywhere(5000, 0.0), everywhere(10, 0.0)),
     UNDETERMINED, {"neurons Gini at 5%, per-tensor null": NOT_MEASURABLE},
     ("the unit kinds differ", "heads holds", "neurons undetermined: not measurable at any size")),
]


@pytest.mark.parametrize("mix, stage, verdict, outcomes, words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_rule(mix, stage, verdict, outcomes, words):
    got = c3_concentration.rule(evidence(mix, stage))
    assert got.verdict == verdict, got.why
    assert len(got.measures) == len(SIZES) * 2 * len(METRICS) * len(NULLS)
    for name, outcome in outcomes.items():
        assert next(m.outcome for m in got.measures if m.name == name) == outcome, name
    for word in words:
        assert word in got.why + " " + got.evidence + " " + "; ".join(m.unmeasurable or "" for m in got.measures)
    swapped = c3_concentration.rule(swap(evidence(mix, stage)))
    assert swapped.verdict == FLIP[verdict]


def test_the_resolution_is_the_nulls_spread():
    """2·√(sd_mix² + sd_stage²): a gap of 0.1 resolves with sd 0.03 and 0.02 (0.072), not with 0.04 and 0.03
    (0.1)."""
    def judged(sd_mix: float, sd_stage: float):
        mix, stage = everywhere(5000, 0.1, sd=sd_mix), everywhere(5000, 0.0, sd=sd_stage)
        return c3_concentration.rule(evidence(shared_json(mix, mix), shared_json(stage, stage)))

    resolved = judged(0.03, 0.02)
    assert resolved.verdict == HOLDS
    assert resolved.measures[0].resolution == pytest.approx(2 * math.hypot(0.03, 0.02))
    within = judged(0.04, 0.03)
    assert within.verdict == UNDETERMINED and {m.outcome for m in within.measures} == {UNRESOLVED}


def test_runs_that_do_not_pair_are_undetermined():
    other_sizes = {"matched": FLAT["matched"][:2]}
    assert "not measured at the same matched sizes" in c3_concentration.rule(evidence(FLAT, other_sizes)).why
    resized = {"matched": [FLAT["matched"][0] | {"size": 7}] + FLAT["matched"][1:]}
    assert "differ in size at 0.1%" in c3_concentration.rule(evidence(FLAT, resized)).why
    old = {"matched": [{**p, "heads": {k: v for k, v in p["heads"].items() if k != "units"}} for p in FLAT["matched"]]}
    assert "rerun `shared`" in c3_concentration.rule(evidence(old, FLAT)).why
    assert c3_concentration.rule(evidence({}, {})).verdict == UNDETERMINED


cell = st.tuples(st.floats(-0.1, 0.1), st.sampled_from([0.0, 0.005, 0.05]),
                 st.sampled_from([0.1, 0.5, 0.5, 0.995, 1.0]))
kind_at_size = st.tuples(st.sampled_from([1, 500, 5000, 5000]), st.sampled_from([-0.5, 0.0, 0.5]),
                         st.fixed_dictionaries({f"{m}_{n}": cell for m in METRICS for n in NULLS}))


def shifted(spec: tuple) -> tuple:
    """(entries, shift, {cell: (noise, sd, null mean)}) → every cell's excess at shift + noise."""
    entries, shift, cells = spec
    return entries, shift, {name: (shift + noise, sd, mean) for name, (noise, sd, mean) in cells.items()}


@settings(max_examples=150, deadline=None)
@given(st.tuples(*[st.tuples(kind_at_size, kind_at_size) for _ in range(4)]))
def test_swapping_the_runs_flips_the_verdict(runs):
    """Antisymmetry on random evidence: holds ↔ does not hold, undetermined stays; the per-kind verdicts flip too."""
    mix_heads, mix_neurons, stage_heads, stage_neurons = (
        {SIZES[0]: shifted(r[0]), SIZES[1]: shifted(r[1]), SIZES[2]: shifted(r[0])} for r in runs)
    e = evidence(shared_json(mix_heads, mix_neurons), shared_json(stage_heads, stage_neurons))
    got, swapped = c3_concentration.rule(e), c3_concentration.rule(swap(e))
    assert swapped.verdict == FLIP[got.verdict]
    for k in ("heads", "neurons"):
        before = next(w for w in got.why.split("; ") if k in w)
        after = next(w for w in swapped.why.split("; ") if k in w)
        for verdict in (HOLDS, FAILS):
            assert (f"{k} {verdict}:" in before) == (f"{k} {FLIP[verdict]}:" in after)
    assert c3_concentration.CLAIM.compares


def test_the_ladder_reads_the_summary_entry():
    """The ladder's getters read the Gini excess (kind-level null) at 1 % from the shared summary entry."""
    headline = {"k": 1.0, "top_bio": 10, "top_qa": 10, "shared": 3, "chance": 0.1, "enrichment": 30.0, "jaccard": 0.2,
                "gini": {"heads": 0.5, "neurons": 0.6}, "top_unit_share": {"heads": {}, "neurons": {}}}
    shared = headline | shared_json(everywhere(5000, 0.3, gini_kind_level=(0.25, 0.01, 0.5)), everywhere(5000, 0.1))
    summary = {"shared": {"mix": REGISTRY["shared"].summary(shared)}}
    (_, heads), (_, neurons) = c3_concentration.CLAIM.ladder
    assert heads(summary, "mix") == pytest.approx(0.25) and neurons(summary, "mix") == pytest.approx(0.1)
    assert heads(summary, "stage") is None
    entry = summary["shared"]["mix"]["matched"]["0.01"]
    assert entry["neurons"]["units"] == 1024
    assert entry["heads"]["gini"]["per_tensor"] == {"excess": 0.3, "null_sd": 0.01}
    assert REGISTRY["shared"].summary(headline)["matched"] == {}


# ---- the placement nulls ------------------------------------------------------------------------------------------


def test_placement_is_the_multivariate_hypergeometric():
    """Entries per block against the exact distribution: 3 entries over blocks of 2, 3 and 1 entries (C(6,3) = 20
    equally likely subsets), and a second group at once; counts per group are kept in every draw."""
    rng = np.random.RandomState(0)
    draws = 20000
    got = place(np.tile([[3, 4]], (draws, 1)), np.array([[2, 3, 1, 0], [5, 1, 1, 1]]), rng)
    assert got.shape == (draws, 2, 4) and (got.sum(axis=2) == [3, 4]).all()
    exact = {(a, b, 3 - a - b): math.comb(2, a) * math.comb(3, b) * math.comb(1, 3 - a - b) / 20
             for a in range(3) for b in range(4) if 0 <= 3 - a - b <= 1}
    outcomes, counts = np.unique(got[:, 0, :3], axis=0, return_counts=True)
    assert {tuple(o): c / draws for o, c in zip(outcomes.tolist(), counts)}.keys() == exact.keys()
    for o, c in zip(outcomes.tolist(), counts):
        p = exact[tuple(o)]
        assert abs(c / draws - p) < 4 * math.sqrt(p * (1 - p) / draws), o
    # group 2: E[X_k] = n·s_k/N and the hypergeometric variance, N = 8, n = 4
    mean, var = got[:, 1].mean(axis=0), got[:, 1].var(axis=0)
    for k, s in enumerate([5, 1, 1, 1]):
        expected_var = 4 * (s / 8) * (1 - s / 8) * (8 - 4) / (8 - 1)
        assert mean[k] == pytest.approx(4 * s / 8, abs=4 * math.sqrt(expected_var / draws))
        assert var[k] == pytest.approx(expected_var, rel=0.1)


@pytest.fixture(scope="module")
def model_shapes():
    """tiny-llama-gqa's config and tensor shapes (2 layers, 4 query heads in 2 K/V groups, 512 neurons)."""
    cls, kwargs = TINY_MODELS["tiny-llama-gqa"]
    config = cls(vocab_size=32, **kwargs)
    assert isinstance(config, LlamaConfig)
    model = AutoModelForCausalLM.from_config(config)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return config, {n: s for group in kind_shapes(config, shapes).values() for n, s in group.items()}


def one_tensor(shapes: dict, name: str, positions) -> IndexMask:
    return IndexMask(shapes, {n: torch.tensor(positions if n == name else [], dtype=torch.int64) for n in shapes})


def test_every_block_lands_on_the_units_that_own_it(model_shapes):
    """A set holding all of one tensor equals both nulls' every draw for the per-tensor null (the same entries), so
    the blocks map onto the units exactly as `unit_counts` counts a set."""
    config, shapes = model_shapes
    for name, shape in shapes.items():
        mask = IndexMask(shapes, {n: torch.arange(math.prod(s)) if n == name else torch.zeros(0, dtype=torch.int64)
                                  for n, s in shapes.items()})
        observed = unit_counts(config, mask)
        for k, group in kind_shapes(config, shapes).items():
            layout = KindLayout(config, group, tuple(observed[k].shape))
            tables = layout.null_tables(np.array([mask.count(n) for n in group]), "per_tensor", 2,
                                        np.random.RandomState(0))
            assert torch.equal(tables, observed[k].flatten().expand(2, -1)), (name, k)


def test_the_nulls_against_their_exact_expectation(model_shapes):
    """1 entry in layer 0's k_proj: per-tensor, always 1/2 on each of a K/V group's 2 heads (Gini 0.75, top share
    0.5, sd 0); kind-level, it lands in k or v (1/3 of the heads' entries) or in q or o (Gini 0.875, top share 1).
    2 entries in q_proj, per-tensor: one head holds both with p = 4095/16383 (Gini 0.875 vs 0.75, top 1 vs 0.5)."""
    config, shapes = model_shapes
    draws = 4000
    k_proj = "model.layers.0.self_attn.k_proj.weight"
    got = concentration_against_null(config, one_tensor(shapes, k_proj, [5]), draws)["heads"]
    assert got["units"] == 8 and got["entries"] == 1
    for metric, value in (("gini", 0.75), ("top_10%", 0.5)):
        assert got[metric]["per_tensor"] == {"observed": value, "null_mean": value, "null_sd": 0.0, "excess": 0.0}
    kv = 1 / 3
    for metric, (grouped, alone) in (("gini", (0.75, 0.875)), ("top_10%", (0.5, 1.0))):
        mean = kv * grouped + (1 - kv) * alone
        sd = abs(alone - grouped) * math.sqrt(kv * (1 - kv))
        assert got[metric]["kind_level"]["null_mean"] == pytest.approx(mean, abs=4 * sd / math.sqrt(draws))
        assert got[metric]["kind_level"]["null_sd"] == pytest.approx(sd, rel=0.05)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    got = concentration_against_null(config, one_tensor(shapes, q_proj, [0, 1]), draws)["heads"]
    same = 4095 / 16383
    for metric, (apart, together) in (("gini", (0.75, 0.875)), ("top_10%", (0.5, 1.0))):
        mean = apart + (together - apart) * same
        sd = (together - apart) * math.sqrt(same * (1 - same))
        assert got[metric]["per_tensor"]["null_mean"] == pytest.approx(mean, abs=4 * sd / math.sqrt(draws))
        assert got[metric]["per_tensor"]["null_sd"] == pytest.approx(sd, rel=0.05)
        assert got[metric]["per_tensor"]["observed"] == together  # entries 0 and 1 are both head 0's


def test_the_per_tensor_null_keeps_each_tensors_count(model_shapes):
    """Every per-tensor draw keeps layer 1's o_proj entries in layer 1; the kind-level null spreads them over both
    layers (in proportion to their entries), both keep the total."""
    config, shapes = model_shapes
    mask = one_tensor(shapes, "model.layers.1.self_attn.o_proj.weight", list(range(0, 16384, 97)))
    group = kind_shapes(config, shapes)["heads"]
    layout = KindLayout(config, group, (2, 4))
    per_tensor = np.array([mask.count(n) for n in group])
    rng = np.random.RandomState(1)
    kept = layout.null_tables(per_tensor, "per_tensor", 200, rng).view(200, 2, 4)
    assert (kept[:, 0] == 0).all() and torch.allclose(kept[:, 1].sum(dim=1), torch.tensor(169.0, dtype=torch.float64))
    spread = layout.null_tables(per_tensor, "kind_level", 200, rng).view(200, 2, 4)
    assert torch.allclose(spread.sum(dim=(1, 2)), torch.tensor(169.0, dtype=torch.float64))
    assert float(spread[:, 0].sum(dim=1).mean()) == pytest.approx(169 / 2, rel=0.05)
