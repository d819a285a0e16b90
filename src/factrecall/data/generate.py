"""Draw a population of synthetic people and write it as a dataset directory (docs/method.md §1).

Layout of a dataset directory::

    people.jsonl      one person a line: person_id, name, gender, split, and the six attributes
    bio.jsonl         one biography a line: person_id, bio_index, split, text, spans {attribute: [start, end)}
    qa.jsonl          one question a line: person_id, attribute, split, prompt, answer, text, answer_start
    vocabulary.txt    every text fragment the generator could ever emit (pools, templates, numbers)
    meta.json         generator version, config, counts, content hash

`split` is "id" (QA trained) or "ood" (QA only evaluated); BIO of everyone is trained. The same
config gives byte-identical files: all randomness comes from `random.Random` streams seeded by
strings derived from `seed`, one stream per concern, so changing e.g. `bios_per_person` does not
change who the people are.

`generate_dataset` holds the directory's lock (`factrecall.locks`) while it writes, replaces only the
same dataset (drawn from the same config) unless forced, never writes over the package or its pools, and
the sampling loop is bounded: odd custom pools end in a UserError, never in a hang.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from factrecall.artifacts import (
    as_json,
    atomic_directory,
    is_directory,
    read_json,
    sha256_files,
    write_json,
    write_jsonl,
)
from factrecall.checks import checker, is_int, is_real
from factrecall.data.dataset import load_dataset
from factrecall.data.pools import ANSWER_CUE, ATTRIBUTES, MONTHS, PRONOUNS, Pools, load_pools
from factrecall.errors import UserError
from factrecall.layout import DatasetLayout
from factrecall.locks import PACKAGE, directory_lock, refuse_overlap

GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class DataConfig:
    people: int = 1000
    seed: int = 0
    qa_train_fraction: float = 0.5
    bios_per_person: int = 1
    permute: bool = False  # shuffle sentence order in each bio
    fullname: bool = False  # full name in every sentence instead of a pronoun
    templates_per_attribute: int = 0  # use only the first N templates per attribute; 0 = all
    question_paraphrases: bool = False  # draw each question from all paraphrases, not the canonical one
    first_year: int = 1900
    last_year: int = 2099
    pools: str | None = None  # directory of user pools; None = the package's
    exclude: tuple[str, ...] = ()  # dataset directories whose people's full names are never drawn

    @property
    def id_people(self) -> int:
        """People whose QA is trained: all of a skill base's population, else at least one of each split."""
        if self.qa_train_fraction == 1.0:
            return self.people
        return min(max(1, round(self.qa_train_fraction * self.people)), self.people - 1)

    def validate(self) -> None:
        """Refuse any setting out of its range, NaN and infinity included, in one line starting `data.<key>`
        (and the `data generate` option where there is one)."""
        must = checker(self, "data", _OPTIONS)

        must(is_int(self.people) and self.people >= 2, "people", "be at least 2", "ID and OOD need one person each")
        must(is_int(self.seed) and 0 <= self.seed < 2**32, "seed", "be an integer in [0, 2**32)")
        must(is_real(self.qa_train_fraction) and 0 < self.qa_train_fraction <= 1, "qa_train_fraction",
             "lie in (0, 1]", "1 trains every person's QA (a skill base's population)")
        must(is_int(self.bios_per_person) and self.bios_per_person >= 1, "bios_per_person", "be at least 1",
             "give an integer")
        must(is_int(self.templates_per_attribute) and self.templates_per_attribute >= 0, "templates_per_attribute",
             "be 0 (all) or more", "give an integer")
        for key in ("permute", "fullname", "question_paraphrases"):
            must(isinstance(getattr(self, key), bool), key, "be true or false")
        for key in ("first_year", "last_year"):
            must(is_int(getattr(self, key)) and 1 <= getattr(self, key) <= 9999, key, "be a year in [1, 9999]")
        if self.first_year > self.last_year:
            raise UserError(f"data.first_year {self.first_year} is after data.last_year {self.last_year}; "
                            f"give first_year ≤ last_year")
        must(self.pools is None or (isinstance(self.pools, str) and is_directory(self.pools)), "pools",
             "name a directory of pools", "copy the package's data/pools/ as a start")
        must(isinstance(self.exclude, (tuple, list)) and all(isinstance(e, str) and is_directory(e)
                                                             for e in self.exclude),
             "exclude", "list existing dataset directories")


