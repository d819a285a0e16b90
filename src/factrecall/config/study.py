"""Study config files (TOML): a preset (`presets.py`), the bases to compare, and overrides of any setting of
its sections::

    preset = "default"
    bases = ["random", "language", "skill"]
    [data]
    people = 1000
    [train]
    lr = 1e-3
    [analysis.shared]
    sweep = [0.5, 1, 5]

With `seeds = [..]`, a `[sweep]` of axes or a list of `points`, the file is a sweep: every point is
such a study (`study/sweep.py`).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from factrecall.analysis.config import AnalysisConfig
from factrecall.artifacts import as_json, is_directory
from factrecall.config.presets import (
    PRESETS,
    apply_analysis,
    apply_overrides,
    coerce,
    did_you_mean,
    preset_sections,
    recorded_analysis,
)
from factrecall.data.generate import DataConfig, check_capacity
from factrecall.data.pools import load_pools
from factrecall.errors import UserError
from factrecall.training.config import QA_PHASE_SETTINGS, TrainConfig, train_record

@dataclass(frozen=True)
class BaseConfig:
    """How a study builds its `language` and `skill` bases (training settings come from [train])."""
    people: int = 500
    seed: int = 1  # of the base's population and training (the study's population uses [data] seed)
    epochs: int = 15  # passes over the base population's BIO (and, for skill, its QA)

    def validate(self) -> None:
        for key, low, high in (("people", 2, None), ("seed", 0, 2**32 - 1), ("epochs", 1, None)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                raise UserError(f"base.{key} must be an integer ≥ {low}{f' and ≤ {high}' if high else ''} "
                                f"(got {value!r})")


@dataclass(frozen=True)
class StageArmsConfig:
    """Stage's QA phase over a grid (`[stage_arms]`): each listed setting's values, the others at [train]'s.

    Every grid point but [train]'s own recipe is an arm forked from the Stage run's kept BIO phase
    (`train --start-from`); the analyses take the arm that keeps BIO best among those that fit ID-QA
    (`study/stage_arms.py`). Empty lists: one Stage recipe, [train]'s."""
    qa_phase_lr: tuple[float, ...] = ()
    qa_phase_weight_decay: tuple[float, ...] = ()
    qa_epochs: tuple[int, ...] = ()
    qa_stop_at: tuple[float, ...] = ()
    qa_phase_lora_rank: tuple[int, ...] = ()

    def validate(self) -> None:
        for key in QA_PHASE_SETTINGS:
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise UserError(f"stage_arms.{key} lists a value twice (got {list(values)})")
        if math.prod(max(1, len(getattr(self, k))) for k in QA_PHASE_SETTINGS) > MAX_STAGE_ARMS:
            raise UserError(f"stage_arms: the grid has more than {MAX_STAGE_ARMS} points; list fewer values")


MAX_STAGE_ARMS = 16
SECTIONS = {"data": DataConfig, "train": TrainConfig, "analysis": AnalysisConfig, "base": BaseConfig,
            "stage_arms": StageArmsConfig}
BASE_KINDS = ("random", "language", "skill")  # or a model directory


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study runs with; `train.strategy` is set per run by the study.

    `bases`: θ_pre of each comparison (`random`, `language`, `skill` or a model directory); the
    first is the study's own (its runs in `runs/`), the others go to `bases/<name>/`."""
    preset: str
    data: DataConfig
    train: TrainConfig
    analysis: AnalysisConfig
    base: BaseConfig
    stage_arms: StageArmsConfig = StageArmsConfig()
    bases: tuple[str, ...] = ("random",)
    data_path: str | None = None  # `[data] path`: a dataset of your own (docs/data-format.md) instead of [data]'s


SWEEP_KEYS = ("seeds", "sweep", "points")  # a config with any of them is a sweep (`study/sweep.py`)


