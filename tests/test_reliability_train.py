"""Reliability of the writers `train` and `data generate` (issue 18): one writer per directory (an OS
lock, released by a killed process), no output over an input (`--force` included), a bounded
sampling loop for odd pools, one-line refusals of damaged checkpoints, byte-reproducible traces."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_train_cli import run_cli

from factrecall import cli
from factrecall.artifacts import canonical_header
from factrecall.config.presets import train_config
from factrecall.data.generate import DataConfig, generate_dataset
from factrecall.data.pools import default_pools_dir, load_pools
from factrecall.errors import UserError
from factrecall.layout import LOCK, RunLayout
from factrecall.locks import directory_lock
from factrecall.training import loop
from factrecall.training.loop import train
from factrecall.training.trace import save_trace

SMOKE = {"strategy": "mix", "max_steps": 2, "checkpoint_every": 0}


def _hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a directory; yields (process, directory)."""
    processes = []

    def start(directory: Path) -> subprocess.Popen:
        code = ("import sys, time; from factrecall.locks import directory_lock\n"
                "with directory_lock(sys.argv[1], 'test'):\n    print('held', flush=True); time.sleep(600)")
        process = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


# ---- one writer per directory


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    """The refusal names the holder as it named itself ('test'), whatever the refused writer is."""
    out = tmp_path / "run"
    process = holder(out)
    with pytest.raises(UserError) as e, directory_lock(out, "training run"):
        pass
    assert str(e.value) == (f"another test is writing {out} (pid {process.pid}); "
                            f"wait for it or use another --out")
    assert (out / LOCK).read_text().splitlines()[0] == str(process.pid)  # the holder's lock file is left alone


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    with directory_lock(tmp_path / "d", "data generation") as lock:
        assert lock == tmp_path / "d" / LOCK and lock.read_text().splitlines()[0] == str(os.getpid())
        with pytest.raises(UserError, match=f"another data generation is writing .* \\(pid {os.getpid()}\\)"), \
                directory_lock(tmp_path / "d", "data generation"):
            pass
    assert not (tmp_path / "d").exists()  # created by the lock, empty on release: removed again


def test_a_killed_holder_releases_its_lock(tmp_path, holder):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    process = holder(out)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / LOCK).is_file()  # a stale lock file: no process holds it
    with directory_lock(out, "training run"):
        assert (out / LOCK).read_text().splitlines()[0] == str(os.getpid())
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # released and removed; the rest untouched


def test_train_and_generate_refuse_a_locked_directory_and_write_nothing(small_data, tmp_path, holder):
    out = tmp_path / "run"
    process = holder(out)
    with pytest.raises(UserError, match=f"another test is writing {out} \\(pid {process.pid}\\)"):
        train(train_config("smoke", **SMOKE), small_data, out)
    data = tmp_path / "data"
    process = holder(data)
    with pytest.raises(UserError, match=f"another test is writing {data} \\(pid {process.pid}\\)"):
        generate_dataset(DataConfig(people=4), data)
    assert [p.name for p in out.iterdir()] == [LOCK] and [p.name for p in data.iterdir()] == [LOCK]


def test_two_trainings_in_one_directory_one_is_refused(small_data, tmp_path):
    """A second `train` into a directory that a running one writes exits 2 naming it; one log, one writer."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "factrecall", "train", "--data", str(small_data), "--out", str(out),
            "--strategy", "mix", "--preset", "smoke", "--epochs", "100", "--checkpoint-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").is_file():  # the first is training (some minutes at 100 epochs)
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        second = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True, check=False)
        assert first.poll() is None  # still the one writer
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert second.stderr.strip() == (f"factrecall: error: another training run is writing {out} (pid {first.pid}); "
                                     f"wait for it or use another --out")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in rows if r["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1))  # one writer's log, not two interleaved


def test_the_lock_file_is_no_content(small_data, tmp_path):
    """A stale lock file does not make a directory look non-empty; a finished run holds no lock file."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999")
    train(train_config("smoke", **SMOKE), small_data, out)
    assert not (out / LOCK).exists() and RunLayout(out).finished
    data = tmp_path / "data"
    generate_dataset(DataConfig(people=4), data)
    assert sorted(p.name for p in data.iterdir()) == ["bio.jsonl", "meta.json", "people.jsonl", "qa.jsonl",
                                                      "vocabulary.txt"]


def test_force_keeps_the_lock_and_deletes_the_rest(small_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    train(train_config("smoke", **SMOKE), small_data, out, force=True)
    assert not (out / "notes.txt").exists() and not (out / "sub").exists() and RunLayout(out).finished


# ---- inputs are never outputs


@pytest.fixture
def data_copy(small_data, tmp_path):
    data = tmp_path / "parent" / "data"
    shutil.copytree(small_data, data)
    return data


@pytest.mark.parametrize("out", ["{data}", "{data}/run", "{data}/..", "{data}/../.."])
@pytest.mark.parametrize("force", [True, False])
def test_train_refuses_an_out_over_its_data(data_copy, tmp_path, monkeypatch, capsys, out, force):
    """`train --data DATA --out DATA --force` (or an --out that contains DATA, or lies inside it)."""
    out = Path(out.format(data=data_copy))
    before = _hashes(tmp_path / "parent")
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", data_copy, "--out", out, "--strategy", "mix",
                           "--preset", "smoke", *(["--force"] if force else []))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"factrecall: error: --out {out} ") and "data directory" in err and "train reads" in err
    assert _hashes(tmp_path / "parent") == before  # nothing deleted, nothing written


