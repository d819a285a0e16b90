"""Shared entries counted per unit, and how concentrated they are (docs/method.md §5).

Attention head h of layer l owns its query features, its output-projection input columns and its
K/V features (a K/V group shared by g query heads counts 1/g towards each); MLP neuron j owns its
up (and gate) row and its down column. Concentration is the Gini coefficient of the counts over
units and the share held by the top 1/5/10% of units.

Both fall as a set grows (n entries over N units spread more evenly as n rises), so a set is judged
against two placement nulls, each per unit kind: `kind_level`, as many entries as the set has in
that kind's tensors placed uniformly at random over all of those tensors' entries; `per_tensor`, as
many entries in each tensor as the set has there, placed uniformly within that tensor. excess =
observed − the null's mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from factrecall.analysis.masks import IndexMask
from factrecall.models.adapters import geometry, layer_of, module_of, tensor_units

TOP_UNIT_FRACTIONS = (0.01, 0.05, 0.10)


def gini_rows(x: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of each row of non-negative counts, [..., n] → [...]: 0 = spread evenly, → 1 = all in
    one unit (0 for an empty row)."""
    x = x.double().sort(dim=-1).values
    n, total = x.shape[-1], x.sum(dim=-1)
    if n == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    g = 2 * (i * x).sum(dim=-1) / (n * total) - (n + 1) / n
    return torch.where(total > 0, g, 0.0)


def top_share_rows(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Share of each row's total held by its ⌈fraction · n⌉ largest counts (at least one), [..., n] → [...]."""
    x = x.double()
    n, total = x.shape[-1], x.sum(dim=-1)
    if n == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.float64)
    top = x.topk(max(1, math.ceil(fraction * n)), dim=-1).values.sum(dim=-1)
    return torch.where(total > 0, top / total, 0.0)


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of one table of non-negative counts (any shape)."""
    return float(gini_rows(counts.flatten()))


def top_unit_share(counts: torch.Tensor) -> dict[str, float]:
    """Share of all counts held by the top 1%, 5% and 10% of units."""
    return {f"{round(f * 100)}%": float(top_share_rows(counts.flatten(), f)) for f in TOP_UNIT_FRACTIONS}


class UnitTable:
    """Per-unit sums, added a tensor at a time: `heads` [layers, heads] and `neurons` [layers, neurons].

    `add(name, per_feature)` takes the sums of some per-entry value (1 per selected entry, or Δ²)
    over every axis but the tensor's unit axis (`feature_sums`); other tensors are ignored.
    """

    def __init__(self, config):
        self.config = config
        g = geometry(config)
        self.heads = torch.zeros(g.n_layers, g.n_heads, dtype=torch.float64)
        self.neurons: dict[int, torch.Tensor] = {}

    def add(self, name: str, per_feature: torch.Tensor) -> None:
        units = tensor_units(self.config, name)
        if units is None:
            return
        per_unit = torch.bincount(units.feature_unit, weights=per_feature.double())
        if units.kind == "head":
            self.heads[units.layer] += (per_unit / units.group_size).repeat_interleave(units.group_size)
        else:
            self.neurons[units.layer] = self.neurons.get(units.layer, 0) + per_unit

    def tables(self) -> dict[str, torch.Tensor]:
        n_neurons = max((v.numel() for v in self.neurons.values()), default=0)
        neurons = torch.zeros(self.heads.shape[0], n_neurons, dtype=torch.float64)
        for layer, v in self.neurons.items():
            neurons[layer] = v
        return {"heads": self.heads.clone(), "neurons": neurons}


def feature_sums(config, name: str, values: torch.Tensor) -> torch.Tensor | None:
    """Sums of `values` (the tensor's shape) over every axis but its unit axis; None outside units."""
    units = tensor_units(config, name)
    if units is None:
        return None
    others = [d for d in range(values.dim()) if d != units.axis]
    # a bias is its unit axis alone (and `sum(dim=[])` would sum every entry)
    return values.sum(dim=others, dtype=torch.float64) if others else values.double()


def index_feature_counts(config, name: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Selected entries per feature of the unit axis, from sorted flat indices; None outside units."""
    units = tensor_units(config, name)
    if units is None:
        return None
    inner = math.prod(shape[units.axis + 1:])
    return torch.bincount((index // inner) % shape[units.axis], minlength=shape[units.axis])


def unit_counts(config, mask: IndexMask) -> dict[str, torch.Tensor]:
    """Selected entries per unit: `heads` [layers, heads] and `neurons` [layers, neurons] (float)."""
    table = UnitTable(config)
    for name, index in mask.index.items():
        counts = index_feature_counts(config, name, index, mask.shapes[name])
        if counts is not None:
            table.add(name, counts)
    return table.tables()


UNIT_KINDS = ("heads", "neurons")
NULLS = ("kind_level", "per_tensor")  # the placement nulls a set's concentration is judged against
METRICS = ("gini", "top_10%")
PLACEMENT_BLOCK = 1 << 22  # counts held at once while placing (draws × tensors × units per tensor)


def concentration(tables: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Gini coefficient and the top-10 % share of each table of per-unit counts, [draws, units] → [draws]."""
    return {"gini": gini_rows(tables), "top_10%": top_share_rows(tables, 0.10)}


def kind_shapes(config, shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """The tensors of `shapes` whose entries belong to heads, and those that belong to neurons."""
    out: dict[str, dict[str, tuple[int, ...]]] = {kind: {} for kind in UNIT_KINDS}
    for name, shape in shapes.items():
        units = tensor_units(config, name)
        if units is not None:
            out["heads" if units.kind == "head" else "neurons"][name] = shape
    return out


def place(counts: np.ndarray, sizes: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """`counts[d, g]` entries placed uniformly at random over group g's entries, which fall into blocks of
    `sizes[g, b]` entries: the entries per block, [draws, groups] × [groups, blocks] → [draws, groups, blocks].

    Each (d, g) is one multivariate hypergeometric draw, taken by halving: the blocks (padded with empty ones
    to a power of two) split into two halves, the left half's share of the count is Hypergeometric(its entries,
    the right half's, the count), and so on down: log2(blocks) rounds of elementwise draws, O(draws × blocks)
    whatever the count. numpy's legacy sampler, because its Generator refuses populations ≥ 10⁹ (a 3 B
    model's MLP tensors hold 2.1 B entries)."""
    groups, blocks = sizes.shape
    width = 1 << (blocks - 1).bit_length()
    level = np.zeros((groups, width), dtype=np.int64)
    level[:, :blocks] = sizes
    levels = [level]
    while levels[-1].shape[1] > 1:
        levels.append(levels[-1].reshape(groups, -1, 2).sum(axis=2))
    out = counts.astype(np.int64)[:, :, None]
    for level in reversed(levels[:-1]):
        left = np.broadcast_to(level[None, :, 0::2], out.shape)
        right = np.broadcast_to(level[None, :, 1::2], out.shape)
        split = (out > 0) & (left > 0) & (right > 0)
        take = np.where(right == 0, out, 0)
        take[split] = rng.hypergeometric(left[split], right[split], out[split])
        out = np.stack([take, out - take], axis=-1).reshape(out.shape[0], groups, -1)
    return out[:, :, :blocks]


class KindLayout:
    """The tensors of one unit kind as blocks of entries that land on the same units.

    Block (t, b) holds the entries of tensor t owned by its b-th unit index (a head, a K/V group or a
    neuron); `tables` adds entries per block into per-unit tables of `shape` (a K/V group's share 1/g
    to each of its g query heads), as `UnitTable` does for a set."""

    def __init__(self, config, shapes: dict[str, tuple[int, ...]], shape: tuple[int, int]):
        self.shape = shape
        layouts = [tensor_units(config, name) for name in shapes]
        self.entries = np.array([math.prod(s) for s in shapes.values()], dtype=np.int64)  # [tensors]
        features = [torch.bincount(u.feature_unit).numpy() for u in layouts]  # features per unit index, per tensor
        self.blocks = np.zeros((len(layouts), max(f.size for f in features)), dtype=np.int64)  # [tensors, blocks]
        slot, column, weight = [], [], []  # block t·blocks + b adds `weight` of its entries to table column `column`
        for t, (units, owned, entries) in enumerate(zip(layouts, features, self.entries)):
            self.blocks[t, :owned.size] = owned * (entries // units.feature_unit.numel())
            unit = torch.arange(owned.size)
            for share in range(units.group_size):
                slot.append(t * self.blocks.shape[1] + unit)
                column.append(units.layer * shape[1] + unit * units.group_size + share)
                weight.append(torch.full((owned.size,), 1 / units.group_size, dtype=torch.float64))
        self.slot, self.column, self.weight = torch.cat(slot), torch.cat(column), torch.cat(weight)

    def tables(self, per_block: np.ndarray) -> torch.Tensor:
        """Per-unit tables [draws, units] from entries per block [draws, tensors, blocks]."""
        flat = torch.from_numpy(per_block).reshape(per_block.shape[0], -1).double()
        out = torch.zeros(flat.shape[0], math.prod(self.shape), dtype=torch.float64)
        return out.index_add_(1, self.column, flat[:, self.slot] * self.weight)

    def null_tables(self, per_tensor: np.ndarray, null: str, draws: int, rng: np.random.RandomState) -> torch.Tensor:
        """Per-unit tables [draws, units] of `draws` placements of a set with `per_tensor` entries per tensor:
        `kind_level` places their sum uniformly over all the kind's entries (the count per tensor drawn first,
        multivariate hypergeometric over the tensors' sizes), `per_tensor` keeps each tensor's count."""
        step = max(1, PLACEMENT_BLOCK // self.blocks.size)
        out = []
        for start in range(0, draws, step):
            n = min(step, draws - start)
            counts = (place(np.full((n, 1), per_tensor.sum()), self.entries[None], rng)[:, 0] if null == "kind_level"
                      else np.broadcast_to(per_tensor, (n, per_tensor.size)))
            out.append(self.tables(place(counts, self.blocks, rng)))
        return torch.cat(out)


def concentration_against_null(config, mask: IndexMask, draws: int, seed: int = 0) -> dict[str, dict]:
    """Per unit kind: `entries` (the set's entries in that kind's tensors), `units` (the kind's units) and, for
    `gini` and `top_10%` against each of NULLS, {observed, null_mean, null_sd (sample sd over `draws` ≥ 2
    seeded placements), excess = observed − null_mean}."""
    observed = unit_counts(config, mask)
    rng = np.random.RandomState(seed)
    out = {}
    for kind, shapes in kind_shapes(config, mask.shapes).items():
        layout = KindLayout(config, shapes, tuple(observed[kind].shape))
        per_tensor = np.array([mask.count(n) for n in shapes], dtype=np.int64)
        measured = {m: float(v) for m, v in concentration(observed[kind].flatten()).items()}
        nulls = {null: concentration(layout.null_tables(per_tensor, null, draws, rng)) for null in NULLS}
        out[kind] = {"entries": int(per_tensor.sum()), "units": observed[kind].numel()}
        for metric in METRICS:
            out[kind][metric] = {}
            for null, values in nulls.items():
                mean = float(values[metric].mean())
                out[kind][metric][null] = {"observed": measured[metric], "null_mean": mean,
                                           "null_sd": float(values[metric].std(correction=1)),
                                           "excess": measured[metric] - mean}
    return out


def breakdown(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """Selected entries `by_layer` (layer index, or "other") and `by_module` (path inside a block),
    from {tensor name: selected entries}."""
    by_layer: dict[str, int] = {}
    by_module: dict[str, int] = {}
    for name, count in counts.items():
        by_layer[layer_of(name)] = by_layer.get(layer_of(name), 0) + count
        by_module[module_of(name)] = by_module.get(module_of(name), 0) + count
    return {"by_layer": by_layer, "by_module": by_module}


def by_cell(counts: dict[str, int]) -> dict[tuple[str, str], int]:
    """Selected entries per (layer, module) cell, from {tensor name: selected entries}."""
    cells: dict[tuple[str, str], int] = {}
    for name, count in counts.items():
        key = (layer_of(name), module_of(name))
        cells[key] = cells.get(key, 0) + count
    return cells
