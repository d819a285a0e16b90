"""`factrecall study`: the paper's comparison in one command (docs/method.md §0, §11).

Steps, in order, for both strategies where it applies:

    data → [base] → train/{stage,mix} → [train/stage-arms/<arm> → stage/choose] → every analysis of
    `registry.ANALYSES` (shared → ablation → graft → heads → neurons → inspect → attention →
    consistency → [forgetting]) → summary.json

With `[stage_arms]`, Stage's QA phase also runs over a grid, each arm forked from the Stage run's
BIO phase, and the Stage analyses take the arm `study/stage_arms.py choose` picks (stage_arms.json).

(`factrecall study` then builds report/index.html from the summary and the artifacts.)

With several `bases` (random, language, skill, or a model directory) the steps run once per base:
the first base's runs are the study's own (`runs/`), each other base gets `bases/<name>/` with its
own runs, summary and report; `language` and `skill` bases are built first on a population
disjoint from the study's (`bases/<kind>/model`), and their runs also measure forgetting.

`manifest.json` records every finished step: a key hashing its settings and the output hashes of
the steps it reads, and the sha256 of each file it wrote. Re-running the same command skips a step
whose key matches and whose files are all there unchanged; anything else reruns it (training
continues from its last checkpoint). A study directory holds one config (`study.json`); another
config is refused unless `--force`, which starts over. One study at a time per directory
(`locks.directory_lock`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TypeVar

from factrecall.analysis.registry import ANALYSES, runs_on
from factrecall.artifacts import atomic_directory, digest, read_json, sha256_files, write_json
from factrecall.config.study import (
    StudyConfig,
    base_name,
    config_record,
    recorded_config,
    stage_arm_settings,
    study_config,
)
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.data.generate import generate_dataset
from factrecall.devices import resolve_device
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import accuracy_line
from factrecall.layout import DatasetLayout, RunLayout, StudyLayout
from factrecall.locks import directory_lock, refuse_overlap
from factrecall.plan.disk import check_disk, study_disk_bytes
from factrecall.provenance import package_versions
from factrecall.study.bases import KINDS, base_headline, build_base
from factrecall.study.stage_arms import arm_label, choose
from factrecall.study.stage_arms import headline as arm_headline
from factrecall.study.summary import run_accuracy, run_evaluation, summarize_study
from factrecall.study.sweep import Point
from factrecall.terms import STRATEGIES
from factrecall.training.config import QA_PHASE_SETTINGS, TrainConfig, train_record
from factrecall.training.loop import train
from factrecall.training.run_dir import model_directory

R = TypeVar("R")


class Manifest:
    """`manifest.json`: {step: {key, files: {relative path: sha256}, seconds, cpu_seconds}} of finished steps."""

    def __init__(self, root: Path):
        self.root, self.path = root, StudyLayout(root).manifest
        self.steps: dict[str, dict] = read_json(self.path, "study manifest") if self.path.is_file() else {}

    def key(self, step: str, settings, reads: tuple[str, ...]) -> str:
        return digest({"step": step, "settings": settings, "reads": {r: self.steps[r]["files"] for r in reads}})

    def done(self, step: str, key: str) -> bool:
        entry = self.steps.get(step)
        return (entry is not None and entry["key"] == key and all(
            (self.root / f).is_file() and sha256_files([self.root / f]) == h for f, h in entry["files"].items()))

    def record(self, step: str, key: str, files: list[Path], seconds: float, cpu_seconds: float) -> None:
        """`seconds`: the step's wall clock; `cpu_seconds`: this process's CPU time over it (all its threads)."""
        self.steps[step] = {"key": key, "files": {str(f.relative_to(self.root)): sha256_files([f]) for f in files},
                            "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)}
        write_json(self.path, self.steps)


def _prepare(out: Path, config: StudyConfig, force: bool, point: dict | None = None) -> None:
    """Check `out` against the config (or start it over with `force`) and write `study.json`. A sweep's
    `point` takes the sweep's config as it now is: its manifest's keys decide which steps rerun."""
    files = StudyLayout(out)
    record = config_record(config)
    if force:
        for child in out.iterdir():
            if child != files.lock:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif files.record.is_file():
        stored = read_json(files.record, "study record").get("config")
        if not isinstance(stored, dict) or recorded_config(stored) != record:
            if not point:
                raise UserError(f"--out {out} holds a study with a different config; use another directory "
                                f"or --force to start it over")
            files.summary.unlink(missing_ok=True)  # the point's summary is of its earlier config
    elif any(c != files.lock for c in out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no study; choose another directory or pass --force")
    write_json(files.record, {"config": record, **({"point": point} if point else {}),
                              "provenance": package_versions()})


def _files(*paths: Path) -> list[Path]:
    return [p for p in paths if p.is_file()]


class Steps:
    """Runs a study's steps: each is skipped when the manifest says it is done with the same key, and
    logged with its headline either way. A step returns its result (read back when it was skipped)."""

    def __init__(self, manifest: Manifest, log: Callable[[str], None]):
        self.manifest, self.log = manifest, log

    def __call__(self, name: str, settings, reads: tuple[str, ...], run: Callable[[], R],
                 writes: Callable[[], list[Path]], load: Callable[[], R], headline: Callable[[R], str]) -> R:
        key = self.manifest.key(name, settings, reads)
        t0, cpu0 = time.perf_counter(), time.process_time()
        if self.manifest.done(name, key):
            result = load()
            self.log(f"{name:<22} done        {headline(result)}")
            return result
        result = run()
        self.manifest.record(name, key, writes(), time.perf_counter() - t0, time.process_time() - cpu0)
        self.log(f"{name:<22} {time.perf_counter() - t0:6.1f}s     {headline(result)}")
        return result


def run_study(out: Path, preset: str | None = None, config_file: Path | None = None, force: bool = False,
              log: Callable[[str], None] = print, device: str | None = None, ignore_disk: bool = False,
              point: Point | None = None) -> dict:
    """Run (or resume) every step; writes `summary.json` and returns it (the report is built from it by
    `report.build.build_reports`, a floor above: `factrecall study` does both).

    `device` (auto, cpu, cuda) overrides the config's `train.device` and `analysis.device`; a disk too small
    for what the study writes (`plan_disk.study_disk_bytes`) is refused before any step unless `ignore_disk`.
    A sweep's `point` (`study.sweep`) brings its own resolved config; `out` is then the point's directory."""
    out = Path(out)
    config = point.config if point else study_config(preset, config_file, device)
    for where in (config.train.device, config.analysis.device):  # a GPU the config asks for must be here
        resolve_device(where)
    refuse_overlap(out, [("config file", config_file), ("dataset", config.data_path),
                         ("pools directory", config.data.pools),
                         *(("excluded dataset", e) for e in config.data.exclude),
                         ("model directory", model_directory(config.train.model)),
                         *(("base directory", b) for b in config.bases if b not in KINDS and b != "random")], "study")
    with directory_lock(out, "study"):
        check_disk(out, study_disk_bytes(config)["peak"], "this study", ignore_disk)
        _prepare(out, config, force, point and {"index": point.index, "label": point.label,
                                                 "settings": point.settings})
        manifest = Manifest(out)
        step = Steps(manifest, log)
        files = StudyLayout(out)
        data = files.data
        _data_step(step, config, data)
        for i, base in enumerate(config.bases):
            name = base_name(base)
            root, prefix = (files, "") if i == 0 else (files.sub_study(name), f"{name}/")
            model = _base_step(step, manifest, out, base, config)
            reads = ("data", f"base/{name}") if base in KINDS else ("data",)  # a directory: its path is in the key
            sub = replace(config, train=replace(config.train, model=model), bases=(base,))
            if i:
                write_json(root.record, {"config": config_record(sub), "provenance": package_versions()})
            _strategy_steps(step, manifest, root, data.root, sub, prefix, reads)
            if i:
                write_json(root.summary, summarize_study(root.root))
        summary = summarize_study(out)
        write_json(files.summary, summary)
    return summary


def _data_step(step: Steps, config: StudyConfig, data: DatasetLayout) -> None:
    """The study's people in `data`: drawn by the generator, or `[data] path`'s dataset copied in."""
    if config.data_path:
        own = load_dataset(Path(config.data_path))
        settings, make = {"path": config.data_path, "content_hash": own.content_hash}, lambda: _copy(own, data.root)
    else:
        settings, make = asdict(config.data), lambda: generate_dataset(config.data, data.root)
    step("data", settings, (), run=make, writes=lambda: _files(*load_dataset(data.root).files),
         load=lambda: load_dataset(data.root).meta, headline=lambda meta: f"{meta['counts']}")


def _copy(dataset: Dataset, out: Path) -> dict:
    """Copy `dataset`'s files into `out` (atomically); returns the copy's meta (same content hash)."""
    with atomic_directory(out) as tmp:
        for f in dataset.files:
            shutil.copyfile(f, tmp / f.name)
    return load_dataset(out).meta


def _base_step(step: Steps, manifest: Manifest, out: Path, base: str, config: StudyConfig) -> str:
    """The `train.model` of runs on `base`, building a `language`/`skill` base (on a disjoint population) first."""
    if base == "random":
        return config.train.model
    if base not in KINDS:
        return str(Path(base).resolve())
    where = StudyLayout(out).built_base(base)

    def build() -> dict:
        # a base finished before whose files changed is rebuilt; an unfinished one continues
        return build_base(base, where.root, config.preset, config.base.people, config.base.seed,
                          exclude=(StudyLayout(out).data.root,), model=config.train.model,
                          force=f"base/{base}" in manifest.steps, epochs=config.base.epochs)

    step(f"base/{base}", [asdict(config.base), train_record(config.train)], ("data",), run=build,
         writes=lambda: _files(where.record, *sorted(where.root.glob("*.safetensors"))),
         load=lambda: read_json(where.record, "base record"), headline=base_headline)
    return str(where.root.resolve())


def _strategy_steps(step: Steps, manifest: Manifest, root: StudyLayout, data: Path, config: StudyConfig,
                    prefix: str, base_reads: tuple[str, ...]) -> None:
    """Train both strategies (and the Stage arms) under `root/runs/` and run every analysis on the analysed runs
    (step names start with `prefix`)."""
    a = config.analysis
    for strategy in STRATEGIES:
        _train_step(step, manifest, f"{prefix}train/{strategy}", replace(config.train, strategy=strategy),
                    data, root.run(strategy), base_reads)
    stage_reads = _stage_arm_steps(step, manifest, root, data, config, prefix, base_reads)

    for strategy in STRATEGIES:
        run = root.analysed(strategy)
        trained = stage_reads if strategy == "stage" else (f"{prefix}train/{strategy}",)
        for analysis in ANALYSES:
            if not runs_on(analysis, run, a):
                continue
            reads = (*trained, *(f"{prefix}{r}/{strategy}" for r in analysis.reads))
            step(f"{prefix}{analysis.name}/{strategy}", analysis.settings(a), reads,
                 run=lambda analysis=analysis, run=run: analysis.run(run.root, a),
                 writes=lambda analysis=analysis, run=run: _files(*analysis.writes(run, a)),
                 load=lambda analysis=analysis, run=run: analysis.load(run, a), headline=analysis.headline)


def _train_step(step: Steps, manifest: Manifest, name: str, cfg: TrainConfig, data: Path, run: RunLayout,
                reads: tuple[str, ...], start_from: Path | None = None) -> None:
    """One training run; an unfinished run continues from its checkpoint, a finished one whose files changed
    retrains."""
    step(name, train_record(cfg), reads,
         run=lambda: train(cfg, data, run.root, resume=True, force=name in manifest.steps, start_from=start_from),
         writes=lambda: _files(run.eval, run.trace, *sorted(run.model.glob("*")),
                               *sorted(p for p in run.bio_phase.root.rglob("*") if p.is_file())),
         load=lambda: read_json(run.eval, "final evaluation"), headline=accuracy_line)


def _stage_arm_steps(step: Steps, manifest: Manifest, root: StudyLayout, data: Path, config: StudyConfig,
                     prefix: str, base_reads: tuple[str, ...]) -> tuple[str, ...]:
    """With [stage_arms]: every arm forked from the Stage run's BIO phase, then `stage/choose` writes
    stage_arms.json; returns the steps the Stage analyses read."""
    donor = root.run("stage")
    arms = [(arm_label(s), replace(config.train, strategy="stage", **s), s)
            for s in stage_arm_settings(config.stage_arms, config.train)]
    if not arms:
        root.stage_choice.unlink(missing_ok=True)  # a config without arms analyses [train]'s Stage run
        return (f"{prefix}train/stage",)
    for label, cfg, _ in arms:
        _train_step(step, manifest, f"{prefix}train/stage-arms/{label}", cfg, data, root.stage_arm(label),
                    (*base_reads, f"{prefix}train/stage"), start_from=donor.root)
    trained = (f"{prefix}train/stage", *(f"{prefix}train/stage-arms/{label}" for label, _, _ in arms))

    def choose_arm() -> dict:
        own = {key: getattr(config.train, key) for key in QA_PHASE_SETTINGS}
        runs = [{"label": "[train]", "run": "runs/stage", "settings": own,
                 "accuracy": run_accuracy(run_evaluation(donor))}]
        runs += [{"label": label, "run": str(root.stage_arm(label).root.relative_to(root.root)), "settings": s,
                  "accuracy": run_accuracy(run_evaluation(root.stage_arm(label)))}
                 for label, _, s in arms]
        record = {"runs": runs, "chosen": choose(runs)["run"]}
        write_json(root.stage_choice, record)
        return record

    step(f"{prefix}stage/choose", [], trained, run=choose_arm, writes=lambda: [root.stage_choice],
         load=lambda: read_json(root.stage_choice, "Stage arms"), headline=arm_headline)
    return (*trained, f"{prefix}stage/choose")
