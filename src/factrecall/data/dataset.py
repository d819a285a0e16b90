"""Load and validate a dataset directory written by `generate_dataset`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factrecall.artifacts import read_json, read_jsonl
from factrecall.data.pools import ATTRIBUTES
from factrecall.errors import UserError
from factrecall.layout import DatasetLayout

_REQUIRED = {
    "people": ("person_id", "name", "split", *ATTRIBUTES),
    "bio": ("person_id", "split", "text", "spans"),
    "qa": ("person_id", "attribute", "split", "prompt", "answer", "text", "answer_start"),
}


@dataclass(frozen=True)
class Dataset:
    path: Path
    meta: dict
    people: list[dict]
    bios: list[dict]
    qa: list[dict]

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    def qa_split(self, split: str) -> list[dict]:
        return [q for q in self.qa if q["split"] == split]

    def vocabulary_fragments(self) -> list[str]:
        return DatasetLayout(self.path).vocabulary.read_text(encoding="utf-8").splitlines()


_TYPES = {"person_id": int, "bio_index": int, "answer_start": int, "spans": dict}  # every other key: str


def _check_rows(path: Path, rows: list[dict], keys: tuple[str, ...]) -> None:
    for number, row in enumerate(rows, start=1):
        missing = [k for k in keys if k not in row]
        if missing:
            raise UserError(f"{path}:{number}: missing key(s) {', '.join(missing)}; regenerate the dataset")
        for key in keys:
            kind = _TYPES.get(key, str)
            if not isinstance(row[key], kind) or isinstance(row[key], bool):
                raise UserError(f"{path}:{number}: {key} must be {kind.__name__}, got {row[key]!r}; "
                                f"regenerate the dataset")
        if row["split"] not in ("id", "ood"):
            raise UserError(f"{path}:{number}: split must be 'id' or 'ood', got {row['split']!r}")
        for attribute in ATTRIBUTES if "spans" in keys else ():
            span = row["spans"].get(attribute)
            if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)
                    and 0 <= span[0] <= span[1] <= len(row["text"])):
                raise UserError(f"{path}:{number}: spans[{attribute!r}] must be [start, end] inside the text, "
                                f"got {span!r}; regenerate the dataset")


def load_dataset(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"data directory {path} does not exist; create one with 'factrecall data generate --out {path}'")
    files = DatasetLayout(path)
    missing = [f.name for f in files.files if not f.is_file()]
    if missing:
        raise UserError(f"{path} is not a factrecall dataset (missing {', '.join(missing)}); "
                        f"create one with 'factrecall data generate'")
    meta = read_json(files.meta, "dataset meta")
    if not isinstance(meta, dict) or "content_hash" not in meta:
        raise UserError(f"{files.meta} has no content_hash; regenerate the dataset")
    tables = {}
    for name, keys in _REQUIRED.items():
        rows = read_jsonl(files.table(name))
        _check_rows(files.table(name), rows, keys)
        tables[name] = rows
    people = tables["people"]
    if not people:
        raise UserError(f"{files.table('people')} holds no people; regenerate the dataset")
    split_of: dict[int, str] = {}
    for number, person in enumerate(people, start=1):
        if person["person_id"] in split_of:
            raise UserError(f"{files.table('people')}:{number}: person {person['person_id']} appears twice; "
                            f"a person belongs to one split, regenerate the dataset")
        split_of[person["person_id"]] = person["split"]
    for name in ("bio", "qa"):
        for number, row in enumerate(tables[name], start=1):
            if split_of.get(row["person_id"]) != row["split"]:
                raise UserError(f"{files.table(name)}:{number}: person {row['person_id']} is "
                                f"{split_of.get(row['person_id'], 'unknown')!r} in people.jsonl but "
                                f"{row['split']!r} here; a person belongs to one split")
    return Dataset(path, meta, people, tables["bio"], tables["qa"])
