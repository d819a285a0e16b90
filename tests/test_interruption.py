"""SIGKILL at several points of training and grafting, then resume: the results equal an
uninterrupted run's bitwise (deterministic CPU mode: one thread, same seeds). The study's own
kill-and-resume tests are in test_study.py. Also: a write that dies leaves the previous file."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from factrecall import artifacts
from factrecall.config.presets import train_config
from factrecall.training.loop import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # as in this test process (conftest): the same summation order


def _kill_when(argv: list[str], ready, timeout: float = 240) -> None:
    """Start `factrecall argv`, SIGKILL it as soon as `ready()` is true (it must not finish first)."""
    process = subprocess.Popen([sys.executable, "-m", "factrecall", *argv], env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"{argv[0]} ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"event":"step"') if path.is_file() else 0


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    """Equal bytes, or for safetensors equal tensors (bitwise) and metadata (its key order is not fixed)."""
    for name in names:
        if name.endswith(".safetensors"):
            ta, tb = load_file(str(a / name)), load_file(str(b / name))
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
            with safe_open(str(a / name), "pt") as fa, safe_open(str(b / name), "pt") as fb:
                assert fa.metadata() == fb.metadata(), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def whole(small_data, tmp_path_factory):
    """An uninterrupted Stage run (both phases, checkpoints every 4 steps), with the settings of
    `train --preset smoke --strategy stage`, so that every file, config.json included, can be compared."""
    out = tmp_path_factory.mktemp("whole") / "run"
    train(train_config("smoke", strategy="stage"), small_data, out)
    return out


def _metric_rows(run: Path) -> list[dict]:
    """metrics.jsonl without each step's wall-clock `seconds` (a measurement, different in every run)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _same_run(a: Path, b: Path) -> None:
    """The same files (no leftover of the killed attempt), byte for byte, and metrics.jsonl row for row."""
    def listing(run: Path) -> list[str]:  # what train writes (graft's test below adds analysis/ to `whole`)
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.parts[len(run.parts)]
                      not in ("analysis", "shared"))

    files = listing(a)
    assert files == listing(b)
    assert {"trace.safetensors", "model/model.safetensors", "base/model.safetensors", "eval.json"} <= set(files)
    for name in files:
        if name != "metrics.jsonl":
            digest = [hashlib.sha256((run / name).read_bytes()).hexdigest() for run in (a, b)]
            assert digest[0] == digest[1], name
    assert _metric_rows(a) == _metric_rows(b)


# kill points: optimizer steps already logged when the kill lands (drawn once, seeded): one before the
# first checkpoint (step 4), the others anywhere in both phases (10 BIO steps, then 16 QA steps)
POINTS = sorted([random.Random(0).randrange(1, 4), *random.Random(1).sample(range(4, 26), 2)])


@pytest.mark.parametrize("after_steps", POINTS)
def test_training_killed_then_resumed_equals_uninterrupted(whole, small_data, tmp_path, after_steps):
    out = tmp_path / "run"
    argv = ["train", "--data", str(small_data), "--out", str(out), "--strategy", "stage", "--preset", "smoke"]
    _kill_when(argv, lambda: _steps_logged(out) >= after_steps)
    assert not (out / "eval.json").exists()
    done = subprocess.run([sys.executable, "-m", "factrecall", *argv, "--resume"], env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_files(whole, out, ["model/model.safetensors", "trace.safetensors", "eval.json"])
    _same_run(whole, out)


def test_training_killed_while_writing_theta_pre_then_resumed(whole, small_data, tmp_path, monkeypatch):
    """Killed after base/ and before config.json (no run record yet): --resume starts the run over."""
    from factrecall.training import loop

    out = tmp_path / "run"
    real = loop.write_json

    def die(path, obj):
        if Path(path).name == "config.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(loop, "write_json", die)
    with pytest.raises(KeyboardInterrupt):
        train(train_config("smoke", strategy="stage"), small_data, out)
    assert sorted(p.name for p in out.iterdir()) == ["base"]  # the lock went with the process
    monkeypatch.setattr(loop, "write_json", real)
    train(train_config("smoke", strategy="stage"), small_data, out, resume=True)
    _same_run(whole, out)


def test_identical_runs_write_identical_traces(whole, small_data, tmp_path):
    """In another process (another hash-map seed): the trace is byte for byte the same file."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "factrecall", "train", "--data", str(small_data), "--out", str(out),
                           "--strategy", "stage", "--preset", "smoke"], env=ENV, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_run(whole, out)


def test_grafting_killed_then_rerun_equals_uninterrupted(whole, tmp_path):
    from factrecall.analysis.graft import graft_run

    graft_run(whole, sparsity=0.4, steps=6, eval_people=5)
    for seconds in (1.0, 3.0):  # 1 s and 3 s after the start: while loading, and in the search
        copy = tmp_path / f"run-{seconds}"
        import shutil
        shutil.copytree(whole, copy, ignore=shutil.ignore_patterns("analysis"))
        start = time.monotonic()
        _kill_when(["graft", "--run", str(copy), "--sparsity", "0.4", "--steps", "6", "--eval-people", "5"],
                   lambda: time.monotonic() - start > seconds)
        assert not (copy / "analysis" / "graft.json").exists()  # nothing half-written that looks whole
        graft_run(copy, sparsity=0.4, steps=6, eval_people=5)
        _same_files(whole / "analysis", copy / "analysis", ["graft.json", "graft_mask.safetensors"])


def test_a_write_that_dies_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    artifacts.write_json(path, {"finished": 1})

    def die(*_):
        raise KeyboardInterrupt  # as if the process were stopped between writing and renaming

    monkeypatch.setattr(artifacts.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        artifacts.write_json(path, {"finished": 2})
    assert path.read_text() == '{\n  "finished": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind
