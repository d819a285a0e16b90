"""Which tokens of a BIO text or a question name the subject, which the relation (docs/method.md §9).

* **subject** — the tokens of the person's full name (a pronoun standing for the person is "other");
* **relation** — the content words a template or question adds around the subject and the value
  ("was born on", "Which university did … attend?" → born; university, attend), i.e. its literal
  words minus a closed list of function words and punctuation;
* **other** — everything else (BOS, other sentences, the answer cue "Answer:").

For a generated dataset nothing is found by searching for strings in the text: the data record
each value's character span (BIO) and the prompt/answer boundary (QA); the sentence holding a value
is recovered by rendering the dataset's own templates around that span, and the name and the
template words are then known character ranges. A BIO view ends at the token that predicts the
value's first token; a QA view at the last prompt token. Relation words of a BIO view are those of
the value's own sentence (words of other sentences are "other").

Facts of your own have no templates (`dataset_pools` is None), so the labels fall back to the text
(docs/data-format.md, "Token labels"):

* **subject** — every whole-word occurrence of the person's `name` outside the value spans;
* **relation** — in a bio, the words of the value's own sentence (cut at ".", "!" or "?" before a
  space, or a line break, never inside a value or the name) that are neither the name nor a value;
  in a question, the prompt's words other than the name and a closing "Answer:"; function words
  and punctuation are "other" as above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from factrecall.data.dataset import Dataset
from factrecall.data.pools import ANSWER_CUE, PRONOUNS, Pools, load_pools
from factrecall.encode import encode_bio, encode_qa
from factrecall.errors import UserError

LABELS = ("subject", "relation", "other")
FUNCTION_WORDS = frozenset("""
a an the this that these those of in on at to for from by with as into onto about after before during
and or but so was were is are be been being has have had do does did will would can could
what which who whom whose where when why how she he her his him they their it its
""".split())

Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class View:
    """One text as the model reads it, cut where the answer starts.

    `ids` [T] run up to and including the predicting token `final` = T − 1; `labels` [T] is one of
    LABELS per token; `gold` holds the answer's token ids (its first is what `final` predicts).
    """
    form: str  # "bio" | "qa"
    attribute: str
    text: str
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    labels: tuple[str, ...]
    gold: tuple[int, ...]

    @property
    def final(self) -> int:
        return len(self.ids) - 1

    @property
    def last_subject(self) -> int | None:
        """Index of the last subject token, or None when the name is not in the view."""
        return max((i for i, label in enumerate(self.labels) if label == "subject"), default=None)


def dataset_pools(dataset: Dataset) -> Pools | None:
    """The pools (templates, questions) the dataset was generated from; None for facts of your own, whose
    labels come from the text (the fallback in the module docstring)."""
    if not dataset.generated:
        return None
    path = (dataset.meta.get("config") or {}).get("pools")
    return load_pools(Path(path) if path else None)


def _render(template: str, fills: dict[str, str]) -> tuple[str, dict[str, Ranges]]:
    """Render `template`; returns the text and the char ranges of each placeholder and of `literal` text."""
    parts, ranges, at = [], {"literal": []}, 0
    for piece in re.split(r"(\{\w+\})", template):
        text = fills.get(piece[1:-1], piece) if piece.startswith("{") and piece.endswith("}") else piece
        key = piece[1:-1] if piece[1:-1] in fills else "literal"
        ranges.setdefault(key, []).append((at, at + len(text)))
        parts.append(text)
        at += len(text)
    return "".join(parts), ranges


def _shift(ranges: Ranges, by: int) -> Ranges:
    return [(s + by, e + by) for s, e in ranges if e > s]


def _sentence_at(text: str, start: int, person: dict, attribute: str, pools: Pools) -> tuple[Ranges, Ranges] | None:
    """(name, template words) ranges of the template sentence whose value starts at char `start`."""
    pronoun = PRONOUNS.get(person.get("gender"), "")
    for template in pools.templates[attribute]:
        for subject in dict.fromkeys((person["name"], pronoun)):
            fill = subject[:1].upper() + subject[1:] if template.startswith("{subject}") else subject
            sentence, parts = _render(template, {"subject": fill, "value": person[attribute]})
            begin = start - parts["value"][0][0]
            if begin >= 0 and text[begin:begin + len(sentence)] == sentence and text[begin - 1:begin] in ("", " "):
                names = parts["subject"] if subject == person["name"] else []
                return _shift(names, begin), _shift(parts["literal"], begin)
    return None


def _minus(outer: tuple[int, int], cuts: Ranges) -> Ranges:
    """The parts of the char range `outer` outside every range of `cuts`."""
    parts, at = [], outer[0]
    for s, e in sorted(cuts):
        if e <= at or s >= outer[1]:
            continue
        if s > at:
            parts.append((at, s))
        at = max(at, e)
    return parts + ([(at, outer[1])] if at < outer[1] else [])


def name_ranges(text: str, name: str, values: Ranges = ()) -> Ranges:
    """Char ranges of every whole-word occurrence of `name` in `text` that overlaps none of `values`."""
    found = [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]
    return [(s, e) for s, e in found if not any(s < b and a < e for a, b in values)]


def _own_bio_sentences(row: dict, person: dict) -> dict[str, tuple[Ranges, Ranges]]:
    """Without templates: per attribute, (every name occurrence, the words of the value's sentence that are
    neither the name nor a value) char ranges."""
    text = row["text"]
    values = [tuple(span) for span in row["spans"].values()]
    names = name_ranges(text, person["name"], values)
    kept = values + names  # a sentence never ends inside a value or the name ("St. Louis", "Acme Inc.")
    ends = sorted({m.end() for m in re.finditer(r"[.!?](?=\s|$)|\n", text)
                   if not any(a <= m.start() < b for a, b in kept)})
    found = {}
    for attribute, (start, end) in row["spans"].items():
        begin = max((e for e in ends if e <= start), default=0)
        stop = min((e for e in ends if e > end), default=len(text))
        found[attribute] = names, _minus((begin, stop), kept)
    return found


def bio_sentences(row: dict, person: dict, pools: Pools | None) -> dict[str, tuple[Ranges, Ranges]]:
    """Per attribute the bio states, (name, template words) char ranges of the sentence that holds its value
    (`pools` None: the text fallback, `_own_bio_sentences`)."""
    if pools is None:
        return _own_bio_sentences(row, person)
    found = {}
    for attribute in row["spans"]:
        found[attribute] = _sentence_at(row["text"], row["spans"][attribute][0], person, attribute, pools)
        if found[attribute] is None:
            raise UserError(f"bio {row.get('bio_index', 0)} of person {person['person_id']}: no {attribute} template "
                            f"of the dataset's pools renders its sentence; use data from 'factrecall data generate'")
    return found


def qa_ranges(row: dict, person: dict, pools: Pools | None) -> tuple[Ranges, Ranges]:
    """(subject, relation) char ranges in a question (the answer cue is "other"); `pools` None: the text fallback,
    the name's occurrences and the rest of the prompt before a closing "Answer:"."""
    if pools is None:
        prompt = row["prompt"]
        end = len(prompt) - len(ANSWER_CUE) if prompt.endswith(ANSWER_CUE) else len(prompt)
        names = name_ranges(prompt[:end], person["name"])
        return names, _minus((0, end), names)
    for template in pools.questions[row["attribute"]]:
        question, parts = _render(template, {"name": person["name"]})
        if row["prompt"].startswith(question + " "):
            return parts["name"], parts["literal"]
    raise UserError(f"question of person {person['person_id']} ({row['attribute']}): no question template of the "
                    f"dataset's pools renders it; inspect needs data written by 'factrecall data generate'")


