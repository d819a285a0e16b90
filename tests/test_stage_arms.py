"""Stage arms that share one BIO phase (issue 25): the QA-phase settings, the kept phase boundary
(`RUN/bio_phase/`), forks from it (`train --start-from`) and the QA phase's early stop.

The central check: a Stage run with QA-phase settings B forked from the kept BIO phase of a run with
settings A writes what B trained from scratch writes, byte for byte (metrics.jsonl row for row without
the wall-clock `seconds`), also when the fork is killed and resumed."""

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from factrecall import cli
from factrecall.artifacts import sha256_files
from factrecall.config.presets import train_config
from factrecall.errors import UserError
from factrecall.training import loop
from factrecall.training.config import TrainConfig
from factrecall.training.schedule import build_phases

# arm B's QA phase against the preset's (arm A): every QA-phase setting apart
ARM_B = {"qa_phase_lr": 5e-3, "qa_phase_weight_decay": 0.0, "qa_epochs": 3}


def _stage(**overrides) -> TrainConfig:
    """The smoke preset's Stage settings with `overrides` (any TrainConfig field, the strategy too)."""
    return train_config("smoke", **{"strategy": "stage", **overrides})


@pytest.fixture(scope="module")
def donor(small_data, tmp_path_factory):
    """Arm A: the smoke preset's Stage run, checkpointing every 3 steps (B checkpoints every 4)."""
    out = tmp_path_factory.mktemp("arm_a") / "run"
    loop.train(_stage(checkpoint_every=3), small_data, out)
    return out


@pytest.fixture(scope="module")
def scratch(small_data, tmp_path_factory):
    """Arm B trained from scratch."""
    out = tmp_path_factory.mktemp("arm_b") / "run"
    loop.train(_stage(**ARM_B), small_data, out)
    return out


@pytest.fixture(scope="module")
def forked(donor, small_data, tmp_path_factory):
    """Arm B forked from A's bio_phase/ on the command line."""
    out = tmp_path_factory.mktemp("arm_b_forked") / "run"
    argv = ["train", "--data", small_data, "--out", out, "--strategy", "stage", "--preset", "smoke",
            "--qa-phase-lr", ARM_B["qa_phase_lr"], "--qa-phase-weight-decay", ARM_B["qa_phase_weight_decay"],
            "--qa-epochs", ARM_B["qa_epochs"], "--start-from", donor / "bio_phase"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["factrecall", *map(str, argv)])
        with pytest.raises(SystemExit) as done:
            cli.main()
    assert not done.value.code
    return out


def _rows(path: Path) -> list[dict]:
    """A metrics log without each step's wall-clock `seconds`."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _files(run: Path) -> list[str]:
    """What training wrote, but the kept BIO phase and config.json (which a fork records its start in)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.is_file() and p.parts[len(run.parts)] not in ("bio_phase", "config.json", ".lock"))


def _same_run(a: Path, b: Path) -> None:
    """The same files byte for byte (θ_pre, θ_ft, trace, eval.json), and metrics.jsonl row for row."""
    assert _files(a) == _files(b)
    assert {"trace.safetensors", "model/model.safetensors", "base/model.safetensors", "eval.json"} <= set(_files(a))
    for name in _files(a):
        if name != "metrics.jsonl":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _rows(a / "metrics.jsonl") == _rows(b / "metrics.jsonl")


