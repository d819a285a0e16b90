"""One small declarative entry per architecture family (after pyvene's per-model tables).

An `Adapter` names where a family keeps its layers, attention projections, MLP projections,
final norm and (un)embedding, and how the attention weights lay out their heads:

* `separate`     — q/k/v/o are separate `nn.Linear`s (Llama, Mistral, Qwen2; K/V may be grouped).
* `interleaved`  — one fused `query_key_value` whose output rows are per head `[q k v]` blocks of
                   `3·head_dim` rows (GPT-NeoX/Pythia). A split into contiguous thirds is wrong.
* `thirds`       — one fused `Conv1D` `c_attn` stored `[in, out]` (transposed), q, k, v as three
                   contiguous blocks of the output axis (GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass

from factrecall.errors import UserError


@dataclass(frozen=True)
class Adapter:
    family: str
    layers: str  # module path of the block list
    attention: tuple[str, ...]  # weight-bearing attention modules, relative to a block
    mlp: tuple[str, ...]  # MLP modules, relative to a block: inputs first, output last
    attn_out: str  # output projection; its *input* features are the heads
    qkv_layout: str  # "separate" | "interleaved" | "thirds"
    transposed: bool  # Conv1D weights stored [in, out]
    norms: tuple[str, ...]  # norms inside a block
    final_norm: str
    embeddings: tuple[str, ...]  # input embeddings (token, position)
    unembedding: str


_LLAMA = Adapter(
    family="llama", layers="model.layers",
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    mlp=("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), attn_out="self_attn.o_proj",
    qkv_layout="separate", transposed=False, norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="model.norm", embeddings=("model.embed_tokens",), unembedding="lm_head",
)

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt_neox": Adapter(
        family="gpt_neox", layers="gpt_neox.layers",
        attention=("attention.query_key_value", "attention.dense"),
        mlp=("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"), attn_out="attention.dense",
        qkv_layout="interleaved", transposed=False, norms=("input_layernorm", "post_attention_layernorm"),
        final_norm="gpt_neox.final_layer_norm", embeddings=("gpt_neox.embed_in",), unembedding="embed_out",
    ),
    "gpt2": Adapter(
        family="gpt2", layers="transformer.h",
        attention=("attn.c_attn", "attn.c_proj"), mlp=("mlp.c_fc", "mlp.c_proj"), attn_out="attn.c_proj",
        qkv_layout="thirds", transposed=True, norms=("ln_1", "ln_2"),
        final_norm="transformer.ln_f", embeddings=("transformer.wte", "transformer.wpe"), unembedding="lm_head",
    ),
}


def adapter_for(config) -> Adapter:
    """The adapter of a model config (`config.model_type`); unsupported families are a UserError."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UserError(f"model family {model_type!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]


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
        for module in a.attention + a.mlp:
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
