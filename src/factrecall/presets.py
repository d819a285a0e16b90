"""Named settings for data and training. `default` is what every command uses without options.

`default` was chosen by measurement on 2 CPU cores (see the README's frontier table): the
smallest setting where Mix answers OOD questions and Stage does not, both strategies in
minutes. `smoke` only exercises the code paths (tests, CI); its accuracies mean nothing.
"""

from __future__ import annotations

from dataclasses import fields, replace

from factrecall.analysis.config import AnalysisConfig
from factrecall.data.generate import DataConfig
from factrecall.errors import UserError
from factrecall.training.config import TrainConfig

PRESETS: dict[str, dict[str, dict]] = {
    "default": {
        "data": {"people": 500, "bios_per_person": 4, "permute": True, "templates_per_attribute": 4},
        "train": {"model": "tiny-llama", "bio_epochs": 20, "qa_epochs": 20, "lr": 2e-3, "eval_every": 250},
        "analysis": {},
    },
    "smoke": {
        "data": {"people": 40, "bios_per_person": 2, "permute": True, "templates_per_attribute": 4},
        "train": {"model": "tiny-llama", "bio_epochs": 2, "qa_epochs": 2, "bio_batch_size": 16,
                  "qa_batch_size": 16, "checkpoint_every": 4, "eval_people": 10},
        "analysis": {"ablation_seeds": 1, "ablation_eval_people": 10},
    },
}


def _preset(name: str) -> dict[str, dict]:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _apply(base, overrides: dict):
    known = {f.name for f in fields(base)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - known
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return replace(base, **given)


def data_config(preset: str = "default", **overrides) -> DataConfig:
    """The preset's data config with the given (non-None) overrides."""
    return _apply(_apply(DataConfig(), _preset(preset)["data"]), overrides)


def train_config(preset: str = "default", **overrides) -> TrainConfig:
    return _apply(_apply(TrainConfig(), _preset(preset)["train"]), overrides)


def analysis_config(preset: str = "default", **overrides) -> AnalysisConfig:
    return _apply(_apply(AnalysisConfig(), _preset(preset)["analysis"]), overrides)
