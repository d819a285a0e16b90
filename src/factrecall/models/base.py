"""θ_pre of a run: a preset built from a seed, or a local model directory, saved as `base/`.

A model directory with a `base.json` (from `factrecall base build`) was trained on a population of
its own; fine-tuning data that shares people with it is refused, and `base.json` is kept in the
run's `base/` so later steps can measure forgetting of that population.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from factrecall.artifacts import atomic_directory, read_json
from factrecall.data.dataset import Dataset
from factrecall.errors import UserError
from factrecall.layout import BaseLayout
from factrecall.models.loading import load_model
from factrecall.models.spec import spec_kind
from factrecall.models.tensor_files import checkpoint_dtype
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import first_uncovered_word, word_tokenizer


def base_population_overlap(base_dir: Path, dataset: Dataset) -> int:
    """People of `dataset` whose full name is in the population `base_dir` was trained on (0 without base.json)."""
    path = BaseLayout(Path(base_dir)).record
    if not path.is_file():
        return 0
    names = set(read_json(path, "base record")["population"]["names"])
    return sum(p["name"] in names for p in dataset.people)


def source_dtype(model_spec: str) -> str | None:
    """The dtype θ_pre's values come in: float32 for a tiny preset, the checkpoint's for a model directory
    (None for a hub id, which `write_base` refuses)."""
    kind = spec_kind(model_spec)
    if kind == "tiny":
        return "float32"
    return checkpoint_dtype(Path(model_spec)) if kind == "directory" else None


def write_base(model_spec: str, dataset: Dataset, seed: int, out: Path) -> None:
    """Save θ_pre to `out` (an HF directory with its tokenizer, float32: the exact upcast of a bf16
    checkpoint), after checking it covers the data."""
    kind = spec_kind(model_spec)
    if kind == "tiny":
        tokenizer = word_tokenizer(dataset.vocabulary_fragments())
        model = build_tiny_model(model_spec, tokenizer, seed)
    elif kind == "directory":
        model, tokenizer = load_model(Path(model_spec))
        shared = base_population_overlap(Path(model_spec), dataset)
        if shared:
            raise UserError(f"the dataset {dataset.path} shares {shared} of its {len(dataset.people)} people with the "
                            f"population base {model_spec} was trained on; draw it with "
                            f"'factrecall data generate --exclude {Path(model_spec) / 'data'}'")
    else:
        raise UserError(f"--model {model_spec!r} is a hub id and nothing is downloaded; save the model with "
                        f"save_pretrained to a local directory and pass that directory")
    texts = [b["text"] for b in dataset.bios] + [q["text"] for q in dataset.qa]
    word = first_uncovered_word(tokenizer, texts)
    if word is not None:
        raise UserError(f"the tokenizer of {model_spec} does not cover the data (first unknown word {word!r}); "
                        f"use a base built from the same pools")
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        built = BaseLayout(Path(model_spec))
        if kind == "directory" and built.record.is_file():
            shutil.copyfile(built.record, BaseLayout(tmp).record)
