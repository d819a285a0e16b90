"""Shared entries counted per unit, and how concentrated they are (docs/method.md §5).

Attention head h of layer l owns its query features, its output-projection input columns and its
K/V features (a K/V group shared by g query heads counts 1/g towards each); MLP neuron j owns its
up (and gate) row and its down column. Concentration is the Gini coefficient of the counts over
units and the share held by the top 1/5/10% of units.
"""

from __future__ import annotations

import math

import torch

from factrecall.analysis.masks import IndexMask
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


def breakdown(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """Selected entries `by_layer` (layer index, or "other") and `by_module` (path inside a block),
    from {tensor name: selected entries}."""
    by_layer: dict[str, int] = {}
    by_module: dict[str, int] = {}
    for name, count in counts.items():
        by_layer[layer_of(name)] = by_layer.get(layer_of(name), 0) + count
        by_module[module_of(name)] = by_module.get(module_of(name), 0) + count
    return {"by_layer": by_layer, "by_module": by_module}
