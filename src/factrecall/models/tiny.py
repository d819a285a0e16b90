"""Tiny architectures for machines without weights or GPUs, built from a config and a seed.

Each preset is a small model of a real family (same modules, same weight layouts), declared with its family
(`models/families/`), so every code path that runs on Llama-3.2-3B or Pythia-2.8B runs here too. Dropout is off.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from factrecall.models.families import FAMILIES

TINY_MODELS: dict[str, tuple[type, dict]] = {name: preset for f in FAMILIES for name, preset in f.tiny.items()}


def build_tiny_model(name: str, tokenizer, seed: int):
    """A randomly initialised model of preset `name` sized to `tokenizer`'s vocabulary."""
    config_class, kwargs = TINY_MODELS[name]
    config = config_class(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
