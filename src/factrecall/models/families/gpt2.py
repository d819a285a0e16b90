"""GPT-2: one fused `Conv1D` `c_attn` (`qkv_thirds`) stored `[in, out]` (transposed), q, k, v as three contiguous
blocks of the output axis; learned position embeddings; a GELU (tanh) MLP; LayerNorm."""

from transformers import GPT2Config

from factrecall.models.family import Activations, Adapter, Family

FAMILY = Family(
    adapter=Adapter(
        family="gpt2", layers="transformer.h",
        attention={"attn.c_attn": "qkv_thirds", "attn.c_proj": "out"},
        mlp={"mlp.c_fc": "in", "mlp.c_proj": "out"},
        transposed=True, norms=("ln_1", "ln_2"),
        final_norm="transformer.ln_f", embeddings=("transformer.wte", "transformer.wpe"), unembedding="lm_head"),
    model_types=("gpt2",),
    tiny={"tiny-gpt2": (GPT2Config, dict(
        n_embd=128, n_inner=512, n_layer=2, n_head=4, n_positions=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))},
    # the tanh GELU is written as tensor operations: autograd keeps four MLP-wide tensors of it and the MLP output
    # projection's input, and a forward without gradients holds four at once (measured on tiny-gpt2); eager attention
    # scales and masks its scores out of place (three score tensors at once)
    activations=Activations(block=(5, 10), final_norm=1.5, norm_fp32=2, nograd_mlp=4, eager_scores=3),
    fsdp=False,
)