def token_labels(offsets: list[tuple[int, int]], text: str, subject: Ranges, relation: Ranges) -> list[str]:
    """One label per token from its character offsets: a token belongs where its first non-space character is,
    and is a relation token when the whole word it lies in is (a subword "he" of "held" is not a function word).
    Space-only tokens are "other"."""
    word_at = {i: m.group() for m in re.finditer(r"[^\W\d_]+", text) for i in range(m.start(), m.end())}
    labels = []
    for s, e in offsets:
        first = s + (len(text[s:e]) - len(text[s:e].lstrip()))
        inside = lambda ranges: first < e and any(a <= first < b for a, b in ranges)  # noqa: E731
        word = word_at.get(first, "") if first < e else ""
        if inside(subject):
            labels.append("subject")
        elif inside(relation) and word and word.lower() not in FUNCTION_WORDS:
            labels.append("relation")
        else:
            labels.append("other")
    return labels


def _offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]


def _view(tokenizer, form: str, attribute: str, text: str, offsets, ids: tuple[int, ...], answer: tuple[int, int],
          subject: Ranges, relation: Ranges) -> View:
    first, end = answer
    labels = token_labels(offsets[:first], text, subject, relation)
    return View(form, attribute, text, tuple(tokenizer.convert_ids_to_tokens(list(ids[:first]))), ids[:first],
                tuple(labels), ids[first:end])