def _digest(root: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()


def test_a_fork_writes_what_the_same_arm_from_scratch_writes(donor, scratch, forked):
    _same_run(scratch, forked)
    assert set(json.loads((forked / "eval.json").read_text())["phases"]) == {"bio", "qa"}
    assert (scratch / "model/model.safetensors").read_bytes() != (donor / "model/model.safetensors").read_bytes()
    # config.json: the scratch run's record plus where the fork started
    record, scratch_record = (json.loads((run / "config.json").read_text()) for run in (forked, scratch))
    start = record.pop("start_from")
    assert record == scratch_record
    assert start["run"] == str(donor.resolve())
    kept = scratch / "bio_phase"  # B's own kept BIO phase is A's, byte for byte: so is its digest
    assert start["bio_phase_sha256"] == sha256_files([kept / "checkpoint/state.json", kept / "metrics.jsonl"])
    assert not (forked / "bio_phase").exists() and not (forked / "checkpoint").exists()


def test_the_bio_phase_is_the_same_whatever_the_qa_phase_settings(donor, scratch):
    """The schedule (BIO batches are drawn before QA batches), and what training kept at the boundary."""
    a, b = _stage(), _stage(**ARM_B, qa_stop_at=0.5, eval_every=2)
    assert build_phases(a, 80, 120)[0] == build_phases(b, 80, 120)[0]
    assert build_phases(a, 80, 120)[1] != build_phases(b, 80, 120)[1]
    mix = {k: v for k, v in ARM_B.items() if k != "qa_epochs"}  # Mix has one phase: QA-phase settings do nothing
    assert build_phases(_stage(strategy="mix"), 80, 120) == build_phases(_stage(strategy="mix", **mix), 80, 120)

    kept = donor / "bio_phase"
    assert _digest(kept) == _digest(scratch / "bio_phase")  # every file, byte for byte
    assert load_file(str(kept / "checkpoint/optimizer.safetensors")) == {}  # a fresh AdamW follows
    position = json.loads((kept / "checkpoint/state.json").read_text())["position"]
    assert position["phase"] == 1 and position["step"] == 0 and set(position["phase_evals"]) == {"bio"}
    log = kept / "metrics.jsonl"
    assert log.stat().st_size == position["metrics_bytes"] and "seconds" not in log.read_text()
    assert _rows(donor / "metrics.jsonl")[:len(_rows(log))] == _rows(log)
    assert {r["phase"] for r in _rows(log)} == {"bio"} and _rows(log)[-1].get("phase_end")


@pytest.mark.parametrize("kill_after", [1, 6])  # QA steps logged: before the fork's first checkpoint, after it
def test_an_interrupted_fork_resumes(donor, scratch, small_data, tmp_path, stop_after_qa_step, kill_after):
    out = tmp_path / "run"
    stop_after_qa_step(kill_after)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_stage(**ARM_B), small_data, out, start_from=donor)
    assert (out / "checkpoint").is_dir() == (kill_after > 4) and not (out / "eval.json").exists()
    stop_after_qa_step(None)
    loop.train(_stage(**ARM_B), small_data, out, resume=True, start_from=donor)
    _same_run(scratch, out)


@pytest.fixture(scope="module")
def mix_run(train_smoke):
    return train_smoke("mix_donor")


def _edited_copy(run: Path, to: Path, edit) -> Path:
    """A copy of `run` whose config.json `edit` changed in place."""
    shutil.copytree(run, to)
    record = json.loads((to / "config.json").read_text())
    edit(record)
    (to / "config.json").write_text(json.dumps(record))
    return to


def _other_base(run: Path, to: Path) -> Path:
    """A copy of `run` whose θ_pre has one tensor changed."""
    shutil.copytree(run, to)
    weights = load_file(str(to / "base/model.safetensors"))
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] + 1}, str(to / "base/model.safetensors"), metadata={"format": "pt"})
    return to


# (id, the run to start from (tmp, A, the Mix run, the fork) -> path, settings, message)
REFUSALS = [
    ("another-seed", lambda t, a, m, f: _edited_copy(a, t / "d", lambda r: r["train"].update(seed=1)), {},
     r"other settings \(train.seed 1, here 0\); a fork may differ only in qa_phase_lr, qa_phase_weight_decay"),
    ("another-bio-setting", lambda t, a, m, f: _edited_copy(a, t / "d", lambda r: r["train"].update(lr=1e-3)), {},
     r"train.lr 0.001, here 0.002"),
    ("another-eval-cadence", lambda t, a, m, f: a, {"eval_every": 2}, r"train.eval_every 0, here 2"),
    ("another-dataset", lambda t, a, m, f: _edited_copy(a, t / "d", lambda r: r["data"].update(content_hash="0" * 64)),
     {}, "was trained on another dataset"),
    ("a-mix-donor", lambda t, a, m, f: m, {}, "is a mix run; only a stage run keeps its BIO phase"),
    ("a-mix-fork", lambda t, a, m, f: a, {"strategy": "mix"}, "starts the QA phase of a stage run"),
    ("no-bio-phase", lambda t, a, m, f: (shutil.copytree(a, t / "d"), shutil.rmtree(t / "d" / "bio_phase"))[0], {},
     r"holds no kept BIO phase \(bio_phase/\): its BIO phase has not ended"),
    ("a-fork-as-donor", lambda t, a, m, f: shutil.copytree(f, t / "d"), {}, r"was itself started from .*arm_a"),
    ("not-a-run", lambda t, a, m, f: t, {}, "is not a run directory"),
    ("another-theta-pre", lambda t, a, m, f: _other_base(a, t / "d"), {}, r"θ_pre of this run differs"),
]


@pytest.mark.parametrize("start, settings, message", [pytest.param(*c[1:], id=c[0]) for c in REFUSALS])
def test_a_fork_from_another_bio_phase_is_refused(start, settings, message, donor, mix_run, forked, small_data,
                                                  tmp_path):
    source = start(tmp_path, donor, mix_run, forked)
    before = _digest(source)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message) as refusal:
        loop.train(_stage(**{**ARM_B, **settings}), small_data, out, start_from=source)
    assert "\n" not in str(refusal.value)
    assert _digest(source) == before
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".lock"])


