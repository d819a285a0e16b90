"""Shared entries counted per unit, and how concentrated they are (docs/method.md §5).

Attention head h of layer l owns its query features, its output-projection input columns and its
K/V features (a K/V group shared by g query heads counts 1/g towards each); MLP neuron j owns its
up (and gate) row and its down column. Concentration is the Gini coefficient of the counts over
units and the share held by the top 1/5/10% of units.

Both fall as a set grows (n entries over N units spread more evenly as n rises), so a set is judged
against a placement null: as many entries in each kind's tensors as the set has there, placed
uniformly at random over all of those tensors' entries; excess = observed − the null's mean.
"""

from __future__ import annotations

import math

import torch

from factrecall.analysis.masks import IndexMask, scatter
from factrecall.models.adapters import geometry, layer_of, module_of, tensor_units

TOP_UNIT_FRACTIONS = (0.01, 0.05, 0.10)


def gini(counts: torch.Tensor) -> float:
    """Gini coefficient of non-negative counts: 0 = spread evenly, → 1 = all in one unit."""
    x = counts.double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (i * x).sum() / (n * total) - (n + 1) / n)


def top_unit_share(counts: torch.Tensor) -> dict[str, float]:
    """Share of all counts held by the top 1%, 5% and 10% of units."""
    x = counts.double().flatten().sort(descending=True).values
    total = float(x.sum())
    return {f"{round(f * 100)}%": (float(x[: max(1, math.ceil(f * x.numel()))].sum()) / total if total else 0.0)
            for f in TOP_UNIT_FRACTIONS}


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
    return values.sum(dim=[d for d in range(values.dim()) if d != units.axis], dtype=torch.float64)


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
NULL_DRAWS = 8  # seeded placements per null


def concentration(counts: torch.Tensor) -> dict[str, float]:
    """The Gini coefficient and the top-10 % share of one table of per-unit counts."""
    return {"gini": gini(counts), "top_10%": top_unit_share(counts)["10%"]}


def kind_shapes(config, shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """The tensors of `shapes` whose entries belong to heads, and those that belong to neurons."""
    out: dict[str, dict[str, tuple[int, ...]]] = {kind: {} for kind in UNIT_KINDS}
    for name, shape in shapes.items():
        units = tensor_units(config, name)
        if units is not None:
            out["heads" if units.kind == "head" else "neurons"][name] = shape
    return out


def concentration_against_null(config, mask: IndexMask, draws: int = NULL_DRAWS) -> dict[str, dict]:
    """Per unit kind: `entries` (the set's entries in that kind's tensors) and, for `gini` and `top_10%`,
    {observed, null_mean, null_std (population), excess = observed − null_mean} over `draws` seeded placements
    of that many entries uniformly over the kind's tensors (`mask.shapes` restricted to the kind)."""
    observed = unit_counts(config, mask)
    out = {}
    for kind, shapes in kind_shapes(config, mask.shapes).items():
        entries = sum(mask.count(n) for n in shapes)
        null = [concentration(unit_counts(config, scatter(shapes, entries, seed))[kind]) for seed in range(draws)]
        measured = concentration(observed[kind])
        out[kind] = {"entries": entries}
        for metric, value in measured.items():
            values = torch.tensor([d[metric] for d in null], dtype=torch.float64)
            mean = float(values.mean())
            out[kind][metric] = {"observed": value, "null_mean": mean, "null_std": float(values.std(correction=0)),
                                 "excess": value - mean}
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
