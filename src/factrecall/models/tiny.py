"""Tiny architectures for machines without weights or GPUs, built from a config and a seed.

Each preset is a small model of a real family (same modules, same weight layouts), so every
code path that runs on Llama-3.2-3B or Pythia-2.8B runs here too. Dropout is off.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

TINY_MODELS: dict[str, tuple[type, dict]] = {
    "tiny-llama": (LlamaConfig, dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True)),
    # 4 layers × 8 heads: the smallest model with the 32 heads the head claims need (issue 15)
    "small-llama": (LlamaConfig, dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=8, max_position_embeddings=256, tie_word_embeddings=True)),
    "tiny-llama-gqa": (LlamaConfig, dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)),
    "tiny-neox": (GPTNeoXConfig, dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        rotary_pct=0.25, max_position_embeddings=256, use_parallel_residual=True,
        attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False)),
    "tiny-gpt2": (GPT2Config, dict(
        n_embd=128, n_inner=512, n_layer=2, n_head=4, n_positions=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
}


def build_tiny_model(name: str, tokenizer, seed: int):
    """A randomly initialised model of preset `name` sized to `tokenizer`'s vocabulary."""
    config_class, kwargs = TINY_MODELS[name]
    config = config_class(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
