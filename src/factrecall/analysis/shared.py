"""Shared parameters (the paper's Definition 3.1) and where they sit (SPEC §5).

    Top_T(k)   = entries whose trace score |Δ_T| is in the top k percent of all tracked entries
    Shared(k)  = Top_BIO(k) ∩ Top_QA(k)

`global` uses one threshold per task over all tracked entries; `per_tensor` one threshold per
task and tensor (a global threshold follows tensor scale: a few tensors can hold most of it).
Chance is the overlap of two independent top sets, (k/100)²·P; enrichment = |Shared| / chance.

Shared entries are counted per unit: attention head h of layer l owns its query features, its
output-projection input columns and its K/V features (a K/V group shared by g query heads counts
1/g towards each); MLP neuron j owns its up (and gate) row and its down column. Concentration is
the Gini coefficient of those counts over units and the share held by the top 1/5/10% of units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from factrecall.analysis.run import load_trace, model_config
from factrecall.analysis.threshold import kth_largest, top_count
from factrecall.artifacts import load_tensors, save_tensors, write_json
from factrecall.errors import UserError
from factrecall.models.adapters import geometry, tensor_units

MODES = ("global", "per_tensor")
SWEEP = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
_HEADLINE = ("top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")
TOP_UNIT_FRACTIONS = (0.01, 0.05, 0.10)


@dataclass(frozen=True)
class Selection:
    """Boolean masks per tracked tensor: top_bio, top_qa and shared, each {name: bool tensor}."""
    k: float
    mode: str
    top_bio: dict[str, torch.Tensor]
    top_qa: dict[str, torch.Tensor]

    @property
    def shared(self) -> dict[str, torch.Tensor]:
        return {n: self.top_bio[n] & self.top_qa[n] for n in self.top_bio}


def split_trace(trace: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """{name: Δ_BIO}, {name: Δ_QA} from a trace keyed `bio/<name>`, `qa/<name>`."""
    bio = {k[4:]: v for k, v in trace.items() if k.startswith("bio/")}
    qa = {k[3:]: v for k, v in trace.items() if k.startswith("qa/")}
    return bio, qa


def _top(deltas: dict[str, torch.Tensor], k: float, mode: str) -> dict[str, torch.Tensor]:
    if mode == "per_tensor":
        return {n: d.abs() >= kth_largest(lambda d=d: [d.abs()], top_count(k, d.numel())) for n, d in deltas.items()}
    total = sum(d.numel() for d in deltas.values())
    value = kth_largest(lambda: (d.abs() for d in deltas.values()), top_count(k, total))
    return {n: d.abs() >= value for n, d in deltas.items()}


def select(trace: dict[str, torch.Tensor], k: float = 1.0, mode: str = "global") -> Selection:
    bio, qa = split_trace(trace)
    return Selection(k, mode, _top(bio, k, mode), _top(qa, k, mode))


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


def unit_counts(config, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Selected entries per unit: `heads` [layers, heads] and `neurons` [layers, neurons] (float)."""
    g = geometry(config)
    heads = torch.zeros(g.n_layers, g.n_heads, dtype=torch.float64)
    neurons: dict[int, torch.Tensor] = {}
    for name, mask in masks.items():
        units = tensor_units(config, name)
        if units is None:
            continue
        per_feature = mask.double().sum(dim=[d for d in range(mask.dim()) if d != units.axis])
        per_unit = torch.bincount(units.feature_unit, weights=per_feature)
        if units.kind == "head":
            heads[units.layer] += (per_unit / units.group_size).repeat_interleave(units.group_size)
        else:
            neurons[units.layer] = neurons.get(units.layer, 0) + per_unit
    n_neurons = max((v.numel() for v in neurons.values()), default=0)
    neuron_table = torch.zeros(g.n_layers, n_neurons, dtype=torch.float64)
    for layer, v in neurons.items():
        neuron_table[layer] = v
    return {"heads": heads, "neurons": neuron_table}


