"""A run directory before training writes it: what it may already hold, one writer at a time, and what
a killed attempt left behind (so a resumed run writes exactly what an uninterrupted one writes).

`prepare_run_dir` decides between a fresh start, `--force` (everything but the lock goes) and a
resume (same config and data; half-written files dropped); `run_lock` holds the directory's lock
(`factrecall.locks`) on the main process, every rank raising its refusal alike; `truncate_log`
cuts `metrics.jsonl` back to its length at the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from accelerate.utils import broadcast_object_list

from factrecall.artifacts import is_directory, read_json
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.locks import directory_lock


def _leftovers(out: Path) -> list[Path]:
    """Temporary files and directories of atomic writes a killed attempt left in the run directory."""
    return [c for c in out.iterdir() if c.name.startswith(".") and c.name.endswith((".tmp", ".old"))]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def prepare_run_dir(out: Path, record: dict, resume: bool, force: bool, main: bool) -> bool:
    """Check what `out` holds; returns True when a checkpoint should be resumed (only `main` deletes).

    The lock file is no content; `force` deletes everything else (never the directory itself, whose
    lock this process holds). A resumed run first drops what a killed attempt left half-written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    files = RunLayout(out)
    held = [c for c in out.iterdir() if c != files.lock] if out.is_dir() else []
    if not held:
        return False
    if force:
        if main:
            _remove(held)
        return False
    if not files.config.is_file():
        if resume and all(c in (files.base, files.live) or c in _leftovers(out) for c in held):
            if main:  # killed while writing θ_pre, before the record that makes it a run: start it over
                _remove(held)
            return False
        raise UserError(f"--out {out} is not empty and holds no run; choose another directory or pass --force")
    old = read_json(files.config, "run config")
    if not isinstance(old, dict):
        raise UserError(f"run config: {files.config} is damaged (not a run record); pass --force to start the run over")
    data = old.get("data")
    same = old.get("train") == record["train"] and isinstance(data, dict) and \
        data.get("content_hash") == record["data"]["content_hash"]
    if not resume:
        raise UserError(f"--out {out} already holds a run; pass --resume to continue it or --force to replace it")
    if not same:
        raise UserError(f"--out {out} holds a run with a different config or dataset; "
                        f"use another directory or --force to replace it")
    if files.finished:
        if main:  # killed after the final evaluation, before the checkpoint was removed
            shutil.rmtree(files.checkpoint.root, ignore_errors=True)
        return False
    if main:
        _remove(_leftovers(out))
    return files.checkpoint.root.is_dir()


def model_directory(model: str) -> Path | None:
    """The directory `--model` reads θ_pre from, or None for a preset name."""
    return Path(model) if is_directory(model) else None


@contextlib.contextmanager
def run_lock(out: Path, accelerator) -> Iterator[None]:
    """The main process holds `out`'s lock for the whole run; every rank raises its refusal alike."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if accelerator.is_main_process:
            try:
                stack.enter_context(directory_lock(out, "training run"))
            except UserError as e:
                refusal = str(e)
        if accelerator.num_processes > 1:
            refusal = broadcast_object_list([refusal])[0]
        if refusal is not None:
            raise UserError(refusal)
        yield


def truncate_log(path: Path, size: int, main: bool) -> None:
    """Cut the log `path` back to its first `size` bytes (0: remove it; only `main` writes); a shorter
    or missing log where a checkpoint counted `size` bytes is damaged."""
    length = path.stat().st_size if path.is_file() else 0
    if length < size:
        raise UserError(f"{path} holds {length} bytes but its checkpoint logged {size}; the run's log is damaged, "
                        f"pass --force to start over")
    if size:  # the rows it keeps must be the run's own
        with open(path, "rb") as f:
            kept = f.read(size)
        for number, line in enumerate(kept.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                raise UserError(f"{path}:{number}: not a JSON row; the run's log is damaged, pass --force to start "
                                f"over") from None
    if not main or not path.is_file():
        return
    if size == 0:
        path.unlink()
        return
    with open(path, "r+b") as f:
        f.truncate(size)