def test_train_refuses_an_out_over_its_model_directory(train_smoke, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(train_smoke("model_input", max_steps=1), run)
    before = _hashes(run)
    for out in (run / "model", run, run / "model" / "sub"):
        with pytest.raises(UserError, match=r"--out .* (is|contains|lies inside) the model directory"):
            train(train_config("smoke", model=str(run / "model"), **SMOKE), small_data, out, force=True)
    assert _hashes(run) == before


def test_generate_refuses_an_out_over_its_pools_or_an_excluded_dataset(small_data, tmp_path):
    pools = tmp_path / "pools"
    shutil.copytree(default_pools_dir(), pools)
    before = _hashes(pools), _hashes(small_data)
    with pytest.raises(UserError, match="is the pool directory that data generate reads"):
        generate_dataset(DataConfig(people=4, pools=str(pools)), pools)
    with pytest.raises(UserError, match="contains the excluded dataset"):
        generate_dataset(DataConfig(people=4, exclude=(str(small_data),)), small_data.parent)
    assert (_hashes(pools), _hashes(small_data)) == before


# ---- never hang: bounded sampling of odd pools


def _pools(tmp_path, **files: str) -> Path:
    pools = tmp_path / "pools"
    shutil.copytree(default_pools_dir(), pools)
    for name, text in files.items():
        (pools / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return pools


def test_names_that_run_together_end_in_a_refusal_not_a_hang(tmp_path):
    """4 × 4 × 4 name parts count as 64 full names, but "a", "a a", … run together into 10 strings."""
    parts = "\n".join(" ".join(["a"] * n) for n in range(1, 5)) + "\n"
    pools = _pools(tmp_path, first_names__tsv="".join(f"{p}\tF\n" for p in parts.splitlines()),
                   middle_names__txt=parts, last_names__txt=parts)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"drew 1000 full names in a row that were already taken after 10 of 20 people"
                                        r": the name pools .* add distinct names or ask for fewer --people"):
        generate_dataset(DataConfig(people=20, pools=str(pools)), tmp_path / "d")
    assert time.monotonic() - start < 10 and not (tmp_path / "d").exists()
    generate_dataset(DataConfig(people=8, pools=str(pools)), tmp_path / "d")  # 8 of the 10 strings: fine


def test_repeated_pool_lines_count_once_in_the_capacity(tmp_path):
    pools = _pools(tmp_path, first_names__tsv="Ann\tF\n" * 50, middle_names__txt="Lee\n" * 50,
                   last_names__txt="Smith\nJones\n" * 25)
    with pytest.raises(UserError, match=r"--people 2 is too many for these name pools \(capacity 2 full names\)"):
        generate_dataset(DataConfig(people=2, pools=str(pools)), tmp_path / "d")


@pytest.mark.parametrize("files, message", [
    ({"templates__json": "[1, 2]"}, "must hold a JSON object"),
    ({"questions__json": json.dumps({a: "What?" for a in ("birth_date", "birth_city", "university", "major",
                                                           "employer", "employer_city")})},
     "birth_date must be a list of template strings"),
    ({"templates__json": json.dumps({a: [3] for a in ("birth_date", "birth_city", "university", "major",
                                                      "employer", "employer_city")})},
     "birth_date must be a list of template strings"),
])
def test_odd_pool_files_are_one_line_refusals(tmp_path, files, message):
    with pytest.raises(UserError, match=message):
        load_pools(_pools(tmp_path, **files))


def test_a_pool_file_that_is_not_utf8_is_refused(tmp_path):
    pools = _pools(tmp_path)
    (pools / "cities.txt").write_bytes(b"Paris\n\xff\xfeLyon\n")
    with pytest.raises(UserError, match=r"cities\.txt is not UTF-8 text .*; save it as UTF-8"):
        load_pools(pools)


# ---- damaged checkpoints and logs


@pytest.fixture
def interrupted(small_data, tmp_path, monkeypatch):
    """A Mix run stopped after step 5 (checkpoint at step 4); returns (config, run directory)."""
    cfg = train_config("smoke", strategy="mix", max_steps=8, checkpoint_every=4)
    out = tmp_path / "run"
    real = loop.append_jsonl

    def stop(path, row):
        if row.get("global_step") == 6:
            raise KeyboardInterrupt
        real(path, row)

    monkeypatch.setattr(loop, "append_jsonl", stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, small_data, out)
    monkeypatch.setattr(loop, "append_jsonl", real)
    assert RunLayout(out).checkpoint.state.is_file()
    return cfg, out


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.checkpoint.state.write_text("[]"), "checkpoint state .* is damaged"),
    (lambda f: f.checkpoint.state.write_text(json.dumps({"position": {"phase": "0"}})), "is damaged"),
    (lambda f: f.checkpoint.state.write_text("{"), "is not valid JSON"),
    (lambda f: f.metrics.write_text("{}\n"), r"metrics\.jsonl holds 3 bytes but its checkpoint logged \d+; .*--force"),
    (lambda f: f.metrics.unlink(), r"metrics\.jsonl holds 0 bytes but its checkpoint logged"),
    (lambda f: f.checkpoint.tensors("optimizer").write_bytes(b"x"), "optimizer.safetensors does not match its hash"),
    (lambda f: f.config.write_text("[1]"), "is damaged \\(not a run record\\)"),
])
def test_damaged_checkpoint_files_are_one_line_refusals(interrupted, small_data, damage, message):
    cfg, out = interrupted
    damage(RunLayout(out))
    with pytest.raises(UserError, match=message) as e:
        train(cfg, small_data, out, resume=True)
    assert "\n" not in str(e.value)


