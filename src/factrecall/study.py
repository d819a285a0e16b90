"""`factrecall study`: the paper's comparison in one command (docs/method.md §0, §11).

Steps, in order, for both strategies where it applies:

    data → [base] → train/{stage,mix} → shared → ablate → graft → heads (and neurons) → inspect
    → attention → consistency → [forgetting] → summary.json → report/index.html

With several `bases` (random, language, skill, or a model directory) the steps run once per base:
the first base's runs are the study's own (`runs/`), each other base gets `bases/<name>/` with its
own runs, summary and report; `language` and `skill` bases are built first on a population
disjoint from the study's (`bases/<kind>/model`), and their runs also measure forgetting.

`manifest.json` records every finished step: a key hashing its settings and the output hashes of
the steps it reads, and the sha256 of each file it wrote. Re-running the same command skips a step
whose key matches and whose files are all there unchanged; anything else reruns it (training
continues from its last checkpoint). A study directory holds one config (`study.json`); another
config is refused unless `--force`, which starts over. One study at a time per directory (a lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.attention import attention_stats
from factrecall.analysis.circuit import circuit_curves
from factrecall.analysis.consistency import consistency_run
from factrecall.analysis.graft import graft_run
from factrecall.analysis.inspect import inspect_run
from factrecall.analysis.shared import analyze_run
from factrecall.artifacts import as_json, read_json, sha256_files, write_json
from factrecall.bases import KINDS, build_base
from factrecall.claims import consistency_headline
from factrecall.data.generate import generate_dataset
from factrecall.devices import resolve_device
from factrecall.disk import check_disk, study_disk_bytes
from factrecall.errors import UserError
from factrecall.evaluation.forgetting import forgetting_run
from factrecall.layout import BaseLayout, RunLayout, StudyLayout
from factrecall.presets import StudyConfig, study_config
from factrecall.provenance import package_versions
from factrecall.summary import base_name, summarize_study
from factrecall.training.config import STRATEGIES
from factrecall.training.loop import train


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(as_json(obj), sort_keys=True).encode()).hexdigest()


class Manifest:
    """`manifest.json`: {step: {key, files: {relative path: sha256}, seconds}} of finished steps."""

    def __init__(self, root: Path):
        self.root, self.path = root, StudyLayout(root).manifest
        self.steps: dict[str, dict] = read_json(self.path, "study manifest") if self.path.is_file() else {}

    def key(self, step: str, settings, reads: tuple[str, ...]) -> str:
        return _digest({"step": step, "settings": settings, "reads": {r: self.steps[r]["files"] for r in reads}})

    def done(self, step: str, key: str) -> bool:
        entry = self.steps.get(step)
        return (entry is not None and entry["key"] == key and all(
            (self.root / f).is_file() and sha256_files([self.root / f]) == h for f, h in entry["files"].items()))

    def record(self, step: str, key: str, files: list[Path], seconds: float) -> None:
        self.steps[step] = {"key": key, "files": {str(f.relative_to(self.root)): sha256_files([f]) for f in files},
                            "seconds": round(seconds, 1)}
        write_json(self.path, self.steps)


@contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Hold `out/.lock` (an OS file lock: a killed process releases it, so a stale lock never blocks)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(StudyLayout(out).lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise UserError(f"another study is running in {out} (pid {f.read().strip() or '?'}); wait for it "
                            f"to finish or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(out: Path, config: StudyConfig, force: bool) -> None:
    """Check `out` against the config (or start it over with `force`) and write `study.json`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    files = StudyLayout(out)
    record = as_json(asdict(config))
    if force:
        for child in out.iterdir():
            if child != files.lock:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif files.record.is_file():
        if read_json(files.record, "study record").get("config") != record:
            raise UserError(f"--out {out} holds a study with a different config; use another directory "
                            f"or --force to start it over")
    elif any(c != files.lock for c in out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no study; choose another directory or pass --force")
    write_json(files.record, {"config": record, "provenance": package_versions()})


def _files(*paths: Path) -> list[Path]:
    return [p for p in paths if p.is_file()]


def run_study(out: Path, preset: str | None = None, config_file: Path | None = None, force: bool = False,
              log: Callable[[str], None] = print, device: str | None = None, ignore_disk: bool = False) -> dict:
    """Run (or resume) every step; writes `summary.json` and returns it (the report is built from it by
    `report.build.build_reports`, a floor above: `factrecall study` does both).

    `device` (auto, cpu, cuda) overrides the config's `train.device` and `analysis.device`; a disk too small
    for what the study writes (`disk.study_disk_bytes`) is refused before any step unless `ignore_disk`."""
    out = Path(out)
    config = study_config(preset, config_file, device)
    for where in (config.train.device, config.analysis.device):  # a GPU the config asks for must be here
        resolve_device(where)
    with study_lock(out):
        check_disk(out, study_disk_bytes(config)["peak"], "this study", ignore_disk)
        _prepare(out, config, force)
        manifest = Manifest(out)

        def step(name: str, settings, reads: tuple[str, ...], work: Callable[[], list[Path]],
                 headline: Callable[[], str]) -> None:
            key = manifest.key(name, settings, reads)
            t0 = time.perf_counter()
            if manifest.done(name, key):
                log(f"{name:<22} done        {headline()}")
                return
            files = work()
            manifest.record(name, key, files, time.perf_counter() - t0)
            log(f"{name:<22} {time.perf_counter() - t0:6.1f}s     {headline()}")

        files = StudyLayout(out)
        data = files.data
        step("data", asdict(config.data), (),
             lambda: (generate_dataset(config.data, data.root), _files(*data.files))[1],
             lambda: f"{read_json(data.meta, 'dataset meta')['counts']}")
        for i, base in enumerate(config.bases):
            name = base_name(base)
            root, prefix = (files, "") if i == 0 else (files.sub_study(name), f"{name}/")
            model = _base_step(step, manifest, out, base, config)
            reads = ("data", f"base/{name}") if base in KINDS else ("data",)  # a directory: its path is in the key
            sub = replace(config, train=replace(config.train, model=model), bases=(base,))
            if i:
                write_json(root.record, {"config": as_json(asdict(sub)), "provenance": package_versions()})
            _strategy_steps(step, manifest, root, data.root, sub, prefix, reads)
            if i:
                write_json(root.summary, summarize_study(root.root))
        summary = summarize_study(out)
        write_json(files.summary, summary)
    return summary


def _base_step(step, manifest: Manifest, out: Path, base: str, config: StudyConfig) -> str:
    """The `train.model` of runs on `base`, building a `language`/`skill` base (on a disjoint population) first."""
    if base == "random":
        return config.train.model
    if base not in KINDS:
        return str(Path(base).resolve())
    where = StudyLayout(out).built_base(base)

    def work() -> list[Path]:
        # a base finished before whose files changed is rebuilt; an unfinished one continues
        build_base(base, where.root, config.preset, config.base.people, config.base.seed,
                   exclude=(StudyLayout(out).data.root,), model=config.train.model,
                   force=f"base/{base}" in manifest.steps, epochs=config.base.epochs)
        return _files(where.record, *sorted(where.root.glob("*.safetensors")))

    step(f"base/{base}", [asdict(config.base), asdict(config.train)], ("data",), work,
         lambda: _base_line(where))
    return str(where.root.resolve())


def _strategy_steps(step, manifest: Manifest, root: StudyLayout, data: Path, config: StudyConfig, prefix: str,
                    base_reads: tuple[str, ...]) -> None:
    """Train both strategies under `root/runs/` and run every analysis on them (step names start with `prefix`)."""
    a = config.analysis
    for strategy in STRATEGIES:
        run = root.run(strategy)
        cfg = replace(config.train, strategy=strategy)

        def train_step(cfg=cfg, run=run, name=f"{prefix}train/{strategy}") -> list[Path]:
            # an unfinished run continues from its checkpoint; a finished one whose files changed retrains
            train(cfg, data, run.root, resume=True, force=name in manifest.steps)
            return _files(run.eval, run.trace, *sorted(run.model.glob("*")))

        step(f"{prefix}train/{strategy}", asdict(cfg), base_reads, train_step, lambda run=run: _accuracy(run))

    for strategy in STRATEGIES:
        run = root.run(strategy)
        name = (lambda kind, s=strategy: f"{prefix}{kind}/{s}")
        reads = (name("train"),)
        step(name("shared"), [a.k, a.sweep], reads,
             lambda run=run: (analyze_run(run.root, a.k, a.sweep), _files(*sorted(run.shared_dir.glob("*"))))[1],
             lambda run=run: _shared_line(run))
        step(name("ablate"), [a.ablation_k, a.ablation_seeds, a.ablation_eval_people], reads,
             lambda run=run: (ablate_run(run.root, a.ablation_k, a.ablation_seeds, a.ablation_eval_people,
                                         device=a.device),
                              _files(run.result("ablation")))[1],
             lambda run=run: _ablation_line(run))
        step(name("graft"), [a.graft_sparsity, a.graft_steps, a.graft_lr, a.graft_eval_people],
             (*reads, name("shared")),
             lambda run=run: (graft_run(run.root, a.graft_sparsity, a.graft_steps, a.graft_lr,
                                        eval_people=a.graft_eval_people, device=a.device),
                              _files(run.result("graft"), run.graft_mask))[1],
             lambda run=run: _graft_line(run))
        step(name("heads"), [a.k, a.heads_on, a.heads_eval_people, a.neuron_points], (*reads, name("graft")),
             lambda run=run: _heads(run, a), lambda run=run: _heads_line(run, a))
        step(name("inspect"), [], (*reads, name("shared")),
             lambda run=run: _inspect(run, a.device), lambda run=run: _inspect_line(run))
        step(name("attention"), [a.attention_people], (*reads, name("shared")),
             lambda run=run: (attention_stats(run.root, people=a.attention_people, device=a.device),
                              _files(run.result("attention")))[1],
             lambda run=run: _attention_line(run))
        step(name("consistency"), [a.consistency_people, a.probe_people], reads,
             lambda run=run: (consistency_run(run.root, people=a.consistency_people, probe_people=a.probe_people,
                                              device=a.device),
                              _files(run.result("consistency")))[1],
             lambda run=run: _consistency_line(run))
        if BaseLayout(Path(config.train.model)).record.is_file():  # a built base: it has a population to forget
            step(name("forgetting"), [a.heads_eval_people], reads,
                 lambda run=run: (forgetting_run(run.root, a.heads_eval_people, a.device),
                                  _files(run.result("forgetting")))[1],
                 lambda run=run: _forgetting_line(run))


def _heads(run: RunLayout, a) -> list[Path]:
    circuit_curves(run.root, "head", k=a.k, eval_people=a.heads_eval_people, on=a.heads_on, device=a.device)
    circuit_curves(run.root, "neuron", k=a.k, eval_people=a.heads_eval_people, points=a.neuron_points,
                   on=a.heads_on, device=a.device)
    return _files(run.curves("head", a.heads_on), run.curves("neuron", a.heads_on))


def _inspect(run: RunLayout, device: str) -> list[Path]:
    inspect_run(run.root, device=device)
    return _files(*sorted(run.inspect.root.glob("*")))


def _accuracy(run: RunLayout) -> str:
    e = read_json(run.eval, "final evaluation")
    return "  ".join(f"{m} {e[m]['accuracy']:.3f}" for m in ("qa_id", "qa_ood", "bio"))


def _shared_line(run: RunLayout) -> str:
    s = read_json(run.shared, "shared parameters")
    return f"|Shared| {s['shared']} at k={s['k']:g}% (enrichment {s['enrichment']:.1f}), Gini heads {s['gini']['heads']:.2f}"


def _ablation_line(run: RunLayout) -> str:
    d = read_json(run.result("ablation"), "ablation")
    return (f"OOD-QA drop shared {d['shared']['drop']['qa_ood']:+.3f}, random {d['random']['mean_drop']['qa_ood']:+.3f}"
            f" (k={d['k']:g}%)")


def _graft_line(run: RunLayout) -> str:
    g = read_json(run.result("graft"), "graft")
    acc = g["graft"]["accuracy"]
    return f"|γ|₀ {g['graft']['size']} of {g['parameters']}, grafted ID {acc['qa_id']:.3f} OOD {acc['qa_ood']:.3f}"


def _heads_line(run: RunLayout, a) -> str:
    h = read_json(run.curves("head", a.heads_on), "heads")
    m = h["metrics"]["shared_size"]
    return f"shared_size heads: minimal sufficient {m['minimal_sufficient']}, critical {m['critical']} of {h['units']}"


def _inspect_line(run: RunLayout) -> str:
    r = read_json(run.inspect.json, "inspection")
    return f"person {r['person']['person_id']} ({r['person']['split']}), head L{r['layer']}.H{r['head']}"


def _attention_line(run: RunLayout) -> str:
    top = read_json(run.result("attention"), "attention statistics").get("top_shared_head")
    if not top:
        return "attention shares per head"
    return (f"top shared head L{top['layer']}.H{top['head']}: relation share BIO {top['bio']['relation']:.2f} "
            f"QA {top['qa']['relation']:.2f}, subject share BIO {top['bio']['subject']:.2f} QA {top['qa']['subject']:.2f}")


def _consistency_line(run: RunLayout) -> str:
    h = consistency_headline(read_json(run.result("consistency"), "consistency"))
    rep = ", ".join(f"{p} {v:+.3f}" for p, v in h["representation_gap"].items())
    probe = "n/a" if h["gradient_probe_gap"] is None else f"{h['gradient_probe_gap']:+.3f}"
    return f"gradient probe gap {probe}; representation gap {rep}"


def _base_line(base: BaseLayout) -> str:
    r = read_json(base.record, "base record")
    acc = "  ".join(f"{m} {v:.3f}" for m, v in r["accuracy"].items())
    return f"{r['kind']} base on {r['population']['people']} other people: {acc}"


def _forgetting_line(run: RunLayout) -> str:
    f = read_json(run.result("forgetting"), "forgetting")
    return "base population " + ", ".join(f"{m} {f['before'][m]:.3f} → {f['after'][m]:.3f}" for m in f["after"])
