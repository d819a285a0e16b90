"""Load and validate a dataset directory: one `generate_dataset` wrote, or facts of your own (docs/data-format.md).

A dataset is three JSONL tables, `people.jsonl`, `bio.jsonl` and `qa.jsonl`. The generator adds
`vocabulary.txt` and a `meta.json` with `generator_version`; such a directory is read as it was
written. A directory without `meta.json`, or whose `meta.json` has no `generator_version`, holds
facts of your own: any attribute names, and the loader derives what the generator would have
written (`Dataset.meta`: the attributes, the counts and a content hash over the three tables; the
vocabulary of the tiny presets' word tokenizer from the texts themselves).

Both kinds go through the same checks, and every problem is one `UserError` naming the file, the
line and the field: a span outside its text or not holding the person's value, an answer that is
not the person's value, a split other than "id"/"ood", an unknown or repeated id, an attribute a
person lacks, a person without bios or questions, …
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factrecall.artifacts import read_json, read_jsonl_numbered, sha256_files
from factrecall.data.pools import ATTRIBUTES
from factrecall.errors import UserError
from factrecall.layout import DatasetLayout

SPLITS = ("id", "ood")
RESERVED = ("person_id", "name", "split")  # keys of a person that are never one of their attributes
FORMAT_DOC = "docs/data-format.md"

_REQUIRED = {
    "people": ("person_id", "name", "split"),  # and every attribute
    "bio": ("person_id", "split", "text", "spans"),
    "qa": ("person_id", "attribute", "split", "prompt", "answer", "text", "answer_start"),
}
_DERIVED = {"bio": ("split",), "qa": ("split", "text", "answer_start")}  # may be left out of your own data
_TYPES = {"person_id": int, "bio_index": int, "answer_start": int, "spans": dict}  # every other key: str


@dataclass(frozen=True)
class Dataset:
    """People, bios (texts + the character span of each value they state) and questions, by split.

    `meta` is `meta.json` as the generator wrote it, or for facts of your own the meta the loader
    derived (`source` "own", `attributes`, `counts`, `content_hash`, and any key of your meta.json)."""
    path: Path
    meta: dict
    people: list[dict]
    bios: list[dict]
    qa: list[dict]

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    @property
    def generated(self) -> bool:
        """Written by `generate_dataset` (its templates and pools are known); False for facts of your own."""
        return "generator_version" in self.meta

    @property
    def attributes(self) -> tuple[str, ...]:
        """The dataset's attribute names, in order: the generator's six, or those your bios and questions name."""
        return ATTRIBUTES if self.generated else tuple(self.meta["attributes"])

    @property
    def files(self) -> list[Path]:
        """The files the dataset consists of (what a study hashes to see it unchanged)."""
        layout = DatasetLayout(self.path)
        if self.generated:
            return layout.files
        return [*([layout.meta] if layout.meta.is_file() else []), *layout.tables]

    def qa_split(self, split: str) -> list[dict]:
        return [q for q in self.qa if q["split"] == split]

    def vocabulary_fragments(self) -> list[str]:
        """Text fragments the tiny presets' word tokenizer is built from: the generator's `vocabulary.txt`, or
        for facts of your own every word of the names, values, bios and questions, split as that tokenizer
        splits text (`tokenizers`' Whitespace pre-tokenizer, \\w+|[^\\w\\s]+)."""
        if self.generated:
            return DatasetLayout(self.path).vocabulary.read_text(encoding="utf-8").splitlines()
        from tokenizers.pre_tokenizers import Whitespace

        split = Whitespace().pre_tokenize_str
        texts = [p["name"] for p in self.people] + [p[a] for p in self.people for a in self.attributes]
        texts += [b["text"] for b in self.bios] + [q["text"] for q in self.qa]
        return sorted({word for text in texts for word, _ in split(text)})


class _Table:
    """One JSONL table's rows with the line each came from; `fail` raises the one-line error for a row."""

    def __init__(self, path: Path, hint: str):
        self.path, self.hint = path, hint
        numbered = read_jsonl_numbered(path, hint)
        self.rows: list[dict] = [row for _, row in numbered]
        self.lines: list[int] = [number for number, _ in numbered]

    def where(self, index: int) -> str:
        return f"{self.path}:{self.lines[index]}"

    def line(self, index: int) -> str:
        return f"line {self.lines[index]}"

    def fail(self, index: int, problem: str) -> UserError:
        return UserError(f"{self.where(index)}: {problem}; {self.hint}")

    def check_keys(self, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        """Every row has `keys` (those in `optional` may be absent) of their type."""
        for i, row in enumerate(self.rows):
            missing = [k for k in keys if k not in row and k not in optional]
            if missing:
                raise self.fail(i, f"missing key(s) {', '.join(missing)}")
            for key in keys:
                kind = _TYPES.get(key, str)
                if key in row and (not isinstance(row[key], kind) or isinstance(row[key], bool)):
                    raise self.fail(i, f"{key} must be {kind.__name__}, got {row[key]!r}")


def _meta(files: DatasetLayout) -> dict | None:
    if not files.meta.is_file():
        return None
    meta = read_json(files.meta, "dataset meta")
    if not isinstance(meta, dict):
        raise UserError(f"{files.meta} must hold a JSON object, not {type(meta).__name__}; fix or remove it "
                        f"({FORMAT_DOC})")
    return meta


def load_dataset(path: Path) -> Dataset:
    """Read and check a dataset directory (generated or your own, docs/data-format.md); bad data is a UserError
    naming its file, line and field."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"data directory {path} does not exist; create one with 'factrecall data generate --out {path}'"
                        f" or write your own ({FORMAT_DOC})")
    files = DatasetLayout(path)
    given = _meta(files)
    generated = given is not None and "generator_version" in given
    missing = [f.name for f in (files.files if generated else files.tables) if not f.is_file()]
    if missing:
        raise UserError(f"{path} is not a factrecall dataset (missing {', '.join(missing)}); create one with "
                        f"'factrecall data generate' or write your own ({FORMAT_DOC})")
    if generated and "content_hash" not in given:
        raise UserError(f"{files.meta} has no content_hash; regenerate the dataset")
    hint = "regenerate the dataset" if generated else f"see {FORMAT_DOC}"
    tables = {name: _Table(files.table(name), hint) for name in ("people", "bio", "qa")}
    people, bios, qa = tables["people"], tables["bio"], tables["qa"]
    if not people.rows:
        raise UserError(f"{people.path} holds no people; {hint}")
    attributes = _check(people, bios, qa, generated, given)
    if generated:
        meta = given
    else:
        meta = _derived_meta(files, given or {}, attributes, people.rows, bios.rows, qa.rows)
    return Dataset(path, meta, people.rows, bios.rows, qa.rows)


def _check(people: _Table, bios: _Table, qa: _Table, generated: bool, given: dict | None) -> tuple[str, ...]:
    """Validate the three tables (filling the keys your own data may leave out); returns the attributes."""
    optional = {name: () if generated else keys for name, keys in _DERIVED.items()}
    people.check_keys(_REQUIRED["people"] + (ATTRIBUTES if generated else ()))
    bios.check_keys(_REQUIRED["bio"] + ("bio_index",), optional["bio"] + ("bio_index",))
    qa.check_keys(_REQUIRED["qa"], optional["qa"])
    index: dict[int, int] = {}  # person_id → row of people.jsonl
    names: dict[str, int] = {}
    for i, person in enumerate(people.rows):
        if person["split"] not in SPLITS:
            raise people.fail(i, f"split must be 'id' or 'ood', got {person['split']!r}")
        if person["person_id"] in index:
            raise people.fail(i, f"person_id {person['person_id']} appears twice (also "
                                 f"{people.line(index[person['person_id']])}); give each person one line")
        if not person["name"].strip() or person["name"] in names:
            raise people.fail(i, f"name {person['name']!r} " + ("is empty" if not person["name"].strip() else
                                                                f"is taken by {people.line(names[person['name']])}")
                              + "; each person needs a name of their own")
        index[person["person_id"]] = i
        names[person["name"]] = i
    for table in (bios, qa):
        for i, row in enumerate(table.rows):
            if row["person_id"] not in index:
                raise table.fail(i, f"person_id {row['person_id']} is not in {people.path.name}")
            split = people.rows[index[row["person_id"]]]["split"]
            if row.setdefault("split", split) != split:
                raise table.fail(i, f"split: person {row['person_id']} is {split!r} in {people.path.name} but "
                                    f"{row['split']!r} here; a person belongs to one split")
    by_person = {pid: people.rows[i] for pid, i in index.items()}
    attributes = ATTRIBUTES if generated else _attributes(people, bios, qa, by_person, given)
    _check_values(people, attributes)
    stated: dict[int, set[str]] = {pid: set() for pid in index}
    asked: dict[int, int] = dict.fromkeys(index, 0)
    written: dict[int, int] = dict.fromkeys(index, 0)  # bios of each person so far (the default bio_index)
    seen_bios: dict[tuple, int] = {}
    for i, row in enumerate(bios.rows):
        person = by_person[row["person_id"]]
        _check_spans(bios, i, row, person, attributes, generated)
        row.setdefault("bio_index", written[row["person_id"]])
        written[row["person_id"]] += 1
        key = (row["person_id"], row["bio_index"])
        if key in seen_bios:
            raise bios.fail(i, f"bio_index {row['bio_index']} of person {row['person_id']} appears twice (also "
                               f"{bios.line(seen_bios[key])})")
        seen_bios[key] = i
        stated[row["person_id"]].update(row["spans"])
    seen_questions: dict[tuple, int] = {}
    for i, row in enumerate(qa.rows):
        person = by_person[row["person_id"]]
        _check_question(qa, i, row, person, attributes, generated)
        key = (row["person_id"], row["attribute"], row["prompt"])
        if key in seen_questions:
            raise qa.fail(i, f"prompt {row['prompt']!r} of person {row['person_id']} appears twice (also "
                             f"{qa.line(seen_questions[key])})")
        seen_questions[key] = i
        asked[row["person_id"]] += 1
    for i, person in enumerate(people.rows):
        pid = person["person_id"]
        if not stated[pid]:
            raise people.fail(i, f"person_id {pid} ({person['name']}) has no bio in {bios.path.name}; every person "
                                 f"needs at least one")
        unstated = [a for a in attributes if a not in stated[pid]]
        if unstated:
            raise people.fail(i, f"{unstated[0]}: no bio of person {pid} ({person['name']}) states it (a span in "
                                 f"{bios.path.name}); every fact must be in at least one bio")
        if not asked[pid]:
            raise people.fail(i, f"person_id {pid} ({person['name']}) has no question in {qa.path.name}; every person "
                                 f"needs at least one")
    if not generated:
        for split in SPLITS:
            if not any(p["split"] == split for p in people.rows):
                raise UserError(f"{people.path}: split: no person is {split!r}; the ID people's questions are "
                                f"trained and the OOD people's tested, so give each split at least one person")
    return attributes


def _attributes(people: _Table, bios: _Table, qa: _Table, by_person: dict[int, dict], given: dict | None
                ) -> tuple[str, ...]:
    """Your own data's attributes: every key of a bio's spans and every question's attribute, ordered as the
    keys of the first person (or as meta.json's `attributes`); the person of the row that names one must have it."""
    named: list[str] = []
    for table, field in ((bios, "spans"), (qa, "attribute")):
        for i, row in enumerate(table.rows):
            for name in (row["spans"] if field == "spans" else [row["attribute"]]):
                shown = f"spans[{name!r}]" if field == "spans" else f"attribute {name!r}"
                if name in RESERVED or not name.strip():
                    raise table.fail(i, f"{shown} is no attribute (a person's {', '.join(RESERVED)} are not facts)")
                if name not in by_person[row["person_id"]]:
                    raise table.fail(i, f"{shown}: person {row['person_id']} has no {name!r} in {people.path.name}")
                if name not in named:
                    named.append(name)
    first = list(people.rows[0])
    order = sorted(named, key=lambda a: (first.index(a) if a in first else len(first), named.index(a)))
    wanted = (given or {}).get("attributes")
    if wanted is not None:
        if not (isinstance(wanted, list) and all(isinstance(a, str) for a in wanted) and len(set(wanted)) == len(wanted)
                and set(wanted) == set(order)):
            raise UserError(f"{people.path.parent / 'meta.json'}: attributes must list each attribute the bios and "
                            f"questions name once ({', '.join(order)}), got {wanted!r}; fix or remove the key")
        order = list(wanted)
    return tuple(order)


def _check_values(people: _Table, attributes: tuple[str, ...]) -> None:
    for i, person in enumerate(people.rows):
        for a in attributes:
            if a not in person:
                raise people.fail(i, f"{a} missing: person {person['person_id']} ({person['name']}) lacks an "
                                     f"attribute the bios and questions name ({', '.join(attributes)})")
            value = person[a]
            if not isinstance(value, str) or not value.strip() or value != value.strip():
                raise people.fail(i, f"{a} must be a non-empty string without spaces at its ends, got {value!r}")


def _check_spans(bios: _Table, i: int, row: dict, person: dict, attributes: tuple[str, ...], generated: bool) -> None:
    """Spans inside the text, each holding the person's value, none overlapping; put in attribute order."""
    text, spans = row["text"], row["spans"]
    if not text.strip():
        raise bios.fail(i, "text is empty")
    if not spans:
        raise bios.fail(i, "spans is empty; give the [start, end) of each value the text states")
    for a in spans:
        if a not in attributes:
            raise bios.fail(i, f"spans[{a!r}] names no attribute of the dataset ({', '.join(attributes)})")
    if generated and len(spans) != len(attributes):
        missing = [a for a in attributes if a not in spans]
        raise bios.fail(i, f"spans[{missing[0]!r}] missing; a generated bio states every attribute")
    taken: list[tuple[int, int, str]] = []
    for a in attributes:
        if a not in spans:
            continue
        span = spans[a]
        if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)
                and 0 <= span[0] < span[1] <= len(text)):
            raise bios.fail(i, f"spans[{a!r}] must be [start, end) inside the text (0 ≤ start < end ≤ {len(text)}), "
                               f"got {span!r}")
        if text[span[0]:span[1]] != person[a]:
            raise bios.fail(i, f"spans[{a!r}] {span} holds {text[span[0]:span[1]]!r}, not person "
                               f"{person['person_id']}'s {a} {person[a]!r}")
        for s, e, b in taken:
            if span[0] < e and s < span[1]:
                raise bios.fail(i, f"spans[{a!r}] {span} overlaps spans[{b!r}] {[s, e]}")
        taken.append((span[0], span[1], a))
    row["spans"] = {a: spans[a] for a in attributes if a in spans}  # the dataset's attribute order


def _check_question(qa: _Table, i: int, row: dict, person: dict, attributes: tuple[str, ...], generated: bool) -> None:
    """The attribute is the person's, the answer its value; text = prompt + " " + answer (derived when absent)."""
    a = row["attribute"]
    if a not in attributes:
        raise qa.fail(i, f"attribute {a!r} is not one of the dataset's ({', '.join(attributes)})")
    if not row["prompt"].strip():
        raise qa.fail(i, "prompt is empty")
    if row["answer"] != person[a]:
        raise qa.fail(i, f"answer {row['answer']!r} is not person {person['person_id']}'s {a} {person[a]!r}")
    text = f"{row['prompt']} {row['answer']}"
    if row.setdefault("text", text) != text:
        raise qa.fail(i, f"text must be prompt + ' ' + answer ({text!r}), got {row['text']!r}")
    if row.setdefault("answer_start", len(row["prompt"]) + 1) != len(row["prompt"]) + 1:
        raise qa.fail(i, f"answer_start must be len(prompt) + 1 = {len(row['prompt']) + 1}, got {row['answer_start']}")


def _derived_meta(files: DatasetLayout, given: dict, attributes: tuple[str, ...], people: list[dict],
                  bios: list[dict], qa: list[dict]) -> dict:
    """What the generator's meta.json would say of your own data; a given meta.json's other keys are kept, and
    `counts` or `content_hash` in it must agree with the files."""
    n_id = sum(p["split"] == "id" for p in people)
    derived = {
        "source": "own",
        "attributes": list(attributes),
        "counts": {"people": len(people), "id_people": n_id, "ood_people": len(people) - n_id,
                   "bios": len(bios), "qa": len(qa)},
        "content_hash": sha256_files(files.tables),  # the three tables' bytes, in this order
    }
    for key in ("counts", "content_hash", "source"):
        if key in given and given[key] != derived[key]:
            raise UserError(f"{files.meta}: {key} {given[key]!r} is not what the tables give ({derived[key]!r}); "
                            f"remove the key, the loader derives it ({FORMAT_DOC})")
    return {**given, **derived}
