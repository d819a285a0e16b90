"""Texts to token ids, with the spans that are trained and scored.

A QA example is `prompt + " " + answer` followed by EOS; its score covers the answer tokens (a
greedy answer is exact when every one of them is the argmax) and so, by default, does its loss
(`qa_loss = "answer"`). `qa_loss = "answer_eos"` also trains the EOS, whose gradient points the same
way for every person and so adds up in the trace (docs/method.md §3). A BIO example
is the biography followed by EOS; its loss covers every token and it is scored once per value it
states (its `spans`, in their order: `load_dataset` puts them in the dataset's attribute order).
Spans come from the tokenizer's character offsets, and each span is checked to cover exactly its
value, so a tokenizer that merges a value with its neighbours is refused; so is a value at the very
start of a text when the tokenizer adds no BOS (no token would predict it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factrecall.errors import UserError

IGNORE = -100  # label of a position that is not trained


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]  # token ranges [start, end) scored; QA: (answer,), BIO: one per value
    loss_from: int  # first token index whose prediction is trained
    loss_to: int | None = None  # end (exclusive) of the trained tokens; None = to the end

    @property
    def n_trained(self) -> int:
        """Tokens whose prediction the loss covers."""
        return (len(self.input_ids) if self.loss_to is None else self.loss_to) - self.loss_from


def _token_spans(tokenizer, text: str, char_ranges: list[tuple[int, int]], where: str
                 ) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` (with the special tokens the tokenizer puts before it, e.g. BOS; not those after it,
    e.g. an EOS it appends) and the token range of each char range.

    A token's offsets may include its leading space ("Ġname", "▁name") or, trimmed, leave a space-only token
    empty; a range's tokens are those from the first to the last one holding a character of it.
    """
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    n = len(enc["input_ids"])
    while n and enc["special_tokens_mask"][n - 1]:
        n -= 1
    ids, offsets = enc["input_ids"][:n], enc["offset_mapping"][:n]
    spans = []
    for char_start, char_end in char_ranges:
        value = text[char_start:char_end]
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and e > char_start and s < char_end]
        if not inside:
            raise UserError(f"{where}: the tokenizer produced no token for {value!r}")
        first, last = inside[0], inside[-1]
        covered = text[offsets[first][0]:offsets[last][1]].strip()
        if covered != value:
            raise UserError(f"{where}: the tokenizer merges {value!r} with its neighbours "
                            f"(tokens cover {covered!r}); use a tokenizer that splits at spaces and punctuation")
        if first == 0:
            raise UserError(f"{where}: {value!r} is the text's first token and the tokenizer adds no BOS, so no "
                            f"token predicts it; put words before it")
        spans.append((first, last + 1))
    return ids, spans


def _eos(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; set eos_token in its tokenizer_config.json")
    return tokenizer.eos_token_id


def encode_qa(tokenizer, row: dict, train_eos: bool = False) -> Encoded:
    """prompt + answer + EOS; the answer tokens are scored and trained (and the EOS too with `train_eos`)."""
    start = row["answer_start"]
    ids, [(first, end)] = _token_spans(tokenizer, row["text"], [(start, start + len(row["answer"]))],
                                       f"question of person {row['person_id']} ({row['attribute']})")
    ids = ids[:end] + [_eos(tokenizer)]
    return Encoded(tuple(ids), ((first, end),), loss_from=first, loss_to=None if train_eos else end)


def encode_bio(tokenizer, row: dict) -> Encoded:
    """The bio + EOS; one scored span per entry of `row["spans"]`, in its order."""
    ranges = [tuple(span) for span in row["spans"].values()]
    ids, spans = _token_spans(tokenizer, row["text"], ranges, f"bio of person {row['person_id']}")
    return Encoded(tuple(ids) + (_eos(tokenizer),), tuple(spans), loss_from=1)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (IGNORE outside the trained part), each [B, T]."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[b, :n] = torch.tensor(e.input_ids)
        attention_mask[b, :n] = 1
        stop = n if e.loss_to is None else e.loss_to
        labels[b, e.loss_from:stop] = input_ids[b, e.loss_from:stop]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos(tokenizer)