def read_config_file(file: Path | None) -> dict:
    """A study config file's TOML table (`{}` without a file), its top-level keys checked."""
    if file is None:
        return {}
    file = Path(file)
    if not file.is_file():
        raise UserError(f"--config {file} does not exist or is not a file; give a TOML file")
    try:
        table = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--config {file} is not valid TOML ({e}); fix the file") from None
    unknown = sorted(set(table) - {"preset", "bases", *SWEEP_KEYS, *SECTIONS})
    if unknown:
        allowed = {"preset", "bases", *SWEEP_KEYS, *SECTIONS}
        raise UserError(f"{file}: unknown section or key {unknown[0]!r}{did_you_mean(unknown[0], allowed)}; "
                        f"allowed: preset, bases, "
                        f"{', '.join(SWEEP_KEYS)}, {', '.join(f'[{s}]' for s in SECTIONS)}")
    for section in SECTIONS:
        if section in table and not isinstance(table[section], dict):
            raise UserError(f"{file}: [{section}] must be a table of settings")
    return table


def study_config(preset: str | None = None, file: Path | None = None, device: str | None = None) -> StudyConfig:
    """The preset (or the file's `preset`, else `default`) with the file's sections applied; `device`
    (auto, cpu, cuda), when given, replaces both `train.device` and `analysis.device`. A sweep's file
    is refused here: its points are resolved one by one by `study.sweep.sweep_points`."""
    table = read_config_file(file)
    swept = [k for k in SWEEP_KEYS if k in table]
    if swept:
        raise UserError(f"{file} is a sweep ({swept[0]} is set); run it with 'factrecall study', which runs each point")
    return config_from_table(table, file, preset, device)


def config_from_table(table: dict, file: Path | None, preset: str | None = None, device: str | None = None,
                      where: str | None = None) -> StudyConfig:
    """The StudyConfig of a config file's `table` (sweep keys ignored); errors start with `where` (default: the file)."""
    where = where or (str(file) if file is not None else None)
    name = preset or table.get("preset") or "default"
    if not isinstance(name, str) or (file is not None and name not in PRESETS):
        raise UserError(f"{where}: preset must name one of {', '.join(PRESETS)} (got {name!r})")
    if preset and table.get("preset") not in (None, preset):
        raise UserError(f"--preset {preset} disagrees with {file}'s preset {table['preset']!r}; give one of them")
    sections = {}
    data_path = _data_path(where, table.get("data"))
    for section, make in SECTIONS.items():
        overrides = table.get(section, {})
        if not isinstance(overrides, dict):
            raise UserError(f"{where}: [{section}] must be a table of settings")
        if section == "data" and data_path:
            overrides = {}
        if section == "train" and "strategy" in overrides:
            raise UserError(f"{where}: train.strategy cannot be set; a study trains both strategies")
        named = f"{section} setting" if where is None else f"{where}: {section} setting"
        apply = apply_analysis if section == "analysis" else apply_overrides
        sections[section] = apply(apply(make(), preset_sections(name).get(section, {})), overrides, named)
        if device is not None and section in ("train", "analysis"):
            sections[section] = replace(sections[section], device=device)
    try:
        for section in SECTIONS:
            sections[section].validate()
        from factrecall.analysis.registry import check_skip  # imports every analysis: only a study pays for it

        check_skip(sections["analysis"])
        for arm in stage_arm_settings(sections["stage_arms"], sections["train"]):  # each arm a valid recipe
            replace(sections["train"], strategy="stage", **arm).validate()
        if not data_path:  # the population must fit the name pools (checked again, with exclusions, when drawn)
            check_capacity(load_pools(Path(sections["data"].pools) if sections["data"].pools else None),
                           sections["data"].people)
        if sections["data"].qa_train_fraction >= 1:
            raise UserError("data.qa_train_fraction must be below 1 in a study: its claims compare recall of the "
                            "OOD people, whose questions are never trained")
    except UserError as e:  # named with the file it came from
        raise UserError(f"{where}: {e}" if where is not None else str(e)) from None
    bases = coerce(f"{where}: bases", tuple[str, ...], table.get("bases", ["random"]))
    for base in bases:
        if base not in BASE_KINDS and not (is_directory(base) and (Path(base) / "config.json").is_file()):
            raise UserError(f"{where}: unknown base {base!r}; give {', '.join(BASE_KINDS)} or a model directory")
    if data_path and set(bases) & {"language", "skill"}:
        raise UserError(f"{where}: a language or skill base is trained on the generator's people, whose word "
                        f"tokenizer cannot cover the dataset of [data] path; compare bases random or model directories")
    if not bases or len(set(bases)) != len(bases):
        raise UserError(f"{where}: bases must name at least one base, each once (got {list(bases)})")
    names = [base_name(b) for b in bases]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:  # each base's study is bases/<name>/: two of one name would train over each other
        raise UserError(f"{where}: two bases are named {twice!r} (a directory's base is named after its folder); "
                        f"give each base directory a folder name of its own")
    return StudyConfig(name, **sections, bases=bases, data_path=data_path)


