"""Reliability, round three (issue 30), by family: a lock file that cannot be aimed at another file, outputs
that never replace what the command did not write, files' modes from the umask, TraceCallback's output
checked before the first step, and two leftovers (a model config of the wrong type, a damaged eval.json).

Refusals run through the real command line (`run_cli`): one line `factrecall: error: …`, exit 2, and every
entry of the folders involved unchanged byte for byte (a symlink compared as a link, never followed)."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_cli import run_cli

from factrecall.data import generate
from factrecall.data.generate import DataConfig, generate_dataset
from factrecall.errors import UserError
from factrecall.layout import LOCK, RunLayout
from factrecall.locks import PACKAGE, directory_lock

SMOKE = ["--preset", "smoke", "--strategy", "mix", "--max-steps", "1", "--checkpoint-every", "0"]
VICTIM = "precious, not a pid\n"


def _state(root: Path) -> dict[str, str]:
    """Every entry under `root`: a link by its target, a FIFO and a folder by their kind, a file by its bytes."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            kind = path.lstat().st_mode
            state[str(path.relative_to(root))] = (
                f"-> {os.readlink(path)}" if stat.S_ISLNK(kind) else "fifo" if stat.S_ISFIFO(kind) else
                "folder" if stat.S_ISDIR(kind) else hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def _refused(monkeypatch, capsys, argv: list, message: str, *folders: Path) -> str:
    """Run `factrecall argv`: one error line matching `message`, exit 2, and each of `folders` unchanged."""
    before = [_state(f) for f in folders]
    code, _, err = run_cli(monkeypatch, capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.lstrip().startswith(("Loading", "\r"))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("factrecall: error: "), err
    assert "Traceback" not in err and re.search(message, lines[0]), lines[0]
    assert [_state(f) for f in folders] == before
    return lines[0]


@contextlib.contextmanager
def _held(directory: Path):
    """Another process holding `directory`'s lock as the writer 'test'; yields the process."""
    code = ("import sys, time; from factrecall.locks import directory_lock\n"
            "with directory_lock(sys.argv[1], 'test'):\n    print('held', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A work folder holding `victim.txt`, a file of the user's that no command may write."""
    from factrecall.study import runner

    def started(*_, **__):
        raise AssertionError("the study started work instead of refusing")

    monkeypatch.setattr(runner, "generate_dataset", started)
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "victim.txt").write_text(VICTIM)
    return folder


def _copy_run(run: Path, work: Path) -> Path:
    shutil.copytree(run, work / "run")
    return work / "run"


# ---- hostile lock files: every lock taker refuses a .lock that is not a regular file, and writes nothing


def _aim(folder: Path, kind: str) -> None:
    """Make `folder/.lock` a `kind`: a symlink to the victim, a dangling symlink, a FIFO or a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    victim = next(p for p in folder.parents if (p / "victim.txt").is_file()) / "victim.txt"
    if kind == "symlink":
        lock.symlink_to(os.path.relpath(victim, folder))
    elif kind == "dangling symlink":
        lock.symlink_to(os.path.relpath(victim.with_name("nowhere.txt"), folder))
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()


def _study(work: Path) -> Path:
    (work / "s").mkdir()
    (work / "s" / "study.json").write_text(json.dumps({"config": {"preset": "smoke"}}))
    return work / "s"


# each lock taker: (folder whose lock it takes, argv), given the work folder, the dataset and the smoke run
TAKERS = {
    "data generate": lambda w, d, r: (w / "d", ["data", "generate", "--out", w / "d", "--people", 4]),
    "train": lambda w, d, r: (w / "o", ["train", "--data", d, "--out", w / "o", *SMOKE]),
    "base build": lambda w, d, r: (w / "b", ["base", "build", "--kind", "language", "--out", w / "b", "--preset",
                                             "smoke", "--people", 4, "--epochs", 1]),
    "shared": lambda w, d, r: ((run := _copy_run(r, w)), ["shared", "--run", run]),
    "inspect": lambda w, d, r: ((run := _copy_run(r, w)), ["inspect", "--run", run]),
    "inspect --out": lambda w, d, r: (w / "figs", ["inspect", "--run", _copy_run(r, w), "--out", w / "figs"]),
    "study": lambda w, d, r: (w / "s", ["study", "--out", w / "s", "--preset", "smoke"]),
    "report": lambda w, d, r: ((study := _study(w)), ["report", "--study", study]),
}
KINDS = ["symlink", "dangling symlink", "fifo", "folder"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("taker", TAKERS)
def test_every_lock_taker_refuses_a_hostile_lock_file(taker, kind, work, small_data, smoke_run, monkeypatch, capsys):
    folder, argv = TAKERS[taker](work, small_data, smoke_run)
    _aim(folder, kind)
    _refused(monkeypatch, capsys, argv, rf"{re.escape(str(folder / LOCK))} is not a lock file .*delete it", work)
    assert (work / "victim.txt").read_text() == VICTIM and not (work / "nowhere.txt").exists()


@pytest.mark.parametrize("kind", ["stale", "hard link"])
def test_a_regular_lock_file_not_ours_is_replaced_never_written(kind, tmp_path):
    """A stale lock file, or one hard-linked to another file, is held, removed and replaced by a file of our own:
    the other file keeps its bytes."""
    victim, folder = tmp_path / "victim.txt", tmp_path / "d"
    victim.write_text(VICTIM)
    folder.mkdir()
    (folder / LOCK).write_text("999999\ndata generation") if kind == "stale" else os.link(victim, folder / LOCK)
    with directory_lock(folder, "test") as lock:
        assert lock.read_text() == f"{os.getpid()}\ntest" and not lock.samefile(victim)
    assert list(folder.iterdir()) == [] and victim.read_text() == VICTIM


def test_a_lock_file_is_removed_only_while_it_is_the_one_held(tmp_path):
    """A refused writer leaves the holder's file as it is; a holder whose file was replaced leaves the new one."""
    folder = tmp_path / "d"
    with directory_lock(folder, "first") as lock:
        held = lock.read_bytes()
        with pytest.raises(UserError, match=f"another first is writing {folder} \\(pid {os.getpid()}\\)"), \
                directory_lock(folder, "second"):
            pass
        assert lock.read_bytes() == held
        lock.unlink()
        lock.write_text("someone else's")
    assert (folder / LOCK).read_text() == "someone else's"


def test_a_stale_lock_of_a_killed_data_generate_does_not_block_the_rerun(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d"
    with _held(out) as process:
        process.kill()  # SIGKILL: the lock file stays, held by no one
        process.wait()
    assert [p.name for p in out.iterdir()] == [LOCK]
    code, _, err = run_cli(monkeypatch, capsys, "data", "generate", "--out", out, "--people", 4)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["bio.jsonl", "meta.json", "people.jsonl", "qa.jsonl",
                                                     "vocabulary.txt"]


# ---- outputs over what the command did not write


def test_generate_dataset_replaces_only_the_same_dataset_unless_forced(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty; choose another directory or pass --force"):
        generate_dataset(DataConfig(people=4), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    first = generate_dataset(DataConfig(people=4), out, force=True)
    assert not (out / "notes.txt").exists()
    assert generate_dataset(DataConfig(people=4), out) == first  # the same config: the same files again
    before = _state(out)
    with pytest.raises(UserError, match="is not empty"):
        generate_dataset(DataConfig(people=5), out)  # another dataset is replaced only with force
    assert _state(out) == before


@pytest.mark.parametrize("target", [lambda: PACKAGE / "data" / "pools", lambda: PACKAGE,
                                    lambda: PACKAGE / "data" / "pools" / "mine", lambda: PACKAGE.parent],
                         ids=["pools", "package", "inside-pools", "contains-package"])
def test_data_generate_never_writes_into_the_package(target, monkeypatch, capsys):
    def written(*_, **__):
        raise AssertionError("data generate reached its writes")

    monkeypatch.setattr(generate, "directory_lock", written)  # the checkout is safe even if the rule broke
    out = target()
    existed = out.exists()
    _refused(monkeypatch, capsys, ["data", "generate", "--out", out, "--people", 4, "--force"],
             "(is|lies inside|contains) the factrecall package", PACKAGE / "data" / "pools")
    assert out.exists() == existed


def test_inspect_out_writes_over_no_file_it_did_not_write(smoke_run, work, monkeypatch, capsys):
    run, figs = _copy_run(smoke_run, work), work / "figs"
    figs.mkdir()
    (figs / "attention.png").write_bytes(b"my own figure")
    (figs / "inspect.json").write_text('{"mine": 1}')
    _refused(monkeypatch, capsys, ["inspect", "--run", run, "--out", figs], "holds no inspection.*--force", work)
    before = _state(run)
    code, _, err = run_cli(monkeypatch, capsys, "inspect", "--run", run, "--out", figs, "--force")
    assert code == 0, err
    assert (figs / "attention.png").read_bytes().startswith(b"\x89PNG") and _state(run) == before
    code, _, err = run_cli(monkeypatch, capsys, "inspect", "--run", run, "--out", figs)
    assert code == 0, err  # an earlier inspection is replaced without --force
    assert sorted(p.name for p in figs.iterdir()) == ["attention.png", "direct.png", "inspect.html", "inspect.json",
                                                      "logit_lens.png"]


@pytest.mark.parametrize("where", ["data", "data/figs", "run/model", "run/model/figs", "run/base", "run"])
def test_inspect_out_never_lies_in_what_it_reads(where, smoke_run, small_data, work, monkeypatch, capsys):
    run = _copy_run(smoke_run, work)
    out = small_data / where.partition("/")[2] if where.startswith("data") else work / where
    _refused(monkeypatch, capsys, ["inspect", "--run", run, "--out", out, "--force"],
             r"(is|lies inside|contains) the (dataset|model directory|base model directory)", work, small_data)


def test_inspect_out_only_reads_the_run(smoke_run, work, monkeypatch, capsys):
    """`inspect --out` takes the lock of its --out, not of the run: a run another process writes, or a read-only
    one, is read; without --out the run is written, so its lock is taken (and refused)."""
    run = _copy_run(smoke_run, work)
    with _held(run) as process:
        before = _state(run)
        code, _, err = run_cli(monkeypatch, capsys, "inspect", "--run", run, "--out", work / "figs")
        assert code == 0, err
        assert (work / "figs" / "inspect.json").is_file() and _state(run) == before
        _refused(monkeypatch, capsys, ["inspect", "--run", run], f"another test is writing {run} \\(pid {process.pid}\\)",
                 work)
    if os.geteuid() == 0:
        return  # root writes into read-only folders anyway
    for folder, _, _ in os.walk(run):
        os.chmod(folder, 0o555)
    try:
        code, _, err = run_cli(monkeypatch, capsys, "inspect", "--run", run, "--out", work / "ro-figs")
    finally:
        for folder, _, _ in os.walk(run):
            os.chmod(folder, 0o755)
    assert code == 0, err


def test_a_train_refused_for_a_long_text_leaves_nothing_and_the_retry_succeeds(small_data, work, monkeypatch,
                                                                               capsys):
    from factrecall.data.dataset import load_dataset
    from factrecall.models.tiny import build_tiny_model
    from factrecall.models.tokenizer import word_tokenizer

    tokenizer = word_tokenizer(load_dataset(small_data).vocabulary_fragments())
    model = build_tiny_model("tiny-llama", tokenizer, 0)
    model.config.max_position_embeddings = 16  # the smoke bios are longer
    model.save_pretrained(work / "short")
    tokenizer.save_pretrained(work / "short")
    for out in (work / "new", work / "empty"):
        (work / "empty").mkdir(exist_ok=True)
        _refused(monkeypatch, capsys, ["train", "--data", small_data, "--out", out, *SMOKE, "--model", work / "short"],
                 "tokens long, beyond the model's 16 positions", work)
        code, _, err = run_cli(monkeypatch, capsys, "train", "--data", small_data, "--out", out, *SMOKE)
        assert code == 0 and RunLayout(out).finished, err


# ---- files' modes: as a plain open and mkdir give under the umask


def _modes(root: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of `root` and of everything in it."""
    entries = [root, *root.rglob("*")]
    return {("folder" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in entries}


def _under_umask(umask: int, *argv) -> None:
    subprocess.run([sys.executable, "-m", "factrecall", *map(str, argv)], preexec_fn=lambda: os.umask(umask),
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)


def test_data_and_runs_are_readable_by_colleagues_under_umask_022(small_data, tmp_path):
    _under_umask(0o022, "data", "generate", "--out", tmp_path / "d", "--people", 4)
    _under_umask(0o022, "train", "--data", small_data, "--out", tmp_path / "run", *SMOKE)
    for root in (tmp_path / "d", tmp_path / "run"):
        assert _modes(root) == {("folder", 0o755), ("file", 0o644)}, root
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    _under_umask(0o027, "data", "generate", "--out", tmp_path / "d027", "--people", 4)
    assert _modes(tmp_path / "d027") == {("folder", 0o750), ("file", 0o640)}  # the umask's, not a fixed mode


# ---- TraceCallback: its output is checked before the first step


def _trainer(out: Path, tmp_path: Path):
    from test_hf_callback import _args, _micro_batches, _model
    from transformers import Trainer

    from factrecall.training.hf_callback import TraceCallback

    return Trainer(model=_model(), args=_args(tmp_path / "hf", max_steps=1), train_dataset=_micro_batches(),
                   data_collator=lambda items: items[0], callbacks=[TraceCallback(out)])


def _weights(trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_trace_callback_refuses_a_file_or_a_locked_directory_before_any_step(tmp_path):
    import torch

    file = tmp_path / "mine.txt"
    file.write_text("mine")
    trainer = _trainer(file, tmp_path)
    before = _weights(trainer)
    with pytest.raises(UserError, match=f"TraceCallback out {file} is a file"):
        trainer.train()
    assert trainer.state.global_step == 0 and file.read_text() == "mine"
    assert all(torch.equal(v, before[k]) for k, v in _weights(trainer).items())

    run = tmp_path / "run"
    with _held(run) as process:
        trainer = _trainer(run, tmp_path)
        with pytest.raises(UserError, match=f"another test is writing {run} \\(pid {process.pid}\\)"):
            trainer.train()
        assert trainer.state.global_step == 0 and [p.name for p in run.iterdir()] == [LOCK]
    shutil.rmtree(run)
    _trainer(run, tmp_path).train()  # free: trains, writes under the lock and leaves no lock file
    assert sorted(p.name for p in run.iterdir()) == ["model", "trace.safetensors"]


# ---- leftovers of round two


def test_a_model_config_with_a_field_of_the_wrong_type_is_one_line(smoke_run, small_data, work, monkeypatch, capsys):
    model = work / "model"
    shutil.copytree(smoke_run / "model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_size": "abc"}))
    _refused(monkeypatch, capsys, ["eval", "--model", model, "--data", small_data],
             r"config\.json is not loadable .*hidden_size", work)


def test_a_finished_run_with_a_damaged_eval_is_refused_on_resume(small_data, work, monkeypatch, capsys):
    run = work / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", small_data, "--out", run, *SMOKE)
    assert code == 0, err
    for damaged in ("{}", '{"phases": {}}', "[]"):
        (run / "eval.json").write_text(damaged)
        _refused(monkeypatch, capsys, ["train", "--data", small_data, "--out", run, *SMOKE, "--resume"],
                 r"eval\.json is damaged .*--force", work)
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", small_data, "--out", run, *SMOKE, "--force")
    assert code == 0 and "accuracy" in json.loads((run / "eval.json").read_text())["qa_id"], err
