"""Bad input across every command: a one-line error naming the problem, exit code 2, no traceback,
and the files involved unchanged (issue: reliability).

Each case prepares what it needs in its own folder (copies of a tiny trained run and its dataset),
then runs the real command line. The whole folder is hashed before and after the command.
"""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from factrecall import cli


@pytest.fixture(scope="module")
def trained(smoke_run):
    """A tiny Mix run with its trace and shared parameters (cases copy it before changing it)."""
    return smoke_run


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _jsonl_edit(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))


def _trace_edit(run: Path, edit) -> None:
    trace = load_file(str(run / "trace.safetensors"))
    save_file(edit(trace), str(run / "trace.safetensors"))


def _with_run(tmp: Path, run: Path) -> Path:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return copy


# Each case: (id, prepare(tmp, data, run) -> argv, message regex)
CASES = [
    ("people-too-few", lambda t, d, r: ["data", "generate", "--out", t / "o", "--people", 1], "at least 2"),
    ("out-is-a-file", lambda t, d, r: (t.joinpath("f").write_text("x"), ["data", "generate", "--out", t / "f"])[1],
     "is a file"),
    ("qa-fraction-out-of-range", lambda t, d, r: ["data", "generate", "--out", t / "o", "--qa-train-fraction", 1.5],
     r"must lie in \(0, 1\]"),
    ("unknown-data-preset", lambda t, d, r: ["data", "generate", "--out", t / "o", "--preset", "huge"],
     "unknown preset 'huge'; choose one of"),
    ("missing-data-dir", lambda t, d, r: ["train", "--data", t / "none", "--out", t / "o", "--strategy", "mix"],
     "does not exist"),
    ("truncated-jsonl", lambda t, d, r: (
        (p := _copy_data(d, t / "d") / "qa.jsonl").write_text(p.read_text()[:-40]),
        ["train", "--data", t / "d", "--out", t / "o", "--strategy", "mix"])[1], r"qa.jsonl:\d+: malformed JSON line"),
    ("empty-dataset", lambda t, d, r: ((_copy_data(d, t / "d") / "people.jsonl").write_text(""),
                                       ["train", "--data", t / "d", "--out", t / "o", "--strategy", "mix"])[1],
     "holds no people"),
    ("missing-key", lambda t, d, r: (_jsonl_edit(_copy_data(d, t / "d") / "bio.jsonl",
                                                 lambda rows: [{k: v for k, v in rows[0].items() if k != "text"}]),
                                     ["train", "--data", t / "d", "--out", t / "o", "--strategy", "mix"])[1],
     "missing key"),
    ("person-in-both-splits", lambda t, d, r: (
        _jsonl_edit(_copy_data(d, t / "d") / "qa.jsonl", lambda rows: [{**rows[0], "split": "ood"
                    if rows[0]["split"] == "id" else "id"}, *rows[1:]]),
        ["train", "--data", t / "d", "--out", t / "o", "--strategy", "mix"])[1], "belongs to one split"),
    ("wrong-type-in-people", lambda t, d, r: (
        _jsonl_edit(_copy_data(d, t / "d") / "people.jsonl", lambda rows: [{**rows[0], "person_id": "seven"},
                                                                          *rows[1:]]),
        ["train", "--data", t / "d", "--out", t / "o", "--strategy", "mix"])[1], "person_id must be"),
    ("unknown-strategy", lambda t, d, r: ["train", "--data", d, "--out", t / "o", "--strategy", "both"],
     "unknown strategy 'both'"),
    ("negative-lr", lambda t, d, r: ["train", "--data", d, "--out", t / "o", "--strategy", "mix", "--lr", -1],
     "lr must be positive"),
    ("model-dir-without-weights", lambda t, d, r: (
        shutil.copytree(r / "model", t / "m"), (t / "m" / "model.safetensors").unlink(),
        ["train", "--data", d, "--out", t / "o", "--strategy", "mix", "--model", t / "m"])[-1], "safetensors"),
    ("model-weights-truncated", lambda t, d, r: (
        shutil.copytree(r / "model", t / "m"),
        (t / "m" / "model.safetensors").write_bytes((r / "model" / "model.safetensors").read_bytes()[:1000]),
        ["eval", "--model", t / "m", "--data", d, "--out", t / "e.json"])[-1], "not a readable safetensors|damaged"),
    ("train-out-holds-other-run", lambda t, d, r: ["train", "--data", d, "--out", _with_run(t, r), "--strategy",
                                                   "stage", "--preset", "smoke"], "already holds a run"),
    ("resume-finished-run-with-other-config", lambda t, d, r: [
        "train", "--data", d, "--out", _with_run(t, r), "--strategy", "mix", "--preset", "smoke", "--lr", 1,
        "--resume"], "different config or dataset"),
    ("qa-stop-at-without-evaluations", lambda t, d, r: [
        "train", "--data", d, "--out", t / "o", "--strategy", "stage", "--preset", "smoke", "--qa-stop-at", 0.9],
     "qa_stop_at must be 0 without periodic evaluations"),
    ("qa-phase-weight-decay-negative", lambda t, d, r: [
        "train", "--data", d, "--out", t / "o", "--strategy", "stage", "--preset", "smoke",
        "--qa-phase-weight-decay", -0.5], r"qa_phase_weight_decay must be -1 \(= weight_decay\) or a number ≥ 0"),
    ("start-from-a-mix-run", lambda t, d, r: [
        "train", "--data", d, "--out", t / "o", "--strategy", "stage", "--preset", "smoke", "--start-from",
        _with_run(t, r)], "is a mix run; only a stage run keeps its BIO phase"),
    ("start-from-no-run", lambda t, d, r: [
        "train", "--data", d, "--out", t / "o", "--strategy", "stage", "--preset", "smoke", "--start-from", t],
     "is not a run directory"),
    ("run-without-trace", lambda t, d, r: ((c := _with_run(t, r)) / "trace.safetensors").unlink() or
     ["shared", "--run", c], "no trace.safetensors"),
    ("trace-of-another-model", lambda t, d, r: (_trace_edit(c := _with_run(t, r), lambda tr: {
        k: (torch.zeros(3, 3) if i == 0 else v) for i, (k, v) in enumerate(tr.items())}), ["shared", "--run", c])[1],
     "belongs to another model"),
    ("trace-with-nan", lambda t, d, r: (_trace_edit(c := _with_run(t, r), lambda tr: {
        k: v.index_fill(0, torch.tensor([0]), float("nan")) for k, v in tr.items()}), ["shared", "--run", c])[1],
     "NaN or Inf"),
    ("k-out-of-range", lambda t, d, r: ["shared", "--run", _with_run(t, r), "--k", 150], "k"),
    ("ablate-zero-seeds", lambda t, d, r: ["ablate", "--run", _with_run(t, r), "--seeds", 0], "at least 1"),
    ("run-without-base", lambda t, d, r: (shutil.rmtree((c := _with_run(t, r)) / "base"),
                                          ["ablate", "--run", c])[1], "no base/"),
    ("run-without-model", lambda t, d, r: (shutil.rmtree((c := _with_run(t, r)) / "model"),
                                           ["graft", "--run", c])[1], "no trained model"),
    ("graft-sparsity-zero", lambda t, d, r: ["graft", "--run", _with_run(t, r), "--sparsity", 0],
     "strictly between 0 and 1"),
    ("graft-sparsity-above-one", lambda t, d, r: ["graft", "--run", _with_run(t, r), "--sparsity", 1.5],
     "strictly between 0 and 1"),
    ("unknown-head-metric", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--metrics", "shared_size,size"],
     "unknown metric 'size'; choose from shared_size"),
    ("heads-on-unknown-start", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--on", "pretrained"],
     r"--on must be one of finetuned, grafted \(got 'pretrained'\)"),
    ("heads-on-grafted-without-mask", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--on", "grafted"],
     "has no graft mask"),
    ("moved-dataset-of-another-population", lambda t, d, r: (
        _jsonl_edit(_copy_data(d, t / "d") / "people.jsonl", lambda rows: rows),
        (t / "d" / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()),
                                                       "content_hash": "0" * 64})),
        ["ablate", "--run", _with_run(t, r), "--data", t / "d"])[-1], "not the one .* was trained on"),
    ("inspect-unknown-person", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--person", 4000],
     "valid ids are 0–39"),
    ("inspect-layer-out-of-range", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--layer", 7, "--head", 0],
     r"head L7.H0 does not exist; layers are 0–1"),
    ("inspect-head-out-of-range", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--layer", 1, "--head", 9],
     r"head L1.H9 does not exist"),
    ("inspect-run-without-model", lambda t, d, r: (shutil.rmtree((c := _with_run(t, r)) / "model"),
                                                   ["inspect", "--run", c])[1], "no trained model"),
    ("consistency-too-few-people", lambda t, d, r: ["consistency", "--run", _with_run(t, r), "--people", 1],
     "at least 2"),
    ("unknown-base-kind", lambda t, d, r: ["base", "build", "--kind", "wisdom", "--out", t / "b"],
     "unknown base kind 'wisdom'; choose one of language, skill"),
    ("study-unknown-base", lambda t, d, r: (t.joinpath("c.toml").write_text('bases = ["random", "oracle"]\n'),
                                            ["study", "--out", t / "s", "--config", t / "c.toml"])[1],
     "unknown base 'oracle'; give random, language, skill or a model directory"),
    ("forgetting-of-a-random-base", lambda t, d, r: ["forgetting", "--run", _with_run(t, r)],
     "was not built by 'factrecall base build'"),
    ("unknown-study-preset", lambda t, d, r: ["study", "--out", t / "s", "--preset", "huge"],
     "unknown preset 'huge'; choose one of default, small, smoke"),
    ("study-config-unknown-key", lambda t, d, r: (t.joinpath("c.toml").write_text("[train]\nepochz = 3\n"),
                                                  ["study", "--out", t / "s", "--config", t / "c.toml"])[1],
     "unknown .*train setting 'epochz'"),
    ("study-config-wrong-type", lambda t, d, r: (t.joinpath("c.toml").write_text("[data]\npeople = 'many'\n"),
                                                 ["study", "--out", t / "s", "--config", t / "c.toml"])[1],
     "data setting 'people' must be int"),
    ("study-out-holds-other-config", lambda t, d, r: (
        (t / "s").mkdir(), (t / "s" / "study.json").write_text(json.dumps({"config": {"preset": "default"}})),
        ["study", "--out", t / "s", "--preset", "smoke"])[-1], "different config"),
    ("study-out-not-empty", lambda t, d, r: ((t / "s").mkdir(), (t / "s" / "notes.txt").write_text("mine"),
                                             ["study", "--out", t / "s", "--preset", "smoke"])[-1],
     "not empty and holds no study"),
    ("report-without-study", lambda t, d, r: ["report", "--study", t], "holds no study"),
    ("study-config-unknown-device", lambda t, d, r: (t.joinpath("c.toml").write_text("[analysis]\ndevice = 'gpu'\n"),
                                                     ["study", "--out", t / "s", "--config", t / "c.toml"])[1],
     r"analysis\.device must be one of auto, cpu, cuda \(got 'gpu'\)"),
    ("study-unknown-device", lambda t, d, r: ["study", "--out", t / "s", "--preset", "smoke", "--device", "tpu"],
     "unknown device 'tpu'"),
    ("eval-unknown-device", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--device", "gpu"],
     "unknown device 'gpu'"),
]

