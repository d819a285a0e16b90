"""Disk of a run and a study (`factrecall/plan/disk.py`): the items against the files a real smoke run writes, and
the check that refuses to start on a disk too small.

Margin: a safetensors file is its tensors' bytes plus a header (8 B and a JSON of names, dtypes, shapes
and offsets: < 8 KiB for these models), so each tensor file must be within 64 KiB of its item; the
other files of the run (configs, tokenizers, logs, evaluations) must fit the 64 MiB allowance.
"""

import sys
import types

import pytest

from factrecall import cli
from factrecall.config.presets import data_config, train_config
from factrecall.config.study import study_config
from factrecall.data.dataset import load_dataset
from factrecall.errors import UserError
from factrecall.plan import disk
from factrecall.plan.disk import (
    OTHER_FILES,
    check_disk,
    data_bytes,
    dataset_counts,
    run_disk_bytes,
    study_disk_bytes,
)
from factrecall.training import loop

HEADER = 64 * 2**10  # bytes a safetensors header may add to a tensor file


def _bytes(path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file())


def test_run_items_are_the_sizes_of_a_smoke_run(small_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    checkpoints = []  # (bytes under the run while a checkpoint is written beside them, the checkpoint's bytes)
    save = loop.save_checkpoint

    def recording(path, *args):
        beside = _bytes(run)  # θ_pre, the previous checkpoint, the logs
        save(path, *args)
        checkpoints.append((beside, _bytes(path)))
    monkeypatch.setattr(loop, "save_checkpoint", recording)
    monkeypatch.setattr(sys, "argv", ["factrecall", "train", "--data", str(small_data), "--out", str(run),
                                      "--strategy", "stage", "--preset", "smoke", "--max-steps", "6"])
    try:
        cli.main()
    except SystemExit as e:  # typer exits 0 after a command
        assert not e.code, capsys.readouterr().err

    dataset = load_dataset(small_data)
    assert dataset_counts(data_config("smoke")) == (len(dataset.bios), len(dataset.qa_split("id")))
    assert data_bytes(data_config("smoke")) >= _bytes(small_data) - _bytes(small_data, "vocabulary.txt")
    planned = run_disk_bytes(train_config("smoke", strategy="stage", max_steps=6), dataset)
    assert planned["checkpoints"] == len(checkpoints) == 3  # step 4 of each phase and the phase boundary
    for item, written in (("base", _bytes(run / "base", "*.safetensors")),
                          ("model", _bytes(run / "model", "*.safetensors")),
                          ("trace", (run / "trace.safetensors").stat().st_size),
                          ("bio_phase", _bytes(run / "bio_phase", "*.safetensors")),
                          ("checkpoint", max(c for _, c in checkpoints))):
        assert 0 <= written - planned[item] <= HEADER * (4 if item == "checkpoint" else 1), (item, written)
    tensors = _bytes(run, "*.safetensors")
    other = _bytes(run) - tensors
    assert other <= OTHER_FILES
    assert abs(planned["kept"] - OTHER_FILES - tensors) <= 3 * HEADER
    # the most the run held: a new checkpoint beside the old one, or the last one beside θ_ft and the trace
    held = max(max(b + c for b, c in checkpoints), _bytes(run) + checkpoints[-1][1])
    assert planned["peak"] - OTHER_FILES <= held <= planned["peak"]


def test_study_is_its_runs_bases_and_masks(tmp_path):
    config = tmp_path / "bases.toml"
    config.write_text('preset = "smoke"\nbases = ["random", "language"]\n')
    one, two = study_disk_bytes(study_config("smoke")), study_disk_bytes(study_config(None, config))
    assert one["built_bases"] == 0 < two["built_bases"]
    assert two["runs"] == 2 * one["runs"] and two["analysis_masks"] == 2 * one["analysis_masks"] > 0
    assert one["peak"] == sum(v for k, v in one.items() if k != "peak")


def _free(monkeypatch, free: int) -> list:
    asked = []
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: asked.append(path) or types.SimpleNamespace(free=free))
    return asked


def test_check_refuses_a_small_disk_in_one_line(tmp_path, monkeypatch):
    asked = _free(monkeypatch, 12 * 2**30)
    out = tmp_path / "not" / "yet" / "there"
    with pytest.raises(UserError) as error:
        check_disk(out, round(61.2 * 2**30), "this study", ignore=False)
    message = str(error.value)
    assert message == (f"this study needs 61.2 GiB on the filesystem of {out} but 12.0 GiB are free; free space, "
                       f"choose another --out, or pass --ignore-disk to start anyway")
    assert asked == [tmp_path]  # the nearest directory that exists
    check_disk(out, round(61.2 * 2**30), "this study", ignore=True)
    check_disk(out, 12 * 2**30, "this study", ignore=False)


def test_check_counts_what_a_resumed_run_already_holds(tmp_path, monkeypatch):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(bytes(6 * 2**20))
    _free(monkeypatch, 5 * 2**20)
    check_disk(tmp_path, 10 * 2**20, "this run", ignore=False)  # 4 MiB more
    with pytest.raises(UserError, match=r"this run needs 6\.0 GiB more on the filesystem"):
        check_disk(tmp_path, 6 * 2**30 + 6 * 2**20, "this run", ignore=False)


@pytest.mark.parametrize("command", ["train", "study"])
def test_train_and_study_refuse_a_small_disk_before_writing(command, small_data, tmp_path, monkeypatch, capsys):
    from test_train_cli import run_cli

    _free(monkeypatch, 2**20)  # 1 MiB: less than any run's θ_pre
    out = tmp_path / "out"
    argv = (["train", "--data", small_data, "--out", out, "--strategy", "mix", "--preset", "smoke", "--max-steps", 1]
            if command == "train" else ["study", "--out", out, "--preset", "smoke"])
    code, _, err = run_cli(monkeypatch, capsys, *argv)
    assert code == 2 and err.count("factrecall: error:") == 1 and "--ignore-disk" in err, err
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".lock"])
    if command == "train":
        code, _, err = run_cli(monkeypatch, capsys, *argv, "--ignore-disk")
        assert code == 0, err
