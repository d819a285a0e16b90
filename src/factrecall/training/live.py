"""Live training metrics where people look for them: TensorBoard or Weights & Biases, through
Accelerate's trackers, beside `metrics.jsonl` (which stays the record every report reads).

Off by default and never a dependency: `--report-to tensorboard` needs `tensorboard` (or
`tensorboardX`) installed, `--report-to wandb` needs `wandb` (logged in, or `WANDB_MODE=offline`);
a missing one is refused before training. TensorBoard's event files go to `RUN/live/`. Each
`metrics.jsonl` row is logged at its `global_step` as flat scalars (`loss/bio`, `lr`, `grad_norm`,
`qa_ood/accuracy`, …). A resumed run logs the steps after its checkpoint again; trackers keep both.
"""

from __future__ import annotations

import importlib.util
import math

from factrecall.errors import UserError

REPORT_TO = ("none", "tensorboard", "wandb")
PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def tracker(report_to: str) -> str | None:
    """Accelerate's `log_with` for `report_to` (None for "none"); a missing package is a UserError."""
    if report_to not in REPORT_TO:
        raise UserError(f"--report-to {report_to!r} is not one of {', '.join(REPORT_TO)}")
    if report_to == "none":
        return None
    if not any(importlib.util.find_spec(package) for package in PACKAGES[report_to]):
        raise UserError(f"--report-to {report_to} needs the {PACKAGES[report_to][0]} package; install it "
                        f"(pip install {PACKAGES[report_to][0]}) or leave --report-to off")
    return report_to


def scalars(row: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics row, flattened: {"loss/bio": 0.42, "qa_ood/accuracy": 0.3, …}."""
    out = {}
    for key, value in row.items():
        if key in ("event", "phase", "step", "global_step", "subset_people"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def hyperparameters(config: dict) -> dict[str, str | float | int | bool]:
    """A run's config as the scalar hyperparameters trackers accept (lists and None as text)."""
    return {k: v if isinstance(v, (str, float, int, bool)) else str(v) for k, v in config.items()}
