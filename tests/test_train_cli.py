"""End to end through the command line: generate → train → eval, resume, and bad input."""

import json
import re
import sys

import pytest
import torch
from safetensors.torch import load_file

from factrecall import cli
from factrecall.config.presets import train_config
from factrecall.training import loop

EVAL_KEYS = {"accuracy", "first_token_accuracy", "per_attribute", "n"}


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["factrecall", *map(str, args)])
    cli._DEBUG["on"] = False
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_train_eval(tmp_path, monkeypatch, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    code, out, _ = run_cli(monkeypatch, capsys, "data", "generate", "--out", data, "--preset", "smoke", "--people", 12)
    assert code == 0 and "people" in out
    code, out, err = run_cli(monkeypatch, capsys, "train", "--data", data, "--out", run, "--strategy", "stage",
                             "--preset", "smoke", "--max-steps", 3, "--model", "tiny-neox")
    assert code == 0, err
    # 3 steps memorise nothing: the run says what keeps it from the claims, and what to raise
    assert re.search(r"warning: BIO accuracy 0\.\d{3} after the BIO training is below 0\.9: .* raise --bio-epochs "
                     r"\(now 2\)", err), err
    for name in ("base/config.json", "base/model.safetensors", "model/config.json", "model/model.safetensors",
                 "config.json", "metrics.jsonl", "eval.json", "trace.safetensors"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint").exists()
    record = json.loads((run / "config.json").read_text())
    assert record["train"]["strategy"] == "stage" and record["train"]["model"] == "tiny-neox"
    assert len(record["data"]["content_hash"]) == 64 and record["versions"]["torch"].startswith("2.")
    result = json.loads((run / "eval.json").read_text())
    for key in ("qa_id", "qa_ood", "bio"):
        assert EVAL_KEYS <= set(result[key])
    assert set(result["phases"]) == {"bio", "qa"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["event"] == "step"]
    assert len(steps) == 6 and {r["phase"] for r in steps} == {"bio", "qa"}
    assert all(set(r["loss"]) == {r["phase"]} for r in steps)
    assert [r["phase"] for r in rows if r.get("phase_end")] == ["bio", "qa"]
    code, out, _ = run_cli(monkeypatch, capsys, "eval", "--model", run / "model", "--data", data,
                           "--out", tmp_path / "e.json")
    assert code == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["qa_ood"] == result["qa_ood"] and again["bio"] == result["bio"]


class Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(small_data, tmp_path, monkeypatch):
    cfg = train_config("smoke", strategy="stage", checkpoint_every=2, eval_people=2)
    loop.train(cfg, small_data, tmp_path / "whole")

    real_append, calls = loop.append_jsonl, {"n": 0}

    def append_then_die(path, row):
        real_append(path, row)
        calls["n"] += 1
        if calls["n"] == 7:  # mid-phase, after the step-6 checkpoint... and one more step
            raise Interrupt()

    monkeypatch.setattr(loop, "append_jsonl", append_then_die)
    with pytest.raises(Interrupt):
        loop.train(cfg, small_data, tmp_path / "cut")
    monkeypatch.setattr(loop, "append_jsonl", real_append)
    assert (tmp_path / "cut" / "checkpoint").is_dir()
    with pytest.raises(Exception, match="--resume"):
        loop.train(cfg, small_data, tmp_path / "cut")
    loop.train(cfg, small_data, tmp_path / "cut", resume=True)

    for name in ("model/model.safetensors", "trace.safetensors"):
        a, b = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "cut" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "whole" / "eval.json").read_text() == (tmp_path / "cut" / "eval.json").read_text()

    def steps(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["global_step"], r["loss"]) for r in rows if r["event"] == "step"]
    assert steps(tmp_path / "whole") == steps(tmp_path / "cut")


