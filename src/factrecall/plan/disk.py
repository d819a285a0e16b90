"""What a training run and a study write to disk, and the check that the disk can hold it before they start.

Bytes, with P = parameters (a tied tensor once), t = parameter tensors, Q = traced entries (0 without
the trace), the same numbers as `factrecall plan` (`plan.model_shapes`):

    base/ (θ_pre), model/ (θ_ft)   4·P each                float32 safetensors, whatever the source's dtype
    trace.safetensors              8·Q                     Δ_BIO and Δ_QA
    checkpoint/                    12·P + 4·t + 8·Q + RNG  weights, AdamW (two moments, a step per tensor), trace
    bio_phase/ (Stage)             4·P + 8·Q + RNG         the kept BIO-phase boundary (no optimizer state), which
                                                           QA-phase arms fork from (`train --start-from`)
    other                          64 MiB                  an allowance: configs, tokenizer copies (Llama-3's:
                                                           17 MB each), metrics.jsonl, eval.json, analyses' JSON
                                                           and figures (`tests/test_disk.py` checks the smoke run)

A checkpoint is written whole beside the previous one before it replaces it
(`artifacts.atomic_directory`), and the last one is deleted only after model/ and the trace are
written, so a run that writes c checkpoints (`checkpoints_written`) peaks at

    base + other + max(min(c, 2)·checkpoint, checkpoint + bio_phase, [c ≥ 1]·checkpoint + model + trace + bio_phase)

and keeps base + model + trace + other (+ bio_phase for Stage, written at the boundary in place of that
checkpoint). A study writes, per base, the two runs and their analyses'
masks: shared (int32 indices of Top_BIO, Top_QA and Shared at k: ≤ 3·k %·Q·4) and graft (≈ the
base patch, graft_sparsity·P·4; the search moves a few entries); a `language` or `skill` base
first trains its own run (trace off) and copies its θ_ft (4·P); each Stage arm keeps a run without
a BIO phase of its own; and the datasets (≈ 2 KB per
person and 640 B per bio). One run trains at a time, after the files of every earlier step exist,
so a study peaks at what all its steps keep plus the largest excess of one run's training peak.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from factrecall.config.presets import data_config, train_config
from factrecall.config.study import BASE_KINDS, StudyConfig, stage_arm_settings
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.data.generate import DataConfig
from factrecall.data.pools import ATTRIBUTES
from factrecall.errors import UserError
from factrecall.models.spec import spec_config
from factrecall.plan.training import GIB, Shapes, data_vocabulary, model_shapes
from factrecall.terms import STRATEGIES
from factrecall.training.config import TrainConfig
from factrecall.training.schedule import build_phases

OTHER_FILES = 64 * 2**20  # per run: everything but the tensor files (see the module doc)
PERSON_BYTES, BIO_BYTES = 2048, 640  # a person's line and six questions; a bio line (measured: ≤ 1.7 KB, ≤ 575 B)


def checkpoints_written(cfg: TrainConfig, n_bio: int, n_qa: int) -> int:
    """Checkpoints a run writes: every `checkpoint_every` steps inside a phase (not at its end), and one at
    each phase boundary (`training/loop.py`)."""
    phases = build_phases(cfg, n_bio, n_qa)
    every = cfg.checkpoint_every
    inside = sum(max(0, len(p.steps) - 1) // every for p in phases) if every else 0
    return inside + len(phases) - 1


def run_bytes(shapes: Shapes, cfg: TrainConfig, checkpoints: int) -> dict[str, int]:
    """Per item, what one run writes; `kept`: what stays after it; `peak`: the most it holds at once."""
    p, q = shapes.params, shapes.traced_entries if cfg.trace else 0
    rng = torch.get_rng_state().numel()
    items = {"base": 4 * p, "model": 4 * p, "trace": 8 * q,
             "checkpoint": 12 * p + 4 * len(shapes.tensors) + 8 * q + rng,
             "bio_phase": 4 * p + 8 * q + rng if cfg.strategy == "stage" else 0,
             "other": OTHER_FILES}
    last = items["checkpoint"] if checkpoints else 0  # beside model/ and the trace until they are written
    end = last + items["model"] + items["trace"]
    return {**items, "checkpoints": checkpoints,
            "kept": items["base"] + items["model"] + items["trace"] + items["bio_phase"] + items["other"],
            "peak": items["base"] + items["other"]
            + max(min(checkpoints, 2) * items["checkpoint"], items["checkpoint"] + items["bio_phase"], end + items["bio_phase"])}


def run_disk_bytes(cfg: TrainConfig, dataset: Dataset) -> dict[str, int]:
    """`run_bytes` of training `cfg` on `dataset` (a tiny preset sized to the dataset's vocabulary)."""
    shapes = model_shapes(spec_config(cfg.model, dataset.vocabulary_fragments), cfg.trace_include)
    return run_bytes(shapes, cfg, checkpoints_written(cfg, len(dataset.bios), len(dataset.qa_split("id"))))


def dataset_counts(data: DataConfig) -> tuple[int, int]:
    """(bios, ID questions) of a dataset drawn with `data` (as `data/generate.py` splits people)."""
    return data.people * data.bios_per_person, len(ATTRIBUTES) * data.id_people


def data_bytes(data: DataConfig) -> int:
    """A dataset drawn with `data`: its JSONL files, estimated from above."""
    return data.people * (PERSON_BYTES + data.bios_per_person * BIO_BYTES)


def study_disk_bytes(config: StudyConfig) -> dict[str, int]:
    """What `factrecall study` with `config` keeps, per item; the largest excess of one run's training peak over
    what the run keeps; and the study's `peak`, their sum."""
    data, a = config.data, config.analysis
    own = load_dataset(Path(config.data_path)) if config.data_path else None  # `[data] path`: its real counts
    counts = (len(own.bios), len(own.qa_split("id"))) if own else dataset_counts(data)
    vocabulary = own.vocabulary_fragments if own else (lambda: data_vocabulary(data))
    data_size = sum(f.stat().st_size for f in own.files) if own else data_bytes(data)
    kept = {"data": data_size, "built_bases": 0, "runs": 0, "analysis_masks": 0}
    excess = 0
    for base in config.bases:
        model = config.train.model if base in BASE_KINDS else base  # random, language, skill: the preset's shapes
        shapes = model_shapes(spec_config(model, vocabulary), config.train.trace_include)
        if base in ("language", "skill"):  # trained first on its own people, without the trace (`bases.build_base`)
            base_data = data_config(config.preset, people=config.base.people, seed=config.base.seed,
                                    qa_train_fraction=1.0 if base == "skill" else None)
            base_cfg = train_config(config.preset, strategy="mix", seed=config.base.seed, model=model, trace=False,
                                    eval_every=0, bio_epochs=config.base.epochs,
                                    qa_epochs=0 if base == "language" else config.base.epochs)
            built = run_bytes(shapes, base_cfg, checkpoints_written(base_cfg, *dataset_counts(base_data)))
            kept["built_bases"] += built["kept"] + 4 * shapes.params + data_bytes(base_data)  # + its θ_ft copied
            excess = max(excess, built["peak"] - built["kept"])
        top = math.ceil(a.shared.k / 100 * shapes.traced_entries)
        for strategy in STRATEGIES:
            cfg = replace(config.train, strategy=strategy, model=model)
            run = run_bytes(shapes, cfg, checkpoints_written(cfg, *counts))
            kept["runs"] += run["kept"]
            kept["analysis_masks"] += 4 * (3 * top + math.ceil(a.graft.sparsity * shapes.params))
            excess = max(excess, run["peak"] - run["kept"])
        for arm in stage_arm_settings(config.stage_arms, config.train):  # forks: no BIO phase of their own
            cfg = replace(config.train, strategy="stage", model=model, **arm)
            run = run_bytes(shapes, cfg, checkpoints_written(cfg, *counts))
            kept["runs"] += run["kept"] - run["bio_phase"]
            excess = max(excess, run["peak"] - run["kept"])
    return {**kept, "training_excess": excess, "peak": sum(kept.values()) + excess}


def check_disk(out: Path, needed_bytes: int, what: str, ignore: bool = False) -> None:
    """Refuse to start unless the filesystem of `out` has `needed_bytes` free, less what `out` already holds
    (a resumed run rewrites its files; a forced one deletes them first). `ignore` (`--ignore-disk`) skips it:
    not `--force`, which would replace the run or study a resume keeps."""
    if ignore:
        return
    out = Path(out).absolute()
    present = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() else 0
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    needed = needed_bytes - present
    if needed > free:
        more = " more" if present else ""
        raise UserError(f"{what} needs {needed / GIB:.1f} GiB{more} on the filesystem of {out} but "
                        f"{free / GIB:.1f} GiB are free; free space, choose another --out, or pass --ignore-disk "
                        f"to start anyway")
