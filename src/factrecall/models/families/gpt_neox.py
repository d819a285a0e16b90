"""GPT-NeoX/Pythia: one fused `query_key_value` (`qkv_interleaved`) whose output rows are per head `[q k v]` blocks
of `3·head_dim` rows (a split into contiguous thirds is wrong); a GELU MLP in parallel with attention; LayerNorm.
transformers 5 names the unembedding `lm_head` (its files keep `embed_out`: `tensor_files.checkpoint_keys`)."""

from transformers import GPTNeoXConfig

from factrecall.models.family import Activations, Adapter, Family

FAMILY = Family(
    adapter=Adapter(
        family="gpt_neox", layers="gpt_neox.layers",
        attention={"attention.query_key_value": "qkv_interleaved", "attention.dense": "out"},
        mlp={"mlp.dense_h_to_4h": "in", "mlp.dense_4h_to_h": "out"},
        transposed=False, norms=("input_layernorm", "post_attention_layernorm"),
        final_norm="gpt_neox.final_layer_norm", embeddings=("gpt_neox.embed_in",), unembedding="lm_head"),
    model_types=("gpt_neox",),
    tiny={"tiny-neox": (GPTNeoXConfig, dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        rotary_pct=0.25, max_position_embeddings=256, use_parallel_residual=True,
        attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False))},
    activations=Activations(block=(3, 4), final_norm=1.5, norm_fp32=2, nograd_mlp=2),
    fsdp=True,
)
