"""`factrecall study` on a sweep: every point (`study.sweep`) as a full study in `points/<id>/`.

Three ways to run the points, all writing the same directories:

* in this process, one after another (`jobs = 1`);
* `jobs = N`: N child processes (`factrecall study --point I`), each with ⌊threads / N⌋ torch threads
  of this machine's cores, its output in `logs/point-<id>.log`;
* `factrecall study --point I` from any launcher (a Slurm array: docs/method.md §12): one point, under
  that point's own lock, so many may run at once on a shared filesystem.

A point already finished is skipped step by step as any study is. A point that fails does not stop
the others; the sweep then ends with one line naming it (exit 2), the finished points kept.
`summary.json` and the report of the whole sweep are rebuilt from whatever points are finished by
`factrecall report` (and at the end of a full run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch

from factrecall.artifacts import read_json, write_json
from factrecall.errors import UserError
from factrecall.layout import StudyLayout
from factrecall.locks import refuse_overlap
from factrecall.plan.disk import check_disk, study_disk_bytes
from factrecall.provenance import package_versions
from factrecall.study.runner import run_study
from factrecall.study.sweep import Point, sweep_points
from factrecall.study.sweep_summary import finished, point_headline, summarize_sweep


def sweep_record(study: Path) -> dict | None:
    """The sweep's study.json, or None when `study` holds no sweep."""
    record = StudyLayout(Path(study)).record
    if not record.is_file():
        return None
    content = read_json(record, "study record")
    return content if "sweep" in content else None


def point_finished(study: Path, point: Point) -> bool:
    """Whether the point has a summary of its current config (a changed setting makes it unfinished)."""
    return finished(point.layout(study), point.config_digest)


def run_sweep(out: Path, config_file: Path, preset: str | None = None, force: bool = False,
              log: Callable[[str], None] = print, device: str | None = None, ignore_disk: bool = False,
              jobs: int = 1, only: int | None = None) -> dict | None:
    """Run the sweep's points (all, or point `only`); returns the sweep's summary (None for one `only` point,
    whose own summary is in its directory: many may run at once, so the sweep's summary is left to
    `factrecall report`). Refuses a sweep whose points do not fit the disk, before any point starts."""
    out, points = Path(out), sweep_points(config_file, preset, device)
    if only is not None and not 0 <= only < len(points):
        raise UserError(f"--point {only}: the sweep has {len(points)} points (0–{len(points) - 1}); "
                        f"see 'factrecall study --config {config_file} --list-points'")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs must be an integer ≥ 1 (got {jobs!r})")
    refuse_overlap(out, [("config file", config_file)], "study")
    todo = [p for p in points if only in (None, p.index)]
    if force and only is None:
        _start_over(out)
    _prepare_root(out, config_file, preset, points)
    left = [p for p in todo if not point_finished(out, p)]
    check_disk(out, sum(study_disk_bytes(p.config)["peak"] for p in left), f"{len(left)} sweep points", ignore_disk)
    failed = (_run_here if jobs == 1 or len(todo) == 1 else _run_children)(
        out, todo, log, jobs=jobs, config_file=config_file, preset=preset, device=device,
        force=force and only is not None)  # one point started over under its own lock (`run_study`)
    if failed and only is not None:
        raise UserError(f"point {only} ({todo[0].label}) failed: {failed[0][1]}")
    summary = None
    if only is None:
        summary = summarize_sweep(out)
        write_json(StudyLayout(out).summary, summary)
    if failed:
        point, why = failed[0]
        done = sum(point_finished(out, p) for p in points)
        raise UserError(f"point {point.index} ({point.label}) failed: {why}; {done} of {len(points)} points are "
                        f"finished and kept{f' ({len(failed) - 1} more failed)' if len(failed) > 1 else ''}; fix it "
                        f"and rerun (finished points are skipped), or 'factrecall report --study {out}' for a report "
                        f"of the finished ones")
    return summary


