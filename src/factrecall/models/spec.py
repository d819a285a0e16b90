"""A model spec (`train.model`, `--model`) resolved in one place.

A spec names one of three things:

* a tiny preset (`models/tiny.py`): built from a seed, sized to the dataset's word tokenizer;
* a local Hugging Face model directory (safetensors, never remote code);
* a hub id whose config ships with factrecall (`models/configs/`): planning only, since nothing
  is downloaded; train from a local copy of its weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from transformers import AutoConfig

from factrecall.artifacts import is_directory
from factrecall.errors import UserError
from factrecall.models.families import family_for
from factrecall.models.family import Family
from factrecall.models.loading import load_config
from factrecall.models.tiny import TINY_MODELS
from factrecall.models.tokenizer import word_tokenizer

# hub ids of the paper presets -> their configs, shipped in factrecall/models/configs/
SHIPPED = {"meta-llama/Llama-3.2-3B": "Llama-3.2-3B.json", "EleutherAI/pythia-2.8b": "pythia-2.8b.json"}
KINDS = ("tiny", "directory", "shipped")


def spec_kind(spec: str) -> str:
    """"tiny", "directory" or "shipped" (a UserError naming the three choices otherwise)."""
    if spec in TINY_MODELS:
        return "tiny"
    if is_directory(spec):
        return "directory"
    if spec in SHIPPED:
        return "shipped"
    raise UserError(f"model {spec!r} is neither a preset ({', '.join(TINY_MODELS)}), an existing model directory, "
                    f"nor a hub id with a shipped config ({', '.join(SHIPPED)})")


def spec_config(spec: str, vocabulary: Callable[[], list[str]] | None = None):
    """The HF config of `spec`; a tiny preset's is sized to the word tokenizer of `vocabulary()` (as
    `models/base.py` builds θ_pre), or keeps its config class's vocabulary size without `vocabulary`."""
    kind = spec_kind(spec)
    if kind == "directory":
        return load_config(Path(spec))
    if kind == "tiny":
        config_class, kwargs = TINY_MODELS[spec]
        if vocabulary is None:
            return config_class(**kwargs)
        tokenizer = word_tokenizer(vocabulary())  # its special tokens too, as `tiny.build_tiny_model` sets them
        return config_class(**kwargs, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    fields = json.loads(resources.files("factrecall.models.configs").joinpath(SHIPPED[spec]).read_text(encoding="utf-8"))
    fields.pop("architectures", None)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def spec_family(spec: str) -> Family:
    """The family (`models/families/`) of `spec`; an unsupported architecture is a UserError."""
    return family_for(spec_config(spec))