# ---- issue 18, item 6: the families the first table lacked --------------------------------------------------
# Helpers for the cases below; each takes the case's work folder `t` first and returns what the case needs.

def _file(t: Path, name: str = "f", content: str | bytes = "x") -> Path:
    path = t / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def _study_config(t: Path, body: str) -> list:
    """`study` with a smoke config file holding `body` (the test stops any study that starts work)."""
    return ["study", "--out", t / "s", "--config", _file(t, "c.toml", "preset = 'smoke'\n" + body)]


def _pools(t: Path, edit) -> list:
    """`data generate` from a copy of the package's pools changed by `edit(pools_dir)`."""
    from factrecall.data.pools import default_pools_dir

    pools = t / "pools"
    shutil.copytree(default_pools_dir(), pools)
    edit(pools)
    return ["data", "generate", "--out", t / "o", "--pools", pools, "--people", 10]


def _damaged_run(t: Path, r: Path, name: str, content: str | bytes) -> Path:
    """A copy of the run with the file `name` replaced by `content`."""
    run = _with_run(t, r)
    _file(run, name, content)
    return run


def _truncated(path: Path, keep: int = 200) -> bytes:
    return path.read_bytes()[:keep]


def _mask_metadata(t: Path, r: Path, shapes: str) -> Path:
    """A copy of the run whose shared/mask.safetensors carries `shapes` as its 'shapes' metadata."""
    run = _with_run(t, r)
    path = run / "shared" / "mask.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = {**(f.metadata() or {}), "shapes": shapes}
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return run