def module_of(name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `self_attn.q_proj.weight`; non-layer names stay."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i + 1:])
    return name


def layer_of(name: str) -> str:
    return next((p for p in name.split(".") if p.isdigit()), "other")


def breakdown(masks: dict[str, torch.Tensor]) -> dict[str, dict[str, int]]:
    """Selected entries `by_layer` (layer index, or "other") and `by_module` (path inside a block)."""
    by_layer: dict[str, int] = {}
    by_module: dict[str, int] = {}
    for name, m in masks.items():
        count = int(m.sum())
        by_layer[layer_of(name)] = by_layer.get(layer_of(name), 0) + count
        by_module[module_of(name)] = by_module.get(module_of(name), 0) + count
    return {"by_layer": by_layer, "by_module": by_module}


def _count(masks: dict[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def summarize(config, selection: Selection) -> dict:
    """Sizes, enrichment over chance, Jaccard, breakdowns by layer/module/unit, concentration."""
    shared = selection.shared
    total = sum(m.numel() for m in shared.values())
    n_bio, n_qa, n_shared = _count(selection.top_bio), _count(selection.top_qa), _count(shared)
    chance = (selection.k / 100) ** 2 * total
    units = unit_counts(config, shared)
    return {
        "k": selection.k, "mode": selection.mode, "tracked": total,
        "top_bio": n_bio, "top_qa": n_qa, "shared": n_shared, "chance": chance,
        "enrichment": n_shared / chance, "jaccard": n_shared / max(1, n_bio + n_qa - n_shared),
        **breakdown(shared),
        "heads": units["heads"].tolist(), "neurons": units["neurons"].tolist(),
        "gini": {kind: gini(units[kind]) for kind in ("heads", "neurons")},
        "top_unit_share": {kind: top_unit_share(units[kind]) for kind in ("heads", "neurons")},
    }


def save_bool_masks(path: Path, kinds: dict[str, dict[str, torch.Tensor]], metadata: dict[str, str]) -> None:
    """Masks of several kinds as sorted flat indices keyed `<kind>/<name>`, shapes in the metadata."""
    tensors, shapes = {}, {}
    for kind, masks in kinds.items():
        for name, m in masks.items():
            index = m.flatten().nonzero().squeeze(1)
            tensors[f"{kind}/{name}"] = index.to(torch.int32 if m.numel() < 2**31 else torch.int64)
            shapes[name] = list(m.shape)
    save_tensors(path, tensors, metadata={**metadata, "shapes": json.dumps(shapes)})


def save_masks(path: Path, selection: Selection) -> None:
    """A selection's `shared/`, `top_bio/` and `top_qa/` masks."""
    save_bool_masks(path, {"shared": selection.shared, "top_bio": selection.top_bio, "top_qa": selection.top_qa},
                    {"k": str(selection.k), "mode": selection.mode})


def load_masks(path: Path, kind: str = "shared",
               model_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """{name: bool mask} of one kind (e.g. shared, top_bio, top_qa, graft) from `save_bool_masks`' file.

    With `model_shapes` ({parameter name: shape} of the model the masks are for), a mask naming a
    parameter the model lacks or of another shape is refused as belonging to another model.
    """
    tensors = load_tensors(path, "mask")
    with safe_open(str(path), framework="pt") as st:
        metadata = st.metadata() or {}
    if "shapes" not in metadata:
        raise UserError(f"{path} is not a factrecall mask file (no 'shapes' metadata); recompute it")
    shapes = json.loads(metadata["shapes"])
    masks = {}
    for key, index in tensors.items():
        k, _, name = key.partition("/")
        if k != kind:
            continue
        shape = tuple(shapes.get(name, ()))
        if model_shapes is not None and model_shapes.get(name) != shape:
            raise UserError(f"{path} belongs to another model: its {kind} mask for {name} has shape {shape}, "
                            f"the model's is {model_shapes.get(name, 'missing')}; recompute it for this run")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= math.prod(shape)):
            raise UserError(f"{path}: {key} indexes outside its shape {shape}; the file is damaged, recompute it")
        m = torch.zeros(math.prod(shape), dtype=torch.bool)
        m[index.long()] = True
        masks[name] = m.view(shape)
    return masks


def analyze_run(run: Path, k: float = 1.0, sweep: tuple[float, ...] = SWEEP) -> dict:
    """Write `run/shared/shared.json` and `run/shared/mask.safetensors` (global, at k); return the JSON."""
    run = Path(run)
    trace, config = load_trace(run), model_config(run)
    top_count(k, 1)  # validates k
    for s in sweep:
        top_count(s, 1)
    selection = select(trace, k, "global")
    save_masks(run / "shared" / "mask.safetensors", selection)
    result = summarize(config, selection)  # the global threshold at the top level, as in the paper
    result["per_tensor"] = summarize(config, select(trace, k, "per_tensor"))
    result["sweep"] = []
    for s in sweep:
        point = {"k": s}
        for mode in MODES:
            summary = summarize(config, select(trace, s, mode))
            point[mode] = {key: summary[key] for key in _HEADLINE}
        result["sweep"].append(point)
    write_json(run / "shared" / "shared.json", result)
    return result