def base_name(base: str) -> str:
    """A base's name in step names and folders: its kind, or its directory's name."""
    return base if base in BASE_KINDS else Path(base).name


def config_record(config: StudyConfig) -> dict:
    """What study.json records of `config` (an unset `data_path`, no Stage arms, no skipped analysis and the
    train settings of `LATER_SETTINGS` at their defaults left out, so earlier studies still match)."""
    record = as_json(asdict(config)) | {"train": train_record(config.train),
                                        "analysis": _analysis_record(config.analysis)}
    if record["data_path"] is None:
        del record["data_path"]
    if config.stage_arms == StageArmsConfig():
        del record["stage_arms"]
    elif not config.stage_arms.qa_phase_lora_rank:
        del record["stage_arms"]["qa_phase_lora_rank"]
    return record


def _analysis_record(analysis: AnalysisConfig) -> dict:
    """{device, <analysis>: {setting: value}, skip when any}."""
    record = as_json(asdict(analysis))
    if not analysis.skip:
        del record["skip"]
    return record


def recorded_config(record: dict) -> dict:
    """A study.json `config` as this factrecall records it: an earlier factrecall's flat [analysis] keys nested."""
    return record | {"analysis": _analysis_record(recorded_analysis(record))}


def stage_arm_settings(arms: StageArmsConfig, train: TrainConfig) -> list[dict]:
    """The QA-phase settings of every Stage arm: the grid's points in order (only the listed settings), less
    [train]'s own recipe (compared by effect: qa_phase_lr 0 is lr, qa_phase_weight_decay −1 is weight_decay)."""
    def effect(settings: dict) -> dict:
        out = {key: getattr(train, key) for key in QA_PHASE_SETTINGS} | settings
        return out | {"qa_phase_lr": out["qa_phase_lr"] or train.lr,
                      "qa_phase_weight_decay": (train.weight_decay if out["qa_phase_weight_decay"] < 0
                                                else out["qa_phase_weight_decay"])}

    axes = [[(key, v) for v in getattr(arms, key)] for key in QA_PHASE_SETTINGS if getattr(arms, key)]
    points = [dict(point) for point in itertools.product(*axes)] if axes else []
    return [p for p in points if effect(p) != effect({})]


def _data_path(where: str | None, data: object) -> str | None:
    """`[data] path`: a dataset directory of your own, loaded (and so validated) now; it replaces the generator,
    so no other [data] setting may stand beside it, and a study needs people of both splits."""
    if not isinstance(data, dict) or "path" not in data:
        return None
    from factrecall.data.dataset import load_dataset

    others = sorted(set(data) - {"path"})
    if others:
        raise UserError(f"{where}: [data] path replaces generating the people, so [data] {others[0]} does not apply; "
                        f"remove it or the path")
    path = data["path"]
    if not isinstance(path, str) or not is_directory(path):
        raise UserError(f"{where}: [data] path must name a dataset directory (got {path!r}); see docs/data-format.md")
    counts = load_dataset(Path(path)).meta["counts"]
    if not counts.get("id_people") or not counts.get("ood_people"):
        raise UserError(f"{where}: the dataset {path} needs ID and OOD people for a study (it has "
                        f"{counts.get('id_people')} and {counts.get('ood_people')})")
    return str(Path(path).resolve())
