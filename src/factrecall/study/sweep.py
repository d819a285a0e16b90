"""A study's axes: the points of a sweep (docs/method.md §12).

A config with `seeds`, `[sweep]` or `points` is a sweep; each point is a full study of both
strategies in `points/<id>/` (its own study.json, manifest, lock, summary and report)::

    preset = "default"
    seeds = [0, 1, 2]                       # train.seed and data.seed (generated data) of each point
    bases = ["random", "language"]          # in a sweep, one more axis: one base per point
    [sweep]
    preset = ["default", "small"]           # a preset is an axis too (the model and its recipe)
    "data.people" = [250, 500]

The points are the grid of the axes in the order written (then `base`, then `seed`), or, instead of
`[sweep]`, an explicit list: `points = [{"train.model" = "small-llama", "train.lr" = 1e-3}, …]`, each
crossed with `bases` and `seeds`. A point's id hashes its axis values, so adding a value runs only
the new points; changing a setting common to all points reruns, in every point, exactly the steps
whose settings changed (a point takes its config anew; its manifest decides what reruns).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from pathlib import Path

from factrecall.analysis.config import FLAT_KEYS, nested, setting_names
from factrecall.artifacts import digest
from factrecall.errors import UserError
from factrecall.layout import StudyLayout
from factrecall.config.study import (
    SECTIONS,
    SWEEP_KEYS,
    StudyConfig,
    config_from_table,
    config_record,
    read_config_file,
)

MAX_POINTS = 512  # a larger sweep is refused: split it into several studies (or list its points)


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its axis values (`settings`, in axis order), resolved config and directory id."""
    index: int
    settings: dict
    config: StudyConfig

    @property
    def id(self) -> str:
        return digest(self.settings)[:12]

    @property
    def label(self) -> str:
        return point_label(self.settings)

    @property
    def config_digest(self) -> str:
        """What the point's study.json records of its config, hashed: a finished point ran this config."""
        return digest(config_record(self.config))

    def layout(self, study: Path) -> StudyLayout:
        return StudyLayout(Path(study)).point(self.id)


def point_label(settings: dict) -> str:
    """`model=small-llama seed=1`: a point's axis values, short."""
    return " ".join(f"{axis_label(k)}={_value_label(v)}" for k, v in settings.items()) or "(the config)"


def axis_label(key: str) -> str:
    """An axis's short name in labels and tables: `train.model` → `model`; `seed` and `base` as they are."""
    return key.rsplit(".", 1)[-1]


def _value_label(value) -> str:
    return Path(value).name if isinstance(value, str) and "/" in value else str(value)


def is_sweep(table: dict) -> bool:
    return any(k in table for k in SWEEP_KEYS)


def sweep_points(file: Path, preset: str | None = None, device: str | None = None) -> list[Point]:
    """Every point of the sweep in `file`, each config resolved and validated (errors name the point)."""
    table = read_config_file(file)
    bases, seeds = _bases_axis(file, table), _seed_axis(file, table)
    size = len(bases) * len(seeds) * (len(table["points"]) if isinstance(table.get("points"), list) else
                                      math.prod(len(v) if isinstance(v, list) else 1
                                                for v in _flatten(file, table.get("sweep", {})).values()))
    if size > MAX_POINTS:  # counted before the grid is built
        raise UserError(f"{file}: the sweep has {size:,} points, more than {MAX_POINTS}; split it into "
                        f"several studies (each its own --out)")
    combos = [{**c, **b, **s} for c in _combinations(file, table) for b in bases for s in seeds]
    common = {k: v for k, v in table.items() if k not in (*SWEEP_KEYS, "bases")}
    points = []
    for index, settings in enumerate(combos):
        where = f"{file}: point {index} ({point_label(settings)})"
        config = config_from_table(_with(common, settings), file, preset, device, where=where)
        points.append(Point(index, settings, config))
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        first = next(p for p in points if ids.count(p.id) > 1)
        raise UserError(f"{file}: point {first.index} ({first.label}) is listed twice; list each point once")
    return points


