"""Llama and the families laid out like it (Mistral, Qwen2): separate `q`, `k`, `v` and `out` `nn.Linear`s, K/V
possibly grouped (query heads g·j … g·j+g−1 share K/V group j); a SwiGLU MLP; RMSNorm."""

from transformers import LlamaConfig

from factrecall.models.family import Activations, Adapter, Family

_TINY = dict(hidden_size=128, intermediate_size=512, max_position_embeddings=256, tie_word_embeddings=True)

FAMILY = Family(
    adapter=Adapter(
        family="llama", layers="model.layers",
        attention={"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
                   "self_attn.o_proj": "out"},
        mlp={"mlp.gate_proj": "in", "mlp.up_proj": "in", "mlp.down_proj": "out"},
        transposed=False, norms=("input_layernorm", "post_attention_layernorm"),
        final_norm="model.norm", embeddings=("model.embed_tokens",), unembedding="lm_head"),
    model_types=("llama", "mistral", "qwen2"),
    tiny={
        "tiny-llama": (LlamaConfig, dict(_TINY, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)),
        # 4 layers × 8 heads: the smallest model with the 32 heads the head claims need
        "small-llama": (LlamaConfig, dict(_TINY, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)),
        "tiny-llama-gqa": (LlamaConfig, dict(_TINY, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2)),
    },
    activations=Activations(block=(4, 10), final_norm=2.5, norm_fp32=4, nograd_mlp=3),
    fsdp=True,
)