def _fake_study(t: Path, r: Path, eval_content: str) -> list:
    """`report` on a study whose mix run's eval.json holds `eval_content` (eval.json is what a summary reads first)."""
    study = t / "s"
    _file(study, "study.json", json.dumps({"config": {"preset": "smoke", "analysis": {}}}))
    _file(study, "runs/stage/eval.json", (r / "eval.json").read_text())
    _file(study, "runs/mix/eval.json", eval_content)
    return ["report", "--study", study]


_INTERRUPTED: dict[str, Path] = {}  # filled by the `interrupted` fixture before any case runs
RESUME = ["--strategy", "mix", "--preset", "smoke", "--max-steps", 4, "--checkpoint-every", 2, "--resume"]


def _resume(t: Path, d: Path, edit) -> list:
    """`train --resume` of a copy of a run killed after its checkpoint at step 2, changed by `edit(run)`."""
    run = t / "run"
    shutil.copytree(_INTERRUPTED["run"], run)
    edit(run)
    return ["train", "--data", d, "--out", run, *RESUME]


UNDER_A_FILE = r"(?i)(is a file|not a directory|file exists)"  # the path's parent is a file
LONG = "n" * 300  # a path component longer than any filesystem allows (ENAMETOOLONG)

CASES += [
    # data loss: an output that is, contains or lies inside an input is refused before anything is written
    ("train-out-is-data-force", lambda t, d, r: ["train", "--data", _copy_data(d, t / "d"), "--out", t / "d",
                                                 "--strategy", "mix", "--preset", "smoke", "--force"],
     "is the data directory"),
    ("train-out-inside-data", lambda t, d, r: ["train", "--data", _copy_data(d, t / "d"), "--out", t / "d" / "run",
                                               "--strategy", "mix", "--preset", "smoke"], "lies inside the data"),
    ("train-out-contains-data-force", lambda t, d, r: ["train", "--data", _copy_data(d, t / "p" / "d"), "--out",
                                                       t / "p", "--strategy", "mix", "--preset", "smoke", "--force"],
     "contains the data"),
    ("train-out-is-model-dir-force", lambda t, d, r: (
        shutil.copytree(r / "model", t / "m"),
        ["train", "--data", d, "--out", t / "m", "--strategy", "mix", "--preset", "smoke", "--model", t / "m",
         "--force"])[1], "is the model directory"),
    ("eval-out-is-dataset-meta", lambda t, d, r: ["eval", "--model", r / "model", "--data", _copy_data(d, t / "d"),
                                                  "--out", t / "d" / "meta.json"], "lies inside the data directory"),
    ("eval-out-inside-model-dir", lambda t, d, r: (
        shutil.copytree(r / "model", t / "m"),
        ["eval", "--model", t / "m", "--data", d, "--out", t / "m" / "config.json"])[1],
     "lies inside the model directory"),
    ("eval-out-over-a-file-not-an-eval", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--out",
                                                          _file(t, "notes.json", '{"mine": 1}')],
     "exists and is not an evaluation"),
    ("eval-out-over-a-text-file", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--out",
                                                   _file(t, "notes.txt", "my notes")],
     "exists and is not an evaluation"),
    ("data-generate-out-is-pools", lambda t, d, r: (
        _pools(t, lambda p: None),  # copies the package's pools to t/pools
        ["data", "generate", "--out", t / "pools", "--pools", t / "pools", "--force"])[1], "is the pool directory"),
    ("data-generate-out-is-excluded", lambda t, d, r: ["data", "generate", "--out", _copy_data(d, t / "d"),
                                                       "--exclude", t / "d", "--force", "--people", 10],
     "is the excluded dataset"),
    ("base-build-out-is-excluded", lambda t, d, r: ["base", "build", "--kind", "language", "--out",
                                                    _copy_data(d, t / "d"), "--exclude", t / "d", "--force",
                                                    "--preset", "smoke", "--people", 4, "--epochs", 1],
     "is the excluded dataset"),
    ("study-out-is-a-base-model-force", lambda t, d, r: (
        shutil.copytree(r / "model", t / "m"),
        _file(t, "c.toml", f"preset = 'smoke'\nbases = [{json.dumps(str(t / 'm'))}]\n"),
        ["study", "--out", t / "m", "--config", t / "c.toml", "--force"])[-1], "is the base directory"),

    # late refusals: a study config is checked whole before the study starts any step
    ("study-config-k-zero", lambda t, d, r: _study_config(t, "[analysis]\nk = 0\n"),
     r"c\.toml: analysis\.shared\.k must lie in"),
    ("study-config-k-nan", lambda t, d, r: _study_config(t, "[analysis]\nk = nan\n"), r"c\.toml: analysis\.shared\.k .*nan"),
    ("study-config-lr-inf", lambda t, d, r: _study_config(t, "[train]\nlr = inf\n"), r"c\.toml: train\.lr .*inf"),
    ("study-config-no-ood-people", lambda t, d, r: _study_config(t, "[data]\nqa_train_fraction = 1.0\n"),
     r"c\.toml: data\.qa_train_fraction .*OOD"),
    ("study-config-empty-sweep", lambda t, d, r: _study_config(t, "[analysis]\nsweep = []\n"),
     r"c\.toml: analysis\.shared\.sweep must be a non-empty list"),
    ("study-config-negative-seed", lambda t, d, r: _study_config(t, "[train]\nseed = -1\n"),
     r"c\.toml: train\.seed .*-1"),
    ("study-config-data-seed-too-big", lambda t, d, r: _study_config(t, "[data]\nseed = 4294967296\n"),
     r"c\.toml: data\.seed"),
    ("study-config-beta-one", lambda t, d, r: _study_config(t, "[train]\nbeta2 = 1.0\n"), r"c\.toml: train\.beta2"),
    ("study-config-neuron-points", lambda t, d, r: _study_config(t, "[analysis]\nneuron_points = [0.5, 2.0]\n"),
     r"c\.toml: analysis\.neurons\.points"),
    ("study-config-years-reversed", lambda t, d, r: _study_config(t, "[data]\nfirst_year = 2050\nlast_year = 2000\n"),
     r"c\.toml: data\.first_year .*last_year"),
    ("study-config-unknown-model", lambda t, d, r: _study_config(t, "[train]\nmodel = 'no-such-model'\n"),
     r"model .no-such-model."),
    ("study-config-base-people-zero", lambda t, d, r: _study_config(
        t, "bases = ['random', 'language']\n[base]\npeople = 0\n"), r"c\.toml: base\.people"),
    ("study-config-base-epochs-negative", lambda t, d, r: _study_config(
        t, "bases = ['random', 'skill']\n[base]\nepochs = -1\n"), r"c\.toml: base\.epochs"),
    ("study-config-not-toml", lambda t, d, r: _study_config(t, "[analysis\nk = 1\n"), "is not valid TOML"),
    ("study-config-section-not-a-table", lambda t, d, r: _study_config(t, "train = 3\n"),
     r"\[train\] must be a table"),
    ("study-config-not-utf8", lambda t, d, r: ["study", "--out", t / "s", "--config",
                                              _file(t, "c.toml", b"[data]\npeople = 4\n# \xff\xfe\n")],
     "is not valid TOML"),

    # the OS's errors: an output under a file, a name too long, a folder without write permission
    ("data-generate-out-under-a-file", lambda t, d, r: ["data", "generate", "--out", _file(t) / "d"],
     UNDER_A_FILE),
    ("train-out-under-a-file", lambda t, d, r: ["train", "--data", d, "--out", _file(t) / "run", "--strategy", "mix",
                                                "--preset", "smoke"], UNDER_A_FILE),
    ("eval-out-under-a-file", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--out",
                                               _file(t) / "e.json"], UNDER_A_FILE),
    ("study-out-under-a-file", lambda t, d, r: ["study", "--out", _file(t) / "s", "--preset", "smoke"],
     UNDER_A_FILE),
    ("base-build-out-under-a-file", lambda t, d, r: ["base", "build", "--kind", "language", "--out", _file(t) / "b",
                                                     "--preset", "smoke", "--people", 4, "--epochs", 1],
     UNDER_A_FILE),
    ("inspect-out-under-a-file", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--out", _file(t) / "i"],
     UNDER_A_FILE),
    ("data-generate-out-name-too-long", lambda t, d, r: ["data", "generate", "--out", t / LONG, "--people", 10],
     r"(?i)too long"),
    ("data-generate-pools-name-too-long", lambda t, d, r: ["data", "generate", "--out", t / "o", "--pools", t / LONG],
     r"--pools must name a directory"),
    ("study-config-pools-name-too-long", lambda t, d, r: _study_config(t, f"[data]\npools = '{t / LONG}'\n"),
     r"c\.toml: data\.pools: --pools must name a directory"),
    ("data-generate-read-only-folder", lambda t, d, r: (
        (t / "ro").mkdir(), (t / "ro").chmod(0o555), ["data", "generate", "--out", t / "ro" / "d", "--people", 10])[-1],
     r"(?i)permission|cannot write",
     pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")),
    ("eval-out-in-read-only-folder", lambda t, d, r: (
        (t / "ro").mkdir(), (t / "ro").chmod(0o555),
        ["eval", "--model", r / "model", "--data", d, "--out", t / "ro" / "e.json"])[-1],
     r"(?i)permission|cannot write",
     pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")),

    # damaged run files: configs, masks and their metadata, checkpoint state, eval and metrics files
    ("run-config-not-json", lambda t, d, r: ["ablate", "--run", _damaged_run(t, r, "config.json", "{not json")],
     r"config\.json"),
    ("run-config-a-json-list", lambda t, d, r: ["ablate", "--run", _damaged_run(t, r, "config.json", "[1, 2]")],
     r"config\.json"),
    ("run-config-without-data", lambda t, d, r: ["consistency", "--run",
                                                 _damaged_run(t, r, "config.json", '{"seed": 0}')],
     r"config\.json"),
    ("model-config-not-json", lambda t, d, r: ["eval", "--model", _damaged_run(t, r, "model/config.json", "{x") /
                                               "model", "--data", d], r"config\.json"),
    ("model-config-a-json-list", lambda t, d, r: ["graft", "--run", _damaged_run(t, r, "model/config.json", "[]")],
     r"config\.json"),
    ("report-eval-truncated", lambda t, d, r: _fake_study(t, r, (r / "eval.json").read_text()[:50]),
     r"eval\.json"),
    ("report-study-record-damaged", lambda t, d, r: (_file(t / "s", "study.json", "{"), ["report", "--study",
                                                                                          t / "s"])[1],
     r"study\.json"),
    ("shared-mask-truncated", lambda t, d, r: ["inspect", "--run", _damaged_run(
        t, r, "shared/mask.safetensors", _truncated(r / "shared" / "mask.safetensors"))], r"mask\.safetensors"),
    ("shared-mask-shapes-not-json", lambda t, d, r: ["inspect", "--run", _mask_metadata(t, r, "not json")],
     r"mask\.safetensors"),
    ("shared-mask-shapes-of-another-model", lambda t, d, r: ["inspect", "--run", _mask_metadata(t, r, json.dumps(
        {n.partition("/")[2]: [3, 3] for n in load_file(str(r / "shared" / "mask.safetensors"))}))],
     r"mask\.safetensors"),
    ("shared-mask-shapes-larger-than-the-model", lambda t, d, r: ["inspect", "--run", _mask_metadata(t, r, json.dumps(
        {n.partition("/")[2]: [4096, 4096] for n in load_file(str(r / "shared" / "mask.safetensors"))}))],
     r"mask\.safetensors"),
    ("shared-mask-shapes-wrong-type", lambda t, d, r: ["inspect", "--run", _mask_metadata(t, r, '["a", "b"]')],
     r"mask\.safetensors"),
    ("graft-mask-garbage", lambda t, d, r: ["heads", "--run", _damaged_run(
        t, r, "analysis/graft_mask.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"), "--on", "grafted",
        "--no-neurons", "--metrics", "random"], r"graft_mask\.safetensors"),
    ("checkpoint-state-not-json", lambda t, d, r: _resume(t, d, lambda run: _file(run, "checkpoint/state.json", "{")),
     r"state\.json"),
    ("checkpoint-state-a-json-list", lambda t, d, r: _resume(t, d, lambda run: _file(run, "checkpoint/state.json",
                                                                                      "[]")),
     r"state\.json"),
    ("checkpoint-weights-truncated", lambda t, d, r: _resume(t, d, lambda run: _file(
        run, "checkpoint/model.safetensors", _truncated(run / "checkpoint" / "model.safetensors"))),
     r"checkpoint .*damaged"),
    ("metrics-shorter-than-checkpoint", lambda t, d, r: _resume(t, d, lambda run: _file(
        run, "metrics.jsonl", (run / "metrics.jsonl").read_bytes()[:20])), r"metrics\.jsonl .*damaged"),
    ("metrics-bad-line-before-checkpoint", lambda t, d, r: _resume(t, d, lambda run: _file(
        run, "metrics.jsonl", b"garbage" + (run / "metrics.jsonl").read_bytes()[7:])), r"metrics\.jsonl"),

    # odd custom pools
    ("pools-missing-file", lambda t, d, r: _pools(t, lambda p: (p / "cities.txt").unlink()), "lacks cities.txt"),
    ("pools-empty-names", lambda t, d, r: _pools(t, lambda p: (p / "last_names.txt").write_text("\n\n")),
     r"last_names\.txt is empty"),
    ("pools-not-utf8", lambda t, d, r: _pools(t, lambda p: (p / "majors.txt").write_bytes(b"Physics\n\xff\xfeArt\n")),
     r"majors\.txt is not UTF-8"),
    ("pools-templates-not-an-object", lambda t, d, r: _pools(t, lambda p: (p / "templates.json").write_text("[]")),
     r"templates\.json must hold a JSON object"),
    ("pools-templates-not-json", lambda t, d, r: _pools(t, lambda p: (p / "templates.json").write_text("{")),
     r"templates\.json is not valid JSON"),
    ("pools-template-without-value", lambda t, d, r: _pools(t, lambda p: (p / "templates.json").write_text(json.dumps(
        {**json.loads((p / "templates.json").read_text()), "major": ["{subject} studied."]}))),
     r"templates\.json.*\{value\}"),
    ("pools-companies-one-column", lambda t, d, r: _pools(t, lambda p: (p / "companies.tsv").write_text("Acme\n")),
     r"companies\.tsv:1: expected two tab-separated columns"),
    ("pools-unknown-gender", lambda t, d, r: _pools(t, lambda p: (p / "first_names.tsv").write_text("Ann\tX\n")),
     r"gender of 'Ann' must be F or M"),
    ("pools-too-few-names", lambda t, d, r: _pools(t, lambda p: [(p / f).write_text("Same\tF\n" if f.endswith("tsv")
                                                                                     else "Same\n")
                                                                 for f in ("first_names.tsv", "middle_names.txt",
                                                                           "last_names.txt")]),
     "too many for these name pools|full names in a row that were already taken"),
    ("pools-is-a-file", lambda t, d, r: ["data", "generate", "--out", t / "o", "--pools", _file(t)],
     r"pools must name a directory"),

    # out-of-range options
    ("heads-unknown-intervention", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--intervention", "bogus"],
     "intervention 'bogus'"),
    ("graft-negative-steps", lambda t, d, r: ["graft", "--run", _with_run(t, r), "--steps", -1], "steps"),
    ("graft-lr-zero", lambda t, d, r: ["graft", "--run", _with_run(t, r), "--lr", 0], "lr"),
    ("graft-lr-nan", lambda t, d, r: ["graft", "--run", _with_run(t, r), "--lr", "nan"], "lr"),
    ("consistency-one-probe-person", lambda t, d, r: ["consistency", "--run", _with_run(t, r), "--probe-people", 1],
     "probe.people"),
    ("consistency-on-unknown-model", lambda t, d, r: ["consistency", "--run", _with_run(t, r), "--on", "bogus"],
     "bogus"),
    ("plan-zero-gpus", lambda t, d, r: ["plan", "--preset", "smoke", "--gpus", 0], "gpus"),
    ("plan-negative-gpu-memory", lambda t, d, r: ["plan", "--preset", "smoke", "--gpu-memory", -1], "gpu.memory"),
    ("plan-nan-gpu-memory", lambda t, d, r: ["plan", "--preset", "smoke", "--gpu-memory", "nan"], "gpu.memory"),
    ("plan-zero-seq-len", lambda t, d, r: ["plan", "--preset", "smoke", "--seq-len", 0], "seq.len"),
    ("plan-unknown-precision", lambda t, d, r: ["plan", "--preset", "smoke", "--precision", "fp8"], "fp8"),
    ("inspect-negative-aggregate", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--aggregate", -5],
     "aggregate"),
    ("inspect-unknown-attribute", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--attribute", "shoe_size"],
     "shoe_size"),
    ("inspect-on-unknown-model", lambda t, d, r: ["inspect", "--run", _with_run(t, r), "--on", "bogus"], "bogus"),
    ("shared-k-nan", lambda t, d, r: ["shared", "--run", _with_run(t, r), "--k", "nan"], r"\bk\b"),
    ("shared-sweep-not-numbers", lambda t, d, r: ["shared", "--run", _with_run(t, r), "--sweep", "1,two"],
     "--sweep .1,two. must be comma-separated numbers"),
    ("shared-sweep-zero", lambda t, d, r: ["shared", "--run", _with_run(t, r), "--sweep", "0,1"], "sweep"),
    ("ablate-k-zero", lambda t, d, r: ["ablate", "--run", _with_run(t, r), "--k", 0], r"\bk\b"),
    ("ablate-negative-eval-people", lambda t, d, r: ["ablate", "--run", _with_run(t, r), "--eval-people", -1],
     "eval.people"),
    ("heads-negative-eval-people", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--eval-people", -1],
     "eval.people"),
    ("heads-k-inf", lambda t, d, r: ["heads", "--run", _with_run(t, r), "--k", "inf"], r"\bk\b"),
    ("eval-zero-batch-size", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--batch-size", 0],
     "batch.size"),
    ("train-lr-nan", lambda t, d, r: ["train", "--data", d, "--out", t / "o", "--strategy", "mix", "--lr", "nan"],
     r"lr .*nan"),
    ("train-negative-seed", lambda t, d, r: ["train", "--data", d, "--out", t / "o", "--strategy", "mix", "--seed",
                                             -1], "seed"),
    ("train-unknown-precision", lambda t, d, r: ["train", "--data", d, "--out", t / "o", "--strategy", "mix",
                                                 "--precision", "fp8"], "fp8"),
    ("data-generate-negative-seed", lambda t, d, r: ["data", "generate", "--out", t / "o", "--seed", -1], "seed"),
    ("data-generate-nan-qa-fraction", lambda t, d, r: ["data", "generate", "--out", t / "o", "--qa-train-fraction",
                                                       "nan"], "qa.train.fraction"),
    ("base-build-one-person", lambda t, d, r: ["base", "build", "--kind", "language", "--out", t / "b", "--preset",
                                               "smoke", "--people", 1], "people"),
    ("base-build-zero-epochs", lambda t, d, r: ["base", "build", "--kind", "skill", "--out", t / "b", "--preset",
                                                "smoke", "--people", 4, "--epochs", 0], "epochs"),
]

# a sweep (issue 16): refused in one line naming the axis or the point, before any point starts
CASES += [
    ("sweep-unknown-key", lambda t, d, r: _study_config(t, "seeds = [0]\n[sweep]\n'train.epochz' = [1, 2]\n"),
     r"c\.toml: \[sweep\] 'train\.epochz' is not a setting"),
    ("sweep-wrong-type", lambda t, d, r: _study_config(t, "[sweep]\n'data.people' = [30, 'many']\n"),
     r"c\.toml: point 1 \(people=many\): data setting 'people' must be int"),
    ("sweep-empty-axis", lambda t, d, r: _study_config(t, "[sweep]\n'train.lr' = []\n"),
     r"\[sweep\] 'train\.lr' must be a non-empty list"),
    ("sweep-bad-value-in-range", lambda t, d, r: _study_config(t, "seeds = [0, 1]\n[sweep]\n'train.lr' = [1e-3, -1.0]\n"),
     r"point 2 \(lr=-1\.0 seed=0\): train\.lr"),
    ("sweep-seeds-not-integers", lambda t, d, r: _study_config(t, "seeds = [0.5]\n"), r"seeds must be a non-empty list"),
    ("sweep-too-many-points", lambda t, d, r: _study_config(t, f"seeds = {list(range(600))}\n"),
     r"600 points, more than 512"),
    ("sweep-point-out-of-range", lambda t, d, r: [*_study_config(t, "seeds = [0, 1]\n"), "--point", "2"],
     r"--point 2: the sweep has 2 points \(0–1\)"),
    ("sweep-jobs-zero", lambda t, d, r: [*_study_config(t, "seeds = [0, 1]\n"), "--jobs", "0"], r"--jobs must be"),
    ("point-without-sweep", lambda t, d, r: ["study", "--out", t / "s", "--preset", "smoke", "--point", "0"],
     r"--point, --list-points and --jobs apply to a sweep"),
]


def _cuda_case(argv: list[str]):
    """argv with RUN (a copy of the trained run) and DATA filled in, asking for --device cuda."""
    def prepare(t, d, r):
        run = _with_run(t, r)
        return [a.replace("RUN", str(run)).replace("DATA", str(d)) for a in argv] + ["--device", "cuda"]
    return (f"{argv[0]}-cuda-without-gpu", prepare, "asks for a GPU but torch sees none")


if not torch.cuda.is_available():  # every command that loads a model refuses --device cuda in one line
    CASES += [_cuda_case(argv) for argv in (
        ["eval", "--model", "RUN/model", "--data", "DATA"], ["ablate", "--run", "RUN"], ["graft", "--run", "RUN"],
        ["heads", "--run", "RUN"], ["inspect", "--run", "RUN"], ["consistency", "--run", "RUN"],
        ["forgetting", "--run", "RUN"], ["train", "--data", "DATA", "--out", "RUN/new", "--strategy", "mix"],
        ["study", "--out", "RUN/study", "--preset", "smoke"])]
    CASES += [("study-config-cuda-without-gpu", lambda t, d, r: (
        t.joinpath("c.toml").write_text("preset = 'smoke'\n[analysis]\ndevice = 'cuda'\n"),
        ["study", "--out", t / "s", "--config", t / "c.toml"])[1], "asks for a GPU but torch sees none")]


@pytest.fixture(scope="module")
def interrupted(small_data, tmp_path_factory):
    """A smoke Mix run (4 steps, a checkpoint every 2) killed after its step-3 row: checkpoint/ at step 2,
    no eval.json; `train --data DATA --out RUN` + RESUME finishes it."""
    from factrecall.config.presets import train_config
    from factrecall.training import loop

    out = tmp_path_factory.mktemp("interrupted") / "run"
    real = loop.append_jsonl

    def die(path, row):
        real(path, row)
        if row.get("event") == "step" and row.get("global_step", row.get("step")) == 3:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "append_jsonl", die)
        with pytest.raises(KeyboardInterrupt):
            loop.train(train_config("smoke", strategy="mix", max_steps=4, checkpoint_every=2), small_data, out)
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "eval.json").exists()
    _INTERRUPTED["run"] = out
    return out