@pytest.mark.parametrize("args, message", [
    (["data", "generate", "--people", "1"], "at least 2"),
    (["data", "generate", "--qa-train-fraction", "1.5"], "must lie in (0, 1]"),
    (["data", "generate", "--preset", "nope"], "unknown preset 'nope'; choose one of default, small, smoke"),
    (["train", "--data", "{tmp}/none", "--strategy", "mix"], "does not exist"),
    (["train", "--data", "{data}", "--strategy", "both"], "unknown strategy 'both'"),
    (["train", "--data", "{data}", "--strategy", "mix", "--model", "tiny-bert"], "neither a preset"),
    (["train", "--data", "{data}", "--strategy", "mix", "--model", "{tmp}"], "no config.json"),
    (["train", "--data", "{data}", "--strategy", "mix", "--lr", "-1"], "lr must be positive"),
    (["eval", "--model", "{tmp}/none", "--data", "{data}"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, small_data, tmp_path, monkeypatch, capsys):
    args = [a.format(tmp=tmp_path, data=small_data) for a in args]
    if args[0] in ("data", "train"):
        args += ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_run_is_refused_and_kept(small_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"train": {"strategy": "mix"}}))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", small_data, "--out", out, "--strategy", "mix",
                           "--preset", "smoke")
    assert code == 2 and "already holds a run" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", small_data, "--out", out, "--strategy", "mix",
                           "--preset", "smoke", "--resume")
    assert code == 2 and "different config" in err
    assert json.loads((out / "config.json").read_text()) == {"train": {"strategy": "mix"}}
    (tmp_path / "data2").mkdir()
    (tmp_path / "data2" / "keep.txt").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "data", "generate", "--out", tmp_path / "data2")
    assert code == 2 and "not empty" in err and (tmp_path / "data2" / "keep.txt").read_text() == "x"


def test_malformed_jsonl_line_is_named(small_data, tmp_path, monkeypatch, capsys):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    with open(data / "bio.jsonl", "a") as f:
        f.write("{not json\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", tmp_path, "--data", data)
    assert code == 2 and "bio.jsonl:81: malformed JSON line" in err


def test_every_help_text_keeps_its_bracketed_words():
    """Help texts name config tables like [train]; no markup may eat them (rich markup did, in `study --help`)."""
    import click
    import typer
    from typer.testing import CliRunner

    def commands(group, path=()):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))
            else:
                yield (*path, name), command

    root = typer.main.get_command(cli.app)
    checked = 0
    for path, command in commands(root):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {w for text in texts for w in re.findall(r"\[[a-z_]+\]", text)}
        if not words:
            continue
        shown = " ".join(CliRunner().invoke(cli.app, [*path, "--help"], terminal_width=400).output.split())
        for word in words:
            assert word in shown, f"`factrecall {' '.join(path)} --help` lost {word}"
        checked += 1
    assert checked >= 1


def test_version_and_a_close_match_for_a_mistyped_key(tmp_path, capsys, monkeypatch):
    import factrecall

    monkeypatch.setattr(sys, "argv", ["factrecall", "--version"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None) and capsys.readouterr().out.strip() == f"factrecall {factrecall.__version__}"
    for text, words in (("[train]\nlrr = 1e-3\n", "unknown .*train setting 'lrr' (did you mean 'lr'?); known: "),
                        ("[trian]\nlr = 1e-3\n", "unknown section or key 'trian' (did you mean 'train'?); allowed"),
                        ("[train]\nzzz = 1\n", "unknown .*train setting 'zzz'; known: ")):
        config = tmp_path / "mistyped.toml"
        config.write_text(text)
        monkeypatch.setattr(sys, "argv", ["factrecall", "study", "--config", str(config), "--out", str(tmp_path / "s")])
        with pytest.raises(SystemExit) as done:
            cli.main()
        err = capsys.readouterr().err
        assert done.value.code == 2 and len(err.strip().splitlines()) == 1
        assert re.search(words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?"), err), err
    assert not (tmp_path / "s").exists()