_OPTIONS = ("people", "seed", "qa_train_fraction", "bios_per_person", "templates_per_attribute", "pools",
            "exclude")  # DataConfig keys that are options of `data generate` too
SAMPLING_TRIES = 1000  # draws in a row of names already taken before sampling gives up (each ≤ ½ likely)


def excluded_names(config: DataConfig) -> tuple[set[str], dict[str, str]]:
    """Full names of the people in `config.exclude`'s datasets, and each dataset's content hash."""
    names, hashes = set(), {}
    for path in config.exclude:
        other = load_dataset(Path(path))
        names.update(p["name"] for p in other.people)
        hashes[str(path)] = other.content_hash
    return names, hashes


def check_capacity(pools: Pools, people: int, excluded: int = 0) -> None:
    """Refuse more people than half the distinct full names the pools hold (less `excluded` names)."""
    distinct = len({n for n, _ in pools.first_names}) * len(set(pools.middle_names)) * len(set(pools.last_names))
    capacity = distinct - excluded
    if people > capacity // 2:
        raise UserError(f"--people {people} is too many for these name pools (capacity {capacity} full names); "
                        f"add names")


def sample_people(pools: Pools, config: DataConfig, exclude: set[str] = frozenset()) -> list[dict]:
    """People with unique full names (none of `exclude`) and uniformly drawn attributes, split into ID and OOD."""
    check_capacity(pools, config.people, len(exclude))
    rng = random.Random(f"factrecall:{config.seed}:people")
    seen: set[str] = set(exclude)
    people = []
    failed = 0  # draws in a row that gave a name already taken (each fails with probability ≤ ½ in uniform pools)
    while len(people) < config.people:
        first, gender = rng.choice(pools.first_names)
        name = f"{first} {rng.choice(pools.middle_names)} {rng.choice(pools.last_names)}"
        if name in seen:
            failed += 1
            if failed >= SAMPLING_TRIES:
                raise UserError(f"drew {SAMPLING_TRIES} full names in a row that were already taken after "
                                f"{len(people)} of {config.people} people: the name pools (first_names.tsv, "
                                f"middle_names.txt, last_names.txt) repeat values or their names run together; "
                                f"add distinct names or ask for fewer --people")
            continue
        failed = 0
        seen.add(name)
        company, company_city = rng.choice(pools.companies)
        birth = f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(config.first_year, config.last_year)}"
        people.append({
            "person_id": len(people), "name": name, "gender": gender, "split": "",
            "birth_date": birth, "birth_city": rng.choice(pools.cities),
            "university": rng.choice(pools.universities), "major": rng.choice(pools.majors),
            "employer": company, "employer_city": company_city,
        })
    order = list(range(config.people))
    random.Random(f"factrecall:{config.seed}:split").shuffle(order)
    id_people = set(order[:config.id_people])
    for p in people:
        p["split"] = "id" if p["person_id"] in id_people else "ood"
    return people


def _sentence(template: str, subject: str, value: str) -> tuple[str, int]:
    """Render one template; returns the sentence and the offset of `value` in it."""
    if template.startswith("{subject}"):
        subject = subject[0].upper() + subject[1:]
    head, tail = template.split("{value}")
    head = head.replace("{subject}", subject)
    return head + value + tail.replace("{subject}", subject), len(head)


def render_bio(person: dict, pools: Pools, config: DataConfig, rng: random.Random) -> tuple[str, dict[str, list[int]]]:
    """One biography: a sentence per attribute; the name in the first, a pronoun after it."""
    attributes = list(ATTRIBUTES)
    if config.permute:
        rng.shuffle(attributes)
    sentences, spans, offset = [], {}, 0
    for i, attribute in enumerate(attributes):
        templates = pools.templates[attribute][: config.templates_per_attribute or None]
        subject = person["name"] if i == 0 or config.fullname else PRONOUNS[person["gender"]]
        sentence, at = _sentence(rng.choice(templates), subject, person[attribute])
        spans[attribute] = [offset + at, offset + at + len(person[attribute])]
        sentences.append(sentence)
        offset += len(sentence) + 1
    return " ".join(sentences), {a: spans[a] for a in ATTRIBUTES}