def _param(case: tuple) -> pytest.param:
    name, prepare, message, *marks = case
    return pytest.param(prepare, message, id=name, marks=marks)


class _StudyStartedWork(Exception):
    """Raised (a traceback, so the case fails) when `study` generates data before refusing its config."""


@pytest.mark.parametrize("prepare, message", [_param(c) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(prepare, message, trained, small_data, interrupted,
                                                          tmp_path, monkeypatch, capsys):
    from factrecall.study import runner

    def started(*_, **__):
        raise _StudyStartedWork("the study started work before refusing its config")

    monkeypatch.setattr(runner, "generate_dataset", started)  # a late refusal fails fast instead of running
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(a) for a in prepare(work, small_data, trained)]
    before = _tree(work)
    monkeypatch.setattr(sys, "argv", ["factrecall", *argv])
    cli._DEBUG["on"] = False
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        for folder in work.rglob("*"):  # what a case made read-only, writable again for the cleanup
            if folder.is_dir() and not os.access(folder, os.W_OK):
                folder.chmod(0o755)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith(("Loading", "\r"))]
    error_lines = [line for line in lines if line.startswith("factrecall: error:")]
    assert exit_info.value.code == 2, err
    assert len(error_lines) == 1 and "Traceback" not in err, err
    assert re.search(message, error_lines[0]), error_lines[0]
    after = {k: v for k, v in _tree(work).items() if not k.endswith(".lock")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".lock")}


def test_the_interrupted_run_resumes_when_nothing_is_damaged(interrupted, small_data, tmp_path, monkeypatch):
    """The control of the checkpoint and metrics cases: an undamaged copy resumes and finishes (exit 0)."""
    argv = [str(a) for a in _resume(tmp_path, small_data, lambda run: None)]
    monkeypatch.setattr(sys, "argv", ["factrecall", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert (tmp_path / "run" / "eval.json").is_file() and not (tmp_path / "run" / "checkpoint").exists()


def test_case_count():
    assert len(CASES) >= 60  # issue 18: at least 60 bad inputs (without the GPU-less cases)
    assert len([c for c in CASES if not c[0].endswith("cuda-without-gpu")]) >= 60


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    from factrecall.errors import UserError

    monkeypatch.setattr(sys, "argv", ["factrecall", "--debug", "data", "generate", "--out", tmp_path / "o",
                                      "--people", "1"])
    with pytest.raises(UserError):
        cli.main()
    cli._DEBUG["on"] = False
