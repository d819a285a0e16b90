"""θ_pre of a run: a preset built from a seed, or a local model directory, saved as `base/`."""

from __future__ import annotations

from pathlib import Path

from factrecall.artifacts import atomic_directory
from factrecall.data.dataset import Dataset
from factrecall.errors import UserError
from factrecall.models.loading import load_model
from factrecall.models.presets import MODEL_PRESETS, build_preset_model
from factrecall.models.tokenizer import first_uncovered_word, word_tokenizer


def write_base(model_spec: str, dataset: Dataset, seed: int, out: Path) -> None:
    """Save θ_pre to `out` (an HF directory with its tokenizer), after checking it covers the data."""
    if model_spec in MODEL_PRESETS:
        tokenizer = word_tokenizer(dataset.vocabulary_fragments())
        model = build_preset_model(model_spec, tokenizer, seed)
    elif Path(model_spec).exists():
        model, tokenizer = load_model(Path(model_spec))
    else:
        raise UserError(f"--model {model_spec!r} is neither a preset ({', '.join(MODEL_PRESETS)}) "
                        f"nor an existing model directory")
    texts = [b["text"] for b in dataset.bios] + [q["text"] for q in dataset.qa]
    word = first_uncovered_word(tokenizer, texts)
    if word is not None:
        raise UserError(f"the tokenizer of {model_spec} does not cover the data (first unknown word {word!r}); "
                        f"use a base built from the same pools")
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