def render_qa(person: dict, attribute: str, question_template: str) -> dict:
    question = question_template.replace("{name}", person["name"])
    prompt = f"{question} {ANSWER_CUE}"
    answer = person[attribute]
    return {
        "person_id": person["person_id"], "attribute": attribute, "split": person["split"],
        "prompt": prompt, "answer": answer, "text": f"{prompt} {answer}", "answer_start": len(prompt) + 1,
    }


def vocabulary_fragments(pools: Pools, config: DataConfig) -> list[str]:
    """Every text fragment a generated text can contain; tokenizers are built from these."""
    fragments = {ANSWER_CUE, *PRONOUNS.values(), *(p.capitalize() for p in PRONOUNS.values()), *MONTHS}
    fragments.update(str(d) for d in range(1, 29))
    fragments.update(str(y) for y in range(config.first_year, config.last_year + 1))
    fragments.update(n for n, _ in pools.first_names)
    fragments.update(pools.middle_names + pools.last_names + pools.cities + pools.universities + pools.majors)
    fragments.update(c for pair in pools.companies for c in pair)
    for table in (pools.templates, pools.questions):
        for templates in table.values():
            for t in templates:
                fragments.add(t.replace("{subject}", " ").replace("{value}", " ").replace("{name}", " "))
    return sorted(fragments)


def _holds_other_files(out: Path, config: DataConfig) -> bool:
    """Whether `out` holds anything but its lock file and a dataset generated from `config` (the same files)."""
    files = DatasetLayout(out)
    held = {c for c in out.iterdir() if c != files.lock} if out.is_dir() else set()
    if not held:
        return False
    try:
        meta = read_json(files.meta, "dataset meta")
    except UserError:
        return True
    same = isinstance(meta, dict) and meta.get("generator_version") == GENERATOR_VERSION and \
        meta.get("config") == as_json(asdict(config))
    return not (same and held <= set(files.files))


def generate_dataset(config: DataConfig, out: Path, force: bool = False) -> dict:
    """Write the dataset directory `out` atomically, holding its lock; returns its meta.json content.

    Refused before anything is written: an `out` that is, contains or lies inside the pools, an
    excluded dataset or the factrecall package (`force` included), an `out` holding anything but the
    dataset of this same config (unless `force`), and an `out` another process is writing."""
    config.validate()
    out = Path(out)
    refuse_overlap(out, [("pool directory", config.pools), *(("excluded dataset", e) for e in config.exclude),
                         ("factrecall package", PACKAGE)], "data generate")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    if not force and _holds_other_files(out, config):
        raise UserError(f"--out {out} is not empty; choose another directory or pass --force to replace it")
    pools = load_pools(Path(config.pools) if config.pools else None)
    exclude, excluded_hashes = excluded_names(config)
    people = sample_people(pools, config, exclude)
    bio_rng = random.Random(f"factrecall:{config.seed}:bio")
    question_rng = random.Random(f"factrecall:{config.seed}:questions")
    bios, qa = [], []
    for person in people:
        for k in range(config.bios_per_person):
            text, spans = render_bio(person, pools, config, bio_rng)
            bios.append({"person_id": person["person_id"], "bio_index": k, "split": person["split"],
                         "text": text, "spans": spans})
        for attribute in ATTRIBUTES:
            questions = pools.questions[attribute]
            template = question_rng.choice(questions) if config.question_paraphrases else questions[0]
            qa.append(render_qa(person, attribute, template))
    with directory_lock(out, "data generation") as lock, atomic_directory(out) as tmp:
        files = DatasetLayout(tmp)
        for name, rows in (("people", people), ("bio", bios), ("qa", qa)):
            write_jsonl(files.table(name), rows)
        files.vocabulary.write_text("\n".join(vocabulary_fragments(pools, config)) + "\n", encoding="utf-8")
        n_id = sum(p["split"] == "id" for p in people)
        meta = {
            "generator_version": GENERATOR_VERSION,
            "config": asdict(config),
            "excluded": excluded_hashes,  # content hash of every excluded dataset
            "counts": {"people": len(people), "id_people": n_id, "ood_people": len(people) - n_id,
                       "bios": len(bios), "qa": len(qa)},
            "content_hash": sha256_files(files.data_files),
        }
        write_json(files.meta, meta)
        with contextlib.suppress(OSError):  # the new directory holds the same lock file: still ours once it replaces out
            os.link(lock, files.lock)
    return meta
