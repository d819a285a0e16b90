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
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from factrecall.artifacts import atomic_directory, sha256_files, write_json, write_jsonl
from factrecall.data.dataset import load_dataset
from factrecall.data.pools import ANSWER_CUE, ATTRIBUTES, MONTHS, PRONOUNS, Pools, load_pools
from factrecall.errors import UserError
from factrecall.layout import DatasetLayout

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
        if self.people < 2:
            raise UserError(f"--people must be at least 2 (got {self.people}): ID and OOD need one person each")
        if not 0.0 < self.qa_train_fraction <= 1.0:
            raise UserError(f"--qa-train-fraction must lie in (0, 1] (got {self.qa_train_fraction}); "
                            f"1 trains every person's QA (a skill base's population)")
        if self.bios_per_person < 1:
            raise UserError(f"--bios-per-person must be at least 1 (got {self.bios_per_person})")
        if self.templates_per_attribute < 0:
            raise UserError(f"--templates-per-attribute must be 0 (all) or more (got {self.templates_per_attribute})")
        if self.first_year > self.last_year:
            raise UserError(f"first_year {self.first_year} is after last_year {self.last_year}")


def excluded_names(config: DataConfig) -> tuple[set[str], dict[str, str]]:
    """Full names of the people in `config.exclude`'s datasets, and each dataset's content hash."""
    names, hashes = set(), {}
    for path in config.exclude:
        other = load_dataset(Path(path))
        names.update(p["name"] for p in other.people)
        hashes[str(path)] = other.content_hash
    return names, hashes


def sample_people(pools: Pools, config: DataConfig, exclude: set[str] = frozenset()) -> list[dict]:
    """People with unique full names (none of `exclude`) and uniformly drawn attributes, split into ID and OOD."""
    capacity = len(pools.first_names) * len(pools.middle_names) * len(pools.last_names) - len(exclude)
    if config.people > capacity // 2:
        raise UserError(f"--people {config.people} is too many for these name pools (capacity {capacity}); add names")
    rng = random.Random(f"factrecall:{config.seed}:people")
    seen: set[str] = set(exclude)
    people = []
    while len(people) < config.people:
        first, gender = rng.choice(pools.first_names)
        name = f"{first} {rng.choice(pools.middle_names)} {rng.choice(pools.last_names)}"
        if name in seen:
            continue
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


def generate_dataset(config: DataConfig, out: Path) -> dict:
    """Write the dataset directory `out` atomically; returns its meta.json content."""
    config.validate()
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
    with atomic_directory(Path(out)) as tmp:
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
    return meta
