"""Named settings for data, training and analysis (`PRESETS`), and the one way settings are overridden:
each value checked against its field's type (`apply_overrides`; an [analysis] table nested or flat, `apply_analysis`).

`default` was chosen by measurement on 2 CPU cores (docs/results.md, the frontier): the
smallest setting where Mix answers OOD questions and Stage with [train]'s recipe does not, both
strategies in minutes; its Stage is the best of three QA-phase learning rates (`[stage_arms]`). `small`
trains the same people with the same recipe on a 4-layer, 8-head model (32 heads, enough to ask the head
claims), its analyses on fewer people to keep them in minutes. `smoke` only exercises the code paths (tests,
CI); its accuracies mean nothing. `paper-llama` and `paper-pythia` are GPU settings for the paper's models
(they name hub ids; point `train.model` at a local copy): validated here, runnable only where the weights are.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import fields, replace

from factrecall.analysis.config import ANALYSIS_NAMES, FLAT_KEYS, AnalysisConfig, dotted
from factrecall.data.generate import DataConfig
from factrecall.errors import UserError
from factrecall.training.config import TrainConfig

_PAPER_DATA = {"people": 10000, "bios_per_person": 5, "permute": True, "templates_per_attribute": 0}
_PAPER_TRAIN = {"bio_epochs": 10, "qa_epochs": 10, "bio_batch_size": 16, "qa_batch_size": 32, "lr": 2e-5,
                "qa_phase_lr": 2e-5, "eval_every": 500, "checkpoint_every": 500}

_CPU_DATA = {"people": 500, "bios_per_person": 4, "permute": True, "templates_per_attribute": 4}
_CPU_TRAIN = {"bio_epochs": 20, "qa_epochs": 20, "lr": 2e-3, "eval_every": 250}
_CPU_ANALYSIS = {"graft": {"sparsity": 0.4, "steps": 10, "eval_people": 100}}
# Stage's QA phase at the BIO phase's lr forgets two thirds of the biographies; lower QA-phase lrs keep them
# (measured: docs/results.md, "The default study, end to end"), so Stage is chosen over this grid, as Physics 3.1's is
_CPU_STAGE_ARMS = {"qa_phase_lr": (5e-4, 2e-4)}

PRESETS: dict[str, dict[str, dict]] = {
    "default": {"data": _CPU_DATA, "train": {"model": "tiny-llama", **_CPU_TRAIN}, "analysis": _CPU_ANALYSIS,
                "stage_arms": _CPU_STAGE_ARMS},
    # 4 layers × 8 heads: the 32 heads the head claims (C6) need; default's recipe, measured to fit it (docs/results.md)
    "small": {"data": _CPU_DATA, "train": {"model": "small-llama", **_CPU_TRAIN},
              "analysis": {**_CPU_ANALYSIS, "ablation": {"eval_people": 100},  # 4× the heads: a smaller subset
                           **{name: {"eval_people": 50} for name in ("heads", "neurons", "forgetting")}},
              "stage_arms": _CPU_STAGE_ARMS},
    "smoke": {
        "data": {"people": 40, "bios_per_person": 2, "permute": True, "templates_per_attribute": 4},
        "train": {"model": "tiny-llama", "bio_epochs": 2, "qa_epochs": 2, "bio_batch_size": 16,
                  "qa_batch_size": 16, "checkpoint_every": 4, "eval_people": 10},
        "analysis": {"ablation": {"seeds": 1, "eval_people": 10},
                     "graft": {"sparsity": 0.4, "sparsities": (0.1,), "steps": 2, "eval_people": 10},
                     "heads": {"eval_people": 10}, "neurons": {"eval_people": 10, "points": (0.0, 0.5, 1.0)},
                     "forgetting": {"eval_people": 10}, "attention": {"people": 20},
                     "consistency": {"people": 20, "probe_people": 10}},
        "base": {"people": 40, "epochs": 2},
    },
    # bf16 autocast; Llama-3.2-3B fits one 80 GB GPU with its trace only with gradient checkpointing
    # (`factrecall plan --preset paper-llama`: 85.96 GiB plain, 73.45 GiB checkpointed)
    "paper-llama": {"data": _PAPER_DATA, "train": {"model": "meta-llama/Llama-3.2-3B", **_PAPER_TRAIN,
                                                   "precision": "bf16", "gradient_checkpointing": True},
                    "analysis": {}},
    "paper-pythia": {"data": _PAPER_DATA, "train": {"model": "EleutherAI/pythia-2.8b", **_PAPER_TRAIN,
                                                    "precision": "bf16"},
                     "analysis": {}},
}


def preset_sections(name: str) -> dict[str, dict]:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def did_you_mean(word: str, known) -> str:
    """ " (did you mean 'lr'?)" when one known name is close to a mistyped `word`, else ""."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind).replace("typing.", ""))


