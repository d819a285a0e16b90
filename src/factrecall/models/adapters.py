"""What a model's parameters are, by its family's `Adapter` (`models/families/`, one module per family):
the layers, heads and neurons each tracked tensor belongs to, and which tensors the trace records.

An `Adapter` names where a family keeps its layers, attention projections, MLP projections,
final norm and (un)embedding, and how the attention weights lay out their heads:

* Llama, Mistral, Qwen2: separate `q`, `k`, `v` and `out` `nn.Linear`s; K/V may be grouped
  (query heads g·j … g·j+g−1 share K/V group j).
* GPT-NeoX/Pythia: one fused `query_key_value` (`qkv_interleaved`) whose output rows are per head
  `[q k v]` blocks of `3·head_dim` rows. A split into contiguous thirds is wrong.
* GPT-2: one fused `Conv1D` `c_attn` (`qkv_thirds`) stored `[in, out]` (transposed), q, k, v as
  three contiguous blocks of the output axis.

Head h owns its query features, its K/V features (shared by its group), and the input features
`h·head_dim … (h+1)·head_dim − 1` of the output projection: a head's output is isolated only at
the output projection's *input*. MLP neuron j owns feature j of every input projection (up, gate)
and input feature j of the output projection (down).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factrecall.errors import UserError
from factrecall.models.families import family_for
from factrecall.models.family import Adapter


@dataclass(frozen=True)
class Geometry:
    """Head layout numbers of a config, whatever the family calls them."""
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int

    @property
    def group_size(self) -> int:
        """Query heads per K/V group."""
        return self.n_heads // self.n_kv_heads


def geometry(config) -> Geometry:
    n_heads = config.num_attention_heads
    hidden = config.hidden_size
    return Geometry(n_layers=config.num_hidden_layers, n_heads=n_heads,
                    n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
                    head_dim=getattr(config, "head_dim", None) or hidden // n_heads, hidden=hidden)


@dataclass(frozen=True)
class TensorUnits:
    """How the entries of one tracked tensor belong to units (heads or MLP neurons) of one layer.

    Along `axis`, feature f belongs to unit `feature_unit[f]`. For heads, a unit index is a K/V
    group when `group_size` > 1 (grouped K/V): the feature then counts 1/group_size towards each
    of the query heads `unit·group_size … unit·group_size + group_size − 1`.
    """
    kind: str  # "head" | "neuron"
    layer: int
    module: str
    axis: int
    feature_unit: torch.Tensor  # [n_features] long
    group_size: int = 1


def tensor_units(config, name: str) -> TensorUnits | None:
    """Unit layout of the tracked parameter `name`; None for tensors outside heads and neurons."""
    a = adapter_for(config)
    g = geometry(config)
    prefix = a.layers + "."
    if not name.startswith(prefix):
        return None
    layer_str, rest = name[len(prefix):].split(".", 1)
    module, param = rest.rsplit(".", 1)
    role = a.attention.get(module) or a.mlp.get(module)
    if role is None or (param == "bias" and role == "out"):
        return None  # norms; an output projection's bias belongs to no unit
    layer = int(layer_str)
    out_axis, in_axis = (1, 0) if a.transposed else (0, 1)
    if param == "bias":
        out_axis = 0
    d, n_q = g.head_dim, g.n_heads * g.head_dim
    if module in a.mlp:
        n = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * g.hidden
        return TensorUnits("neuron", layer, module, out_axis if role == "in" else in_axis, torch.arange(n))
    if role == "out":
        return TensorUnits("head", layer, module, in_axis, torch.arange(n_q) // d)
    if role == "q":
        return TensorUnits("head", layer, module, out_axis, torch.arange(n_q) // d)
    if role in ("k", "v"):
        return TensorUnits("head", layer, module, out_axis, torch.arange(g.n_kv_heads * d) // d, g.group_size)
    if role == "qkv_interleaved":  # rows [head0: q k v | head1: q k v | ...]
        return TensorUnits("head", layer, module, out_axis, torch.arange(3 * n_q) // (3 * d))
    if role == "qkv_thirds":  # [q | k | v], each n_q wide
        return TensorUnits("head", layer, module, out_axis, (torch.arange(3 * n_q) % n_q) // d)
    raise AssertionError(f"unknown role {role}")


def layer_of(name: str) -> str:
    """The block index in a parameter name (`model.layers.3.mlp.up_proj.weight` -> "3"), or "other"."""
    return next((p for p in name.split(".") if p.isdigit()), "other")


def module_of(name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `self_attn.q_proj.weight`; non-layer names stay."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i + 1:])
    return name


def adapter_for(config) -> Adapter:
    """The adapter of a model config (`config.model_type`); unsupported families are a UserError."""
    return family_for(config).adapter


def tracked_parameter_names(model, include: tuple[str, ...] = ()) -> list[str]:
    """Names of the parameters the trace records, in model order.

    Default: the weight matrices of every block's attention and MLP modules. `include` adds
    "biases" (of those modules), "norms" (block and final norms), "embeddings" and "unembedding".
    """
    unknown = set(include) - {"biases", "norms", "embeddings", "unembedding"}
    if unknown:
        raise UserError(f"unknown trace include {sorted(unknown)}; choose from biases, norms, embeddings, unembedding")
    a = adapter_for(model.config)
    n_layers = len(model.get_submodule(a.layers))
    wanted = set()
    for layer in range(n_layers):
        block = f"{a.layers}.{layer}"
        for module in (*a.attention, *a.mlp):
            wanted.add(f"{block}.{module}.weight")
            if "biases" in include:
                wanted.add(f"{block}.{module}.bias")
        if "norms" in include:
            wanted.update(f"{block}.{n}.{p}" for n in a.norms for p in ("weight", "bias"))
    if "norms" in include:
        wanted.update(f"{a.final_norm}.{p}" for p in ("weight", "bias"))
    if "embeddings" in include:
        wanted.update(f"{e}.weight" for e in a.embeddings)
    if "unembedding" in include:
        wanted.add(f"{a.unembedding}.weight")
    # named_parameters() lists a tied tensor once, under its first name
    return [name for name, _ in model.named_parameters() if name in wanted]
