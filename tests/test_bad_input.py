"""Bad input across every command: a one-line error naming the problem, exit code 2, no traceback,
and the files involved unchanged (issue: reliability).

Each case prepares what it needs in its own folder (copies of a tiny trained run and its dataset),
then runs the real command line. The whole folder is hashed before and after the command.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
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
     "unknown --on 'pretrained'"),
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
     "unknown preset 'huge'; choose one of default, smoke"),
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
     "unknown analysis device 'gpu'"),
    ("study-unknown-device", lambda t, d, r: ["study", "--out", t / "s", "--preset", "smoke", "--device", "tpu"],
     "unknown device 'tpu'"),
    ("eval-unknown-device", lambda t, d, r: ["eval", "--model", r / "model", "--data", d, "--device", "gpu"],
     "unknown device 'gpu'"),
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


@pytest.mark.parametrize("prepare, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(prepare, message, trained, small_data, tmp_path,
                                                          monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(a) for a in prepare(work, small_data, trained)]
    before = _tree(work)
    monkeypatch.setattr(sys, "argv", ["factrecall", *argv])
    cli._DEBUG["on"] = False
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith(("Loading", "\r"))]
    error_lines = [line for line in lines if line.startswith("factrecall: error:")]
    assert exit_info.value.code == 2, err
    assert len(error_lines) == 1 and "Traceback" not in err, err
    import re
    assert re.search(message, error_lines[0]), error_lines[0]
    after = {k: v for k, v in _tree(work).items() if not k.endswith(".lock")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".lock")}


def test_case_count():
    assert len(CASES) >= 30


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    from factrecall.errors import UserError

    monkeypatch.setattr(sys, "argv", ["factrecall", "--debug", "data", "generate", "--out", tmp_path / "o",
                                      "--people", "1"])
    with pytest.raises(UserError):
        cli.main()
    cli._DEBUG["on"] = False