def coerce(where: str, kind, value):
    """`value` as the field type `kind` (int, float, bool, str, str | None, tuple[T, ...]), or a UserError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list of {_type_name(args[0])} (got {value!r})")
        return tuple(coerce(f"{where}[{i}]", args[0], v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):  # `str | None`
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, kind))
    if not ok:
        raise UserError(f"{where} must be {_type_name(kind)} (got {value!r})")
    return float(value) if kind is float else value


def apply_overrides(base, overrides: dict, where: str = "setting"):
    """`base` (a config dataclass) with `overrides` applied, each checked against its field's type."""
    hints = typing.get_type_hints(type(base))
    known = {f.name for f in fields(base)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserError(f"unknown {where} {unknown[0]!r}{did_you_mean(unknown[0], known)}; "
                        f"known: {', '.join(sorted(known))}")
    return replace(base, **{k: coerce(f"{where} {k!r}", hints[k], v) for k, v in given.items()})


def apply_analysis(base: AnalysisConfig, overrides: dict, where: str = "analysis setting") -> AnalysisConfig:
    """`base` with an [analysis] table applied: nested (`ablation = {k = 5}`) or flat (`ablation_k = 5`) keys."""
    given = {k: v for k, v in dotted(overrides, where.removesuffix(" setting")).items() if v is not None}
    known = {f.name for f in fields(base) if f.name not in ANALYSIS_NAMES}
    known |= {f"{name}.{f.name}" for name in ANALYSIS_NAMES for f in fields(getattr(base, name))}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserError(f"unknown {where} {unknown[0]!r}{did_you_mean(unknown[0], known | set(FLAT_KEYS))}; "
                        f"known: {', '.join(sorted(known))}")
    nested = {}
    for name in ANALYSIS_NAMES:
        settings = getattr(base, name)
        hints = typing.get_type_hints(type(settings))
        mine = {key: v for dot, v in given.items() for owner, _, key in [dot.partition(".")] if owner == name}
        nested[name] = replace(settings, **{key: coerce(f"{where} '{name}.{key}'", hints[key], v)
                                            for key, v in mine.items()})
    return replace(apply_overrides(base, {k: v for k, v in given.items() if "." not in k}, where), **nested)


def data_config(preset: str = "default", **overrides) -> DataConfig:
    """The preset's data config with the given (non-None) overrides."""
    return apply_overrides(apply_overrides(DataConfig(), preset_sections(preset)["data"]), overrides)


def train_config(preset: str = "default", **overrides) -> TrainConfig:
    return apply_overrides(apply_overrides(TrainConfig(), preset_sections(preset)["train"]), overrides)


def analysis_config(preset: str = "default", **overrides) -> AnalysisConfig:
    """The preset's analysis settings with `overrides` (nested `ablation={"k": 5}` or flat `ablation_k=5`)."""
    return apply_analysis(apply_analysis(AnalysisConfig(), preset_sections(preset)["analysis"]), overrides)


def recorded_analysis(config: dict) -> AnalysisConfig:
    """The analysis settings a study ran with, from its study.json `config` (nested or, from an earlier
    factrecall, flat; lists read back as tuples)."""
    return apply_analysis(AnalysisConfig(), config.get("analysis", {}), "study.json analysis setting")