def test_a_stopped_run_resumes_to_the_uninterrupted_log(interrupted, small_data, train_smoke):
    cfg, out = interrupted
    assert (out / LOCK).exists() is False  # an exception releases the lock
    train(cfg, small_data, out, resume=True)
    whole = train_smoke("whole_mix8", max_steps=8, checkpoint_every=4, eval_people=10)

    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows(out) == rows(whole)
    assert _hashes(out / "model") == _hashes(whole / "model")
    assert hashlib.sha256((out / "trace.safetensors").read_bytes()).digest() == \
        hashlib.sha256((whole / "trace.safetensors").read_bytes()).digest()


# ---- byte-reproducible safetensors


def test_save_trace_writes_the_same_bytes_whatever_the_metadata_order(tmp_path):
    tensors = {"qa/w": torch.arange(6.0).reshape(2, 3), "bio/w": torch.ones(2, 3), "bio/empty": torch.zeros(0)}
    meta = {"model": "tiny-llama", "strategy": "mix", "mode": "signed", "dataset_hash": "ab", "steps": '{"mix": 4}'}
    save_trace(tmp_path / "a.safetensors", tensors, meta)
    save_trace(tmp_path / "b.safetensors", dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = load_file(str(tmp_path / "a.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items()) and loaded.keys() == tensors.keys()
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert f.metadata() == meta
    assert oct((tmp_path / "a.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_header_of_another_length_is_rewritten_whole(tmp_path):
    """A header laid out differently (spaces, other order) becomes the canonical one, data intact."""
    path = tmp_path / "t.safetensors"
    save_file({"b": torch.ones(3), "a": torch.zeros(2)}, str(path), metadata={"y": "1", "x": "2"})
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), indent=3).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + n:])
    canonical_header(path)
    again = tmp_path / "u.safetensors"
    save_file({"a": torch.zeros(2), "b": torch.ones(3)}, str(again), metadata={"x": "2", "y": "1"})
    canonical_header(again)
    assert path.read_bytes() == again.read_bytes()
    assert torch.equal(load_file(str(path))["b"], torch.ones(3))


def test_texts_longer_than_the_models_positions_are_refused_before_training(small_data, tmp_path):
    from factrecall.data.dataset import load_dataset
    from factrecall.models.tiny import build_tiny_model
    from factrecall.models.tokenizer import word_tokenizer

    tokenizer = word_tokenizer(load_dataset(small_data).vocabulary_fragments())
    model = build_tiny_model("tiny-llama", tokenizer, 0)
    model.config.max_position_embeddings = 16  # the smoke bios are longer
    model.save_pretrained(tmp_path / "short")
    tokenizer.save_pretrained(tmp_path / "short")
    with pytest.raises(UserError, match="BIO text of .* tokens long, beyond the model's 16 positions"):
        train(train_config("smoke", model=str(tmp_path / "short"), **SMOKE), small_data, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_analysis_refuses_a_run_another_process_writes(smoke_run, tmp_path, holder, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    process = holder(run)
    monkeypatch.setattr(sys, "argv", ["factrecall", "shared", "--run", str(run)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (f"factrecall: error: another test is writing {run} "
                                               f"(pid {process.pid}); wait for it or use another --out")


def test_an_os_error_is_one_line(tmp_path, monkeypatch, capsys):
    """Whatever the OS refuses (here: a permission, raised where the dataset is written) is one line and exit 2."""
    from factrecall.data import generate

    def refuse(config, out, force=False):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(generate, "generate_dataset", refuse)
    monkeypatch.setattr(sys, "argv", ["factrecall", "data", "generate", "--out", str(tmp_path / "data")])
    cli._DEBUG["on"] = False
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"factrecall: error: Permission denied ({tmp_path / 'data'}); check the path")
