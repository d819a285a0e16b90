"""Value pools and sentence templates from which people and their texts are drawn.

The package ships one set under `data/pools/`; a user may pass a directory with the same
files (`first_names.tsv`, `middle_names.txt`, `last_names.txt`, `cities.txt`,
`universities.txt`, `majors.txt`, `companies.tsv`, `templates.json`, `questions.json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from factrecall.errors import UserError

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
PRONOUNS = {"F": "she", "M": "he"}
ANSWER_CUE = "Answer:"  # closes every QA prompt; the answer follows after one space
POOL_FILES = ("first_names.tsv", "middle_names.txt", "last_names.txt", "cities.txt",
              "universities.txt", "majors.txt", "companies.tsv", "templates.json", "questions.json")


@dataclass(frozen=True)
class Pools:
    first_names: tuple[tuple[str, str], ...]  # (name, gender "F"|"M")
    middle_names: tuple[str, ...]
    last_names: tuple[str, ...]
    cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    companies: tuple[tuple[str, str], ...]  # (company, its city)
    templates: dict[str, tuple[str, ...]]  # attribute -> bio sentence templates ({subject}, {value})
    questions: dict[str, tuple[str, ...]]  # attribute -> question templates ({name}); first is canonical


def default_pools_dir() -> Path:
    return Path(str(resources.files("factrecall.data") / "pools"))


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"pool file {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"pool file {path} cannot be read ({e.strerror or e}); check its permissions") from None


def _lines(path: Path) -> tuple[str, ...]:
    values = tuple(line.strip() for line in _text(path).splitlines() if line.strip())
    if not values:
        raise UserError(f"pool file {path} is empty; give at least one value per line")
    return values


def _pairs(path: Path) -> tuple[tuple[str, str], ...]:
    pairs = []
    for number, line in enumerate(_lines(path), start=1):
        parts = line.split("\t")
        if len(parts) != 2:
            raise UserError(f"{path}:{number}: expected two tab-separated columns, got {len(parts)}")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return tuple(pairs)


def _templates(path: Path, placeholders: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    try:
        raw = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object {{attribute: [template, ...]}}, not {type(raw).__name__}")
    missing = [a for a in ATTRIBUTES if not raw.get(a)]
    if missing:
        raise UserError(f"{path}: no templates for {', '.join(missing)}; give a list for each of {', '.join(ATTRIBUTES)}")
    for attribute in ATTRIBUTES:
        if not isinstance(raw[attribute], list) or not all(isinstance(t, str) for t in raw[attribute]):
            raise UserError(f"{path}: {attribute} must be a list of template strings (got {raw[attribute]!r})")
        for t in raw[attribute]:
            for ph in placeholders:
                if t.count(ph) != 1:
                    raise UserError(f"{path}: template {t!r} of {attribute} must contain {ph} exactly once")
    return {a: tuple(raw[a]) for a in ATTRIBUTES}


def load_pools(directory: Path | None = None) -> Pools:
    d = Path(directory) if directory is not None else default_pools_dir()
    missing = [f for f in POOL_FILES if not (d / f).is_file()]
    if missing:
        raise UserError(f"pool directory {d} lacks {', '.join(missing)}; copy the package's pools as a start")
    first = _pairs(d / "first_names.tsv")
    bad = [n for n, g in first if g not in PRONOUNS]
    if bad:
        raise UserError(f"{d / 'first_names.tsv'}: gender of {bad[0]!r} must be F or M")
    pools = Pools(
        first_names=first,
        middle_names=_lines(d / "middle_names.txt"),
        last_names=_lines(d / "last_names.txt"),
        cities=_lines(d / "cities.txt"),
        universities=_lines(d / "universities.txt"),
        majors=_lines(d / "majors.txt"),
        companies=_pairs(d / "companies.tsv"),
        templates=_templates(d / "templates.json", ("{subject}", "{value}")),
        questions=_templates(d / "questions.json", ("{name}",)),
    )
    return pools