def test_a_fork_resumes_only_as_it_started(donor, forked, small_data, tmp_path):
    copy = shutil.copytree(forked, tmp_path / "run")
    with pytest.raises(UserError, match=r"holds a run started from .*, not trained from scratch"):
        loop.train(_stage(**ARM_B), small_data, copy, resume=True)
    moved = shutil.copytree(donor, tmp_path / "moved")  # the same kept BIO phase at another path
    assert loop.train(_stage(**ARM_B), small_data, copy, resume=True, start_from=moved) == \
        json.loads((forked / "eval.json").read_text())
    with pytest.raises(UserError, match="is the run to start from"):
        loop.train(_stage(**ARM_B), small_data, donor, resume=True, start_from=donor)


@pytest.mark.parametrize("settings, message", [
    ({"qa_phase_weight_decay": -0.5}, r"train.qa_phase_weight_decay must be -1 \(= weight_decay\) or a number ≥ 0"),
    ({"qa_phase_weight_decay": float("nan")}, "train.qa_phase_weight_decay must"),
    ({"qa_phase_weight_decay": True}, "train.qa_phase_weight_decay must"),
    ({"qa_stop_at": 1.5, "eval_every": 2}, r"train.qa_stop_at must lie in \[0, 1\]"),
    ({"qa_stop_at": -0.1, "eval_every": 2}, r"train.qa_stop_at must lie in \[0, 1\]"),
    ({"qa_stop_at": 0.9}, r"train.qa_stop_at must be 0 without periodic evaluations \(got 0.9\); set train.eval_every"),
])
def test_qa_phase_settings_are_validated(settings, message):
    with pytest.raises(UserError, match=message):
        replace(_stage(), **settings).validate()  # past the TOML loader's type check


def test_qa_phase_settings_read_from_toml_and_reach_the_qa_phase_only(tmp_path):
    from factrecall.config.study import study_config

    path = tmp_path / "arm.toml"
    path.write_text('preset = "smoke"\n[train]\nqa_phase_weight_decay = 0\nqa_stop_at = 0.5\neval_every = 2\n')
    cfg = replace(study_config(None, path).train, strategy="stage")  # a study trains both strategies with [train]
    cfg.validate()
    bio, qa = build_phases(cfg, 80, 120)
    assert (bio.weight_decay, bio.stop_at, qa.weight_decay, qa.stop_at) == (0.1, 0.0, 0.0, 0.5)
    assert build_phases(_stage(), 80, 120)[1].weight_decay == 0.1  # -1: the BIO phase's


@pytest.fixture(scope="module")
def evaluated(small_data, tmp_path_factory):
    """A Stage run evaluated every 4 steps whose QA phase reaches a positive ID-QA accuracy before its end."""
    out = tmp_path_factory.mktemp("evaluated") / "run"
    loop.train(_stage(eval_every=4, qa_epochs=8, qa_phase_lr=5e-3), small_data, out)
    return out


def test_the_qa_phase_stops_at_the_first_evaluation_reaching_qa_stop_at(evaluated, small_data, tmp_path):
    rows = _rows(evaluated / "metrics.jsonl")
    periodic = [i for i, r in enumerate(rows) if r["event"] == "eval" and r["phase"] == "qa" and "phase_end" not in r]
    first = next(i for i in periodic if rows[i]["qa_id"]["accuracy"] > 0)
    assert first != periodic[-1], "the reference reaches no positive ID-QA accuracy before its last evaluation"
    stop_at = rows[first]["qa_id"]["accuracy"]
    out = tmp_path / "run"
    loop.train(_stage(eval_every=4, qa_epochs=8, qa_phase_lr=5e-3, qa_stop_at=stop_at), small_data, out,
               start_from=evaluated)

    stopped = _rows(out / "metrics.jsonl")
    assert stopped[:first + 1] == rows[:first + 1]  # the same run up to the evaluation that reached it
    planned = sum(r["event"] == "step" and r["phase"] == "qa" for r in rows)
    ran = sum(r["event"] == "step" and r["phase"] == "qa" for r in stopped)
    assert stopped[first + 1] == {"event": "early_stop", "phase": "qa", "global_step": rows[first]["global_step"],
                                  "steps_run": ran, "steps_planned": planned, "qa_stop_at": stop_at}
    assert ran < planned and stopped[-1]["event"] == "eval" and stopped[-1]["phase_end"] and len(stopped) == first + 3
    with safe_open(str(out / "trace.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["steps"]) == {"bio": 10, "qa": ran}
    assert set(json.loads((out / "eval.json").read_text())["phases"]) == {"bio", "qa"}