def bio_views(tokenizer, row: dict, person: dict, pools: Pools | None) -> list[View]:
    """One view per value the bio states (its spans, in order), each ending at the token that predicts the value."""
    encoded, offsets = encode_bio(tokenizer, row), _offsets(tokenizer, row["text"])
    sentences = bio_sentences(row, person, pools)
    names = sorted({r for ranges, _ in sentences.values() for r in ranges})  # every mention of the full name
    return [_view(tokenizer, "bio", a, row["text"], offsets, encoded.input_ids, span, names, sentences[a][1])
            for a, span in zip(row["spans"], encoded.spans)]


def qa_view(tokenizer, row: dict, person: dict, pools: Pools | None) -> View:
    """The question, ending at its last prompt token; gold = the answer's tokens (without EOS)."""
    encoded = encode_qa(tokenizer, row)
    first, end = encoded.spans[0]
    subject, relation = qa_ranges(row, person, pools)
    return _view(tokenizer, "qa", row["attribute"], row["text"], _offsets(tokenizer, row["text"]), encoded.input_ids,
                 (first, end), subject, relation)


def first_bio_and_questions(dataset) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """{person_id: their first bio}, {person_id: their questions}."""
    first_bio, questions = {}, {}
    for b in dataset.bios:
        first_bio.setdefault(b["person_id"], b)
    for q in dataset.qa:
        questions.setdefault(q["person_id"], []).append(q)
    return first_bio, questions


def person_views(tokenizer, dataset, people: int) -> list[tuple[dict, list[View], list[View]]]:
    """(person, BIO views, QA views) for the first `people` people (≥ 1), each list in the dataset's attribute order.

    Per attribute: the view of the first bio that states it (a generated bio states all six: the first bio's
    six views) and of the person's first question about it (attributes without a question have no QA view)."""
    if people < 1:
        raise UserError(f"--people must be at least 1 (got {people})")
    pools = dataset_pools(dataset)
    bios: dict[int, list[dict]] = {}
    for b in dataset.bios:
        bios.setdefault(b["person_id"], []).append(b)
    _, questions = first_bio_and_questions(dataset)
    chosen = []
    for p in dataset.people[:people]:
        bio: dict[str, View] = {}
        for row in bios[p["person_id"]]:
            if not set(row["spans"]) <= set(bio):
                bio.update({v.attribute: v for v in bio_views(tokenizer, row, p, pools) if v.attribute not in bio})
        qa: dict[str, View] = {}
        for q in questions[p["person_id"]]:
            if q["attribute"] not in qa:
                qa[q["attribute"]] = qa_view(tokenizer, q, p, pools)
        chosen.append((p, [bio[a] for a in dataset.attributes if a in bio],
                       [qa[a] for a in dataset.attributes if a in qa]))
    return chosen


def by_text(views: list[View]) -> list[list[View]]:
    """`views` grouped by the text they read, in order of first appearance: the views of one bio share one
    forward pass (each view's ids are a prefix of its text's)."""
    groups: dict[str, list[View]] = {}
    for v in views:
        groups.setdefault(v.text, []).append(v)
    return list(groups.values())


def batches(texts: list[tuple[int, ...]], pad: int, size: int):
    """(start, input_ids [B, T], attention_mask [B, T]) over `texts`, right-padded."""
    for start in range(0, len(texts), size):
        chunk = texts[start:start + size]
        width = max(len(t) for t in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, t in enumerate(chunk):
            ids[i, :len(t)] = torch.tensor(t)
            mask[i, :len(t)] = 1
        yield start, ids, mask