def _start_over(out: Path) -> None:
    """`--force` without `--point`: remove every file of the sweep (a lock file aside)."""
    if out.is_dir():
        for child in out.iterdir():
            if child != StudyLayout(out).lock:
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def _ours(out: Path, child: Path) -> bool:
    """Whether `child` of `out` is something a sweep writes (another `--point` may be writing it right now)."""
    files = StudyLayout(out)
    owned = {files.lock, files.record, files.summary, files.report.parent, files.point("x").root.parent,
             files.point_log("x").parent}
    return child in owned or child.name.startswith((f".{files.record.name}.", f".{files.summary.name}."))  # replaced now


def _prepare_root(out: Path, config_file: Path, preset: str | None, points: list[Point]) -> None:
    """Write the sweep's study.json (its points as of this config); refuse a directory holding anything else."""
    files = StudyLayout(out)
    if files.record.is_file() and sweep_record(out) is None:
        raise UserError(f"--out {out} holds a single study, not a sweep; use another directory or --force "
                        f"(without --point) to start it over")
    if out.is_dir() and not all(_ours(out, child) for child in out.iterdir()):
        raise UserError(f"--out {out} holds files that are not a sweep's; choose another directory or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    write_json(files.record, {
        "sweep": {"config_file": str(Path(config_file).resolve()), "preset": preset},
        "points": [{"index": p.index, "id": p.id, "label": p.label, "settings": p.settings,
                    "config_digest": p.config_digest} for p in points],
        "provenance": package_versions()})


def _run_here(out: Path, points: list[Point], log: Callable[[str], None], force: bool = False,
              **_) -> list[tuple[Point, str]]:
    """Each point in this process, in order; returns the failed ones with their one-line reasons."""
    failed = []
    for p in points:
        log(f"— point {p.index}: {p.label} ({p.layout(out).root})")
        try:
            summary = run_study(p.layout(out).root, point=p, log=log, ignore_disk=True, force=force)
        except UserError as e:
            failed.append((p, str(e)))
            log(f"point {p.index} ({p.label}) failed: {e}")
            continue
        except Exception as e:  # noqa: BLE001 — one point's bug must not lose the others; its traceback is logged
            log(traceback.format_exc())
            first = (str(e).strip().splitlines() or [""])[0]
            failed.append((p, f"{type(e).__name__}: {first} (traceback above, or with --jobs in "
                              f"{StudyLayout(out).point_log(p.id)})"))
            log(f"point {p.index} ({p.label}) failed: {failed[-1][1]}")
            continue
        log(f"point {p.index} ({p.label}) finished: {point_headline(summary)}")
    return failed


def _run_children(out: Path, points: list[Point], log: Callable[[str], None], jobs: int, config_file: Path,
                  preset: str | None, device: str | None, **_) -> list[tuple[Point, str]]:
    """Each point as `factrecall study --point I` in one of `jobs` child processes sharing this machine's cores."""
    threads = max(1, torch.get_num_threads() // min(jobs, len(points)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log(f"{len(points)} points in {jobs} processes of {threads} torch thread{'s' * (threads > 1)} each; "
        f"their output in {StudyLayout(out).point_log('<id>')}")

    def run(p: Point) -> tuple[Point, int, float]:
        command = [sys.executable, "-m", "factrecall", "study", "--out", str(out), "--config", str(config_file),
                   "--point", str(p.index), "--ignore-disk", *(["--preset", preset] if preset else []),
                   *(["--device", device] if device else [])]
        log_file = StudyLayout(out).point_log(p.id)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log_file, "wb") as f:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        return p, code, time.perf_counter() - t0

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in as_completed([pool.submit(run, p) for p in points]):
            p, code, seconds = future.result()
            if code == 0:
                log(f"point {p.index} ({p.label}) finished in {seconds:.0f}s: "
                    f"{point_headline(read_json(p.layout(out).summary, 'point summary'))}")
            else:
                log_file = StudyLayout(out).point_log(p.id)
                lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                why = (f"killed by signal {-code}" if code < 0 else
                       lines[-1].removeprefix("factrecall: error: ").removeprefix(f"point {p.index} ({p.label}) failed: ")
                       if lines else f"exit code {code}")
                failed.append((p, f"{why} (log: {log_file})"))
                log(f"point {p.index} ({p.label}) failed after {seconds:.0f}s: {why}")
    return sorted(failed, key=lambda f: f[0].index)

