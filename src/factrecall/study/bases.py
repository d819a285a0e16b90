"""Base models (θ_pre) that already know something, built on a population disjoint from the study's.

The paper fine-tunes pretrained models that read and answer questions but have never seen the
synthetic people. A tiny model trained from random weights knows nothing at all, and that decides
the outcome (`../shared/MEASUREMENTS.md`). So a base can be:

* `random` — the preset's random initialisation (the CPU default);
* `language` — the preset trained on the BIO of another population (it has read biographies);
* `skill` — the preset trained on the BIO *and all the QA* of another population (it has learned to
  answer questions about people it read about);
* a model directory of your own.

`build_base` writes an HF model directory (loadable by `train --model DIR`) with `base.json`: the
kind, the population (path, content hash, names: used to refuse a fine-tuning population that
shares people with it), the training config and the base's own accuracies. Its population and
training run stay beside it in `data/` and `run/`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from factrecall.artifacts import as_json, read_json, write_json
from factrecall.config.presets import data_config, train_config
from factrecall.data.dataset import load_dataset
from factrecall.data.generate import generate_dataset
from factrecall.errors import UserError
from factrecall.layout import BaseLayout
from factrecall.locks import directory_lock, refuse_overlap
from factrecall.provenance import package_versions
from factrecall.training.loop import train
from factrecall.training.run_dir import model_directory

KINDS = ("language", "skill")


def build_base(kind: str, out: Path, preset: str = "default", people: int = 500, seed: int = 1,
               exclude: tuple[Path, ...] = (), model: str | None = None, force: bool = False,
               epochs: int = 15) -> dict:
    """Train a `language` or `skill` base on a fresh population (none of `exclude`'s people); returns base.json."""
    if kind not in KINDS:
        raise UserError(f"unknown base kind {kind!r}; choose one of {', '.join(KINDS)} "
                        f"(a random base needs no building: it is the preset itself)")
    out = Path(out)
    data_cfg = data_config(preset, people=people, seed=seed, exclude=tuple(str(Path(e).resolve()) for e in exclude),
                           qa_train_fraction=1.0 if kind == "skill" else None)
    train_cfg = train_config(preset, strategy="mix", seed=seed, model=model, trace=False, eval_every=0,
                             bio_epochs=epochs, qa_epochs=0 if kind == "language" else epochs)
    data_cfg.validate()  # before anything is written
    train_cfg.validate()
    settings = as_json({"kind": kind, "data": asdict(data_cfg), "train": asdict(train_cfg)})
    refuse_overlap(out, [*(("excluded dataset", e) for e in exclude), ("model directory", model_directory(
        train_cfg.model))], "base build")
    with directory_lock(out, "base build"):
        return _build(kind, out, data_cfg, train_cfg, settings, force)


def _build(kind: str, out: Path, data_cfg, train_cfg, settings: dict, force: bool) -> dict:
    """`build_base` under the base directory's lock."""
    files = BaseLayout(out)
    if files.record.is_file() and not force:
        record = read_json(files.record, "base record")
        if record.get("settings") == settings:
            return record
        raise UserError(f"--out {out} holds a base built with other settings; use another directory or --force")
    held = [c for c in out.iterdir() if c != files.lock]
    if held and not files.run.root.is_dir() and not force:
        raise UserError(f"--out {out} is not empty and holds no base; choose another directory or pass --force")
    if force:
        for child in held:  # everything but the lock this process holds
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    data = files.data
    if not data.meta.is_file() or read_json(data.meta, "dataset meta")["config"] != as_json(asdict(data_cfg)):
        generate_dataset(data_cfg, data.root)
    result = train(train_cfg, data.root, files.run.root, resume=True)
    for f in sorted(files.run.model.iterdir()):  # the run's θ_ft becomes the HF directory `out`
        tmp = out / f".{f.name}.tmp"
        shutil.copyfile(f, tmp)
        tmp.replace(out / f.name)
    dataset = load_dataset(data.root)
    record = {"kind": kind, "settings": settings,
              "population": {"path": str(data.root.resolve()), "content_hash": dataset.content_hash,
                             "people": len(dataset.people), "names": sorted(p["name"] for p in dataset.people)},
              "accuracy": {m: result[m]["accuracy"] for m in ("bio", "qa_id")},
              "versions": package_versions()}
    write_json(files.record, record)  # written last: its presence marks a finished base
    return record


def base_headline(record: dict) -> str:
    """A base's base.json in one line: its kind, population and accuracies."""
    acc = "  ".join(f"{m} {v:.3f}" for m, v in record["accuracy"].items())
    return f"{record['kind']} base on {record['population']['people']} other people: {acc}"
