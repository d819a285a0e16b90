"""A run directory before training writes it: what it may already hold, one writer at a time, and what
a killed attempt left behind (so a resumed run writes exactly what an uninterrupted one writes).

`prepare_run_dir` decides between a fresh start, `--force` (everything but the lock goes) and a
resume (same config, data and start; half-written files dropped; a finished run's damaged eval.json refused);
`resume_point` says what the run continues from; `discard_new_run` removes what a refused new run wrote;
`run_lock` holds the directory's lock (`factrecall.locks`) on the main process, every rank raising its refusal
alike; `truncate_log` cuts `metrics.jsonl` back to its length at the checkpoint.

A fork (`train --start-from`) is a Stage run that starts at its QA phase from another Stage run's kept BIO
phase (`RunLayout.bio_phase`): `donor_run` refuses a donor whose BIO phase is not the one this run would
train (same dataset, every setting equal but `QA_PHASE_SETTINGS` and checkpoint_every), `check_same_base`
one whose θ_pre differs. The fork is then a run resumed at that boundary, so it writes what the same run
trained from scratch writes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from accelerate.utils import broadcast_object_list

from factrecall.artifacts import is_directory, json_lines, read_json, sha256_files
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.locks import directory_lock
from factrecall.terms import EVAL_SETS
from factrecall.training.config import QA_PHASE_SETTINGS

# what a fork may set apart from its donor: its own QA phase, and when it checkpoints (a checkpoint saves the
# state and changes none of it: tests/test_interruption.py, tests/test_stage_arms.py)
FORK_MAY_DIFFER = (*QA_PHASE_SETTINGS, "checkpoint_every")


def _leftovers(out: Path) -> list[Path]:
    """Temporary files and directories of atomic writes a killed attempt left in the run directory."""
    return [c for c in out.iterdir() if c.name.startswith(".") and c.name.endswith((".tmp", ".old"))]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def prepare_run_dir(out: Path, record: dict, resume: bool, force: bool, main: bool) -> None:
    """Check what `out` holds and clear what must go (only `main` deletes); `resume_point` then says where the
    run continues.

    The lock file is no content; `force` deletes everything else (never the directory itself, whose
    lock this process holds). A resumed run first drops what a killed attempt left half-written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    files = RunLayout(out)
    held = [c for c in out.iterdir() if c != files.lock] if out.is_dir() else []
    if not held:
        return
    if force:
        if main:
            _remove(held)
        return
    if not files.config.is_file():
        if resume and all(c in (files.base, files.live) or c in _leftovers(out) for c in held):
            if main:  # killed while writing θ_pre, before the record that makes it a run: start it over
                _remove(held)
            return
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
    if _kept_start(old) != _kept_start(record):  # the donor's path may change (a moved study), its bytes not
        raise UserError(f"--out {out} holds a run {_start(old)}, not {_start(record)}; resume it as it started "
                        f"or pass --force to replace it")
    if files.finished:
        if not is_final_evaluation(read_json(files.eval, "final evaluation")):
            raise UserError(f"{files.eval} is damaged (not a run's final evaluation); pass --force to retrain the run")
        if main:  # killed after the final evaluation, before the checkpoint was removed
            shutil.rmtree(files.checkpoint.root, ignore_errors=True)
        return
    if main:
        _remove(_leftovers(out))


def _kept_start(record: dict) -> str | None:
    """The sha256 of the kept BIO phase the run of `record` (its config.json) started from; None: from scratch."""
    start = record.get("start_from")
    return str(start.get("bio_phase_sha256")) if isinstance(start, dict) else None


def _start(record: dict) -> str:
    """How the run of `record` started, in words."""
    if _kept_start(record) is None:
        return "trained from scratch"
    return f"started from {record['start_from'].get('run')} (bio_phase sha256 {_kept_start(record)[:12]})"


def resume_point(files: RunLayout, donor: RunLayout | None) -> RunLayout | None:
    """What the run `files` continues from: a run directory whose `checkpoint/` holds the position and whose
    `metrics.jsonl` the log up to it. The run itself when it holds a checkpoint, else the BIO phase it kept,
    else (a fork) its `donor`'s kept BIO phase; None: from the start."""
    for source in (files, files.bio_phase, donor.bio_phase if donor else None):
        if source is not None and source.checkpoint.root.is_dir():
            return source
    return None


