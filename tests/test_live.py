"""`train --report-to`: every metrics.jsonl row reaches Accelerate's tracker as flat scalars; a missing
tracker package is refused in one line before training."""

import json
import sys

import pytest
from accelerate.tracking import GeneralTracker

from factrecall import cli
from factrecall.config.presets import train_config
from factrecall.errors import UserError
from factrecall.training import live
from factrecall.training.loop import train


class Recording(GeneralTracker):
    """A tracker that keeps what it is given (in place of TensorBoard or W&B)."""
    name, requires_logging_directory, main_process_only = "recording", False, True

    def __init__(self):
        super().__init__()
        self.config, self.rows, self.finished, self.directory = None, [], False, None

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values
        if self.directory:  # as TensorBoard's writer does: its files appear in the run at once
            self.directory.mkdir(parents=True)
            (self.directory / "events").write_text("")

    def log(self, values, step, **kwargs):
        self.rows.append((step, values))

    def finish(self):
        self.finished = True


def test_every_metrics_row_is_logged_live(small_data, tmp_path, monkeypatch):
    recording = Recording()
    monkeypatch.setattr(live, "tracker", lambda report_to: recording if report_to == "tensorboard" else None)
    out = tmp_path / "run"
    recording.directory = out / "live"
    train(train_config("smoke", strategy="stage", max_steps=3, eval_every=2, eval_people=2, checkpoint_every=0),
          small_data, out, report_to="tensorboard")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["global_step"], live.scalars(r)) for r in rows] == recording.rows
    assert {"lr", "loss/bio", "grad_norm"} <= set(recording.rows[0][1])
    assert any("qa_ood/accuracy" in values for _, values in recording.rows)  # the evaluations too
    assert recording.config["strategy"] == "stage" and recording.finished
    assert (out / "live" / "events").is_file()  # the tracker's files, started after the run directory was checked


def test_without_a_tracker_nothing_is_logged_live(small_data, tmp_path, monkeypatch):
    """(The traced-parameter dict once shadowed the `tracked` flag, so every row went to Accelerate's log.)"""
    from accelerate import Accelerator

    calls = []
    monkeypatch.setattr(Accelerator, "log", lambda self, *a, **k: calls.append(a))
    train(train_config("smoke", strategy="mix", max_steps=2, eval_people=2, checkpoint_every=0), small_data,
          tmp_path / "run")
    assert calls == [] and (tmp_path / "run" / "eval.json").is_file()


def test_scalars_flatten_finite_numbers_only():
    row = {"event": "step", "global_step": 3, "lr": 0.1, "loss": {"bio": 1.5, "qa": float("nan")},
           "grad_norm": None, "phase_end": True, "qa_id": {"accuracy": 0.5, "per_attribute": {"major": 1}}}
    assert live.scalars(row) == {"lr": 0.1, "loss/bio": 1.5, "qa_id/accuracy": 0.5,
                                 "qa_id/per_attribute/major": 1.0}


@pytest.mark.parametrize("report_to, message", [("tensorboard", "needs the tensorboard package"),
                                                ("wandb", "needs the wandb package"),
                                                ("mlflow", "is not one of none, tensorboard, wandb")])
def test_a_missing_or_unknown_tracker_is_one_line(report_to, message, small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(live.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=message):
        live.tracker(report_to)
    monkeypatch.setattr(sys, "argv", ["factrecall", "train", "--data", str(small_data), "--out", str(tmp_path / "r"),
                                      "--strategy", "mix", "--preset", "smoke", "--report-to", report_to])
    cli._DEBUG["on"] = False
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0 and message in err
    assert not (tmp_path / "r").exists()