def _combinations(file: Path, table: dict) -> list[dict]:
    """The `[sweep]` grid or the `points` list, as {axis key: value} per combination."""
    if "sweep" in table and "points" in table:
        raise UserError(f"{file}: give [sweep] (a grid) or points (a list), not both")
    if "points" in table:
        listed = table["points"]
        if not isinstance(listed, list) or not listed or not all(isinstance(p, dict) for p in listed):
            raise UserError(f"{file}: points must be a non-empty list of tables of settings, e.g. "
                            f"points = [{{\"train.lr\" = 1e-3}}]")
        combos = [_flatten(file, p) for p in listed]
        for i, combo in enumerate(combos):
            for key in combo:
                _check_key(file, key, f"points[{i}]")
        return combos
    axes = _flatten(file, table.get("sweep", {}))
    for key, values in axes.items():
        _check_key(file, key, "[sweep]")
        if not isinstance(values, list) or not values:
            raise UserError(f"{file}: [sweep] {key!r} must be a non-empty list of values (got {values!r})")
        if any(_same(a, b) for i, a in enumerate(values) for b in values[:i]):
            raise UserError(f"{file}: [sweep] {key!r} repeats a value ({values!r}); give each value once")
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _same(a, b) -> bool:
    """Equal as settings: 1 and 1.0 are one learning rate (a bool is never a number)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _bases_axis(file: Path, table: dict) -> list[dict]:
    bases = table.get("bases")
    if bases is None:
        return [{}]
    if not isinstance(bases, list) or not bases:
        raise UserError(f"{file}: bases must be a non-empty list of bases (got {bases!r})")
    return [{"base": b} for b in bases]


def _seed_axis(file: Path, table: dict) -> list[dict]:
    seeds = table.get("seeds")
    if seeds is None:
        return [{}]
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            and 0 <= s < 2**32 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise UserError(f"{file}: seeds must be a non-empty list of distinct integers in [0, 2**32) (got {seeds!r})")
    listed = table.get("points") if isinstance(table.get("points"), list) else []
    swept = {**_flatten(file, table.get("sweep", {})),
             **{k: 1 for p in listed if isinstance(p, dict) for k in _flatten(file, p)}}
    clash = [k for k in ("train.seed", "data.seed") if k in swept]
    if clash:
        raise UserError(f"{file}: seeds and the swept {clash[0]!r} both set the seed; give one of them")
    return [{"seed": s} for s in seeds]


def _flatten(file: Path, table: dict, prefix: str = "") -> dict:
    """`{"train": {"lr": [..]}}` (TOML's dotted keys) and `{"train.lr": [..]}` (quoted) alike as {"train.lr": [..]}."""
    if not isinstance(table, dict):
        raise UserError(f"{file}: [sweep] must be a table of axes, e.g. \"train.lr\" = [1e-3, 2e-3] (got {table!r})")
    flat = {}
    for key, value in table.items():
        inner = (_flatten(file, value, f"{prefix}{key}.") if isinstance(value, dict) and "." not in key
                 else {prefix + key: value})
        twice = sorted(set(inner) & set(flat))  # `[sweep.analysis.ablation] k = [..]` too
        if twice:
            raise UserError(f"{file}: the setting {twice[0]!r} is given twice in one [sweep] or points entry (quoted "
                            f"and as a table); give it once")
        flat.update(inner)
    return flat


def _check_key(file: Path, key: str, where: str) -> None:
    """An axis must name one setting, `<section>.<name>` (or data.path), or `preset`."""
    if key == "preset":
        return
    section, _, name = key.partition(".")
    known = (setting_names() if section == "analysis" else {f.name for f in fields(SECTIONS[section])}
             | ({"path"} if section == "data" else set())) if section in SECTIONS else set()
    if name not in known:
        hint = (f"known {section} settings: {', '.join(sorted(known))}" if section in SECTIONS else
                f"write <section>.<setting> with a section of {', '.join(SECTIONS)}")
        raise UserError(f"{file}: {where} {key!r} is not a setting; {hint}")
    if key == "train.strategy":
        raise UserError(f"{file}: {where} cannot sweep train.strategy; every point trains both strategies")


def _with(table: dict, settings: dict) -> dict:
    """`table` with a point's settings written in (a copy): `seed` sets train.seed (and data.seed unless the
    data is a dataset of your own), `base` the point's one base."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    for key, value in settings.items():
        if key == "seed":
            out.setdefault("train", {})["seed"] = value
            if "path" not in out.get("data", {}):
                out.setdefault("data", {})["seed"] = value
        elif key == "base":
            out["bases"] = [value]
        elif key == "preset":
            out["preset"] = value
        elif key.startswith("analysis."):  # into the nested [analysis] table, a flat name as what it sets
            out["analysis"] = nested(out.get("analysis", {}))
            for target in FLAT_KEYS.get(key.partition(".")[2], (key.partition(".")[2],)):
                owner, _, name = target.rpartition(".")
                (out["analysis"].setdefault(owner, {}) if owner else out["analysis"])[name] = value
        else:
            section, _, name = key.partition(".")
            out.setdefault(section, {})[name] = value
    return out