def donor_run(start_from: Path, record: dict) -> tuple[RunLayout, dict]:
    """The run a fork starts from (`start_from`: a Stage run directory or its bio_phase/) and what the fork's
    config.json records of it: {"run": its path, "bio_phase_sha256": a hash of its kept BIO phase (state.json,
    which holds the tensor files' hashes, and the log)}. Refused in one line unless its BIO phase is the one
    the fork's `record` (its config.json to be) would train: same dataset, same settings but FORK_MAY_DIFFER."""
    if record["train"]["strategy"] != "stage":
        raise UserError(f"--start-from starts the QA phase of a stage run; this run's strategy is "
                        f"{record['train']['strategy']}")
    path = Path(start_from).resolve()
    donor = RunLayout(path.parent) if RunLayout(path.parent).bio_phase.root == path else RunLayout(path)
    if not donor.config.is_file():
        raise UserError(f"--start-from {start_from} is not a run directory (nor a run's bio_phase/)")
    old = read_json(donor.config, "run config")
    theirs, ours = (old.get("train") if isinstance(old, dict) else None), record["train"]
    if not isinstance(theirs, dict) or not isinstance(old.get("data"), dict):
        raise UserError(f"run config: {donor.config} is damaged (not a run record); start from another run")
    if theirs.get("strategy") != "stage":
        raise UserError(f"--start-from {start_from} is a {theirs.get('strategy')} run; only a stage run keeps "
                        f"its BIO phase")
    if old["data"].get("content_hash") != record["data"]["content_hash"]:
        raise UserError(f"--start-from {start_from} was trained on another dataset (content hash "
                        f"{str(old['data'].get('content_hash'))[:12]}, here {record['data']['content_hash'][:12]})")
    differ = [k for k in sorted(theirs.keys() | ours.keys())
              if k not in FORK_MAY_DIFFER and theirs.get(k) != ours.get(k)]
    if differ:
        raise UserError(f"--start-from {start_from} trained its BIO phase with other settings ("
                        + ", ".join(f"train.{k} {theirs.get(k)!r}, here {ours.get(k)!r}" for k in differ)
                        + f"); a fork may differ only in {', '.join(FORK_MAY_DIFFER)}")
    kept = donor.bio_phase
    if not (kept.checkpoint.state.is_file() and kept.metrics.is_file()):
        why = (f"it was itself started from {old['start_from'].get('run')}; start from that run"
               if isinstance(old.get("start_from"), dict) else "its BIO phase has not ended")
        raise UserError(f"--start-from {start_from} holds no kept BIO phase ({kept.root.name}/): {why}")
    return donor, {"run": str(donor.root), "bio_phase_sha256": sha256_files([kept.checkpoint.state, kept.metrics])}


def check_same_base(base: Path, donor: RunLayout) -> None:
    """Refuse a fork whose θ_pre (`base`, as the fork wrote it) is not its `donor`'s base/, file for file."""
    def hashes(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): sha256_files([p]) for p in sorted(root.rglob("*")) if p.is_file()}

    if hashes(base) != hashes(donor.base):
        raise UserError(f"θ_pre of this run differs from that of --start-from {donor.root} (their base/ files "
                        f"differ); start from a run of the same model")


def is_final_evaluation(result) -> bool:
    """Whether `result` (a run's eval.json) holds the accuracy of every evaluation set and its phases."""
    return isinstance(result, dict) and isinstance(result.get("phases"), dict) and bool(result["phases"]) and all(
        isinstance(result.get(s), dict) and "accuracy" in result[s] for s in EVAL_SETS)


def discard_new_run(out: Path) -> None:
    """Remove what a new run wrote before it was refused (everything but the lock: `prepare_run_dir` left
    nothing else), so the retry after fixing the input starts clean."""
    _remove([c for c in out.iterdir() if c != RunLayout(out).lock])


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
        for number, line in json_lines(kept.decode("utf-8", errors="replace")):
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
