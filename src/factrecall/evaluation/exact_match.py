"""Exact match of the greedy answer, one teacher-forced forward pass per batch.

Under greedy decoding the model produces the gold answer exactly when, with the gold tokens fed in,
every gold answer token is the argmax at its position (whether it then stops is a generation
detail, not scored). So instead of generating token by token we run one forward pass over
`prompt + answer + EOS` and compare the argmax with the gold tokens inside each scored span. For a BIO text each attribute's value is a
span, completed from the bio's own prefix (no EOS after a value).

Only the positions that predict a scored token go through the unembedding: a forward hook on the
base model hands the model's head the last hidden state gathered at those positions ([1, N, D]
instead of [B, T, D]), so a batch never holds the [B, T, V] logits (16.8 GB in float32 for 256
bios of 128 tokens at Llama-3's 128,256-token vocabulary). The head runs inside the model's own
forward, where FSDP2 has gathered its sharded weights. No K/V cache is kept (`use_cache=False`).

Result per set (`qa_id`, `qa_ood`, `bio`): `accuracy`, `first_token_accuracy`, `n`, and
`per_attribute` with the same two accuracies.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from factrecall.data.dataset import Dataset
from factrecall.encode import Encoded, collate, encode_bio, encode_qa
from factrecall.errors import UserError
from factrecall.models.hooks import temporary_hooks
from factrecall.terms import EVAL_SETS


@torch.no_grad()
def span_hits(model, examples: list[Encoded], pad: int, batch_size: int = 256) -> list[list[tuple[bool, bool]]]:
    """For each example and each of its spans: (all tokens argmax, first token argmax)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # less padding
    by_index = {}
    scored: dict[str, list[int]] = {}

    def gather(module, args, output):  # last hidden state [B, T, D] → the predicting positions [1, N, D]
        output.last_hidden_state = output.last_hidden_state[scored["rows"], scored["cols"]].unsqueeze(0)
        return output

    with temporary_hooks([(model.base_model, "forward", gather)]):
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start:start + batch_size]]
            batch = collate(chunk, pad)
            # the position before each scored token predicts it
            scored["rows"] = [b for b, e in enumerate(chunk) for s, end in e.spans for _ in range(s, end)]
            scored["cols"] = [t - 1 for e in chunk for s, end in e.spans for t in range(s, end)]
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                           use_cache=False).logits  # [1, N, V]
            _score(chunk, batch["input_ids"], logits[0].argmax(-1).tolist(), order[start:], by_index)
    hits = [by_index[i] for i in range(len(examples))]
    model.train(was_training)
    return hits


def _score(chunk: list[Encoded], input_ids: torch.Tensor, guesses: list[int], indices: list[int], by_index: dict
           ) -> None:
    """(all tokens right, first token right) per span of each example of `chunk`, from the guesses at the
    scored positions in order; stored under the example's index."""
    it = iter(guesses)
    for b, example in enumerate(chunk):
        ids = input_ids[b].tolist()
        result = []
        for s, e in example.spans:
            correct = [next(it) == ids[t] for t in range(s, e)]
            result.append((all(correct), correct[0]))
        by_index[indices[b]] = result


def _summary(pairs: list[tuple[str, tuple[bool, bool]]], order: tuple[str, ...] = ()) -> dict:
    """Both accuracies over all pairs and per attribute (in `order`, then any other in the order met)."""
    by_attribute: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for attribute, hit in pairs:
        by_attribute[attribute].append(hit)

    def rates(hs: list[tuple[bool, bool]]) -> dict:
        n = max(len(hs), 1)
        return {"accuracy": sum(h[0] for h in hs) / n, "first_token_accuracy": sum(h[1] for h in hs) / n,
                "n": len(hs)}

    summary = rates([h for _, h in pairs])
    summary["per_attribute"] = {a: rates(by_attribute[a]) for a in dict.fromkeys([*order, *by_attribute])
                                if a in by_attribute}
    return summary


@dataclass(frozen=True)
class EvalSet:
    """Encoded examples of one evaluation set and the attribute each scored span belongs to."""
    examples: list[Encoded]
    attributes: list[tuple[str, ...]]  # per example, the attribute of each span
    order: tuple[str, ...] = ()  # the dataset's attributes: the order of `per_attribute`


def eval_sets(tokenizer, dataset: Dataset, max_people: int = 0) -> dict[str, EvalSet]:
    """`qa_id`, `qa_ood` and `bio`; `max_people` > 0 keeps only the first people of each split."""
    if isinstance(max_people, bool) or not isinstance(max_people, int) or max_people < 0:
        raise UserError(f"--eval-people must be 0 (all) or more (got {max_people!r})")
    keep = None
    if max_people:
        keep = set()
        for split in ("id", "ood"):
            keep.update([p["person_id"] for p in dataset.people if p["split"] == split][:max_people])
    sets = {}
    for split in ("id", "ood"):
        rows = [q for q in dataset.qa_split(split) if keep is None or q["person_id"] in keep]
        sets[f"qa_{split}"] = EvalSet([encode_qa(tokenizer, q) for q in rows], [(q["attribute"],) for q in rows],
                                      dataset.attributes)
    bios = [b for b in dataset.bios if keep is None or b["person_id"] in keep]
    sets["bio"] = EvalSet([encode_bio(tokenizer, b) for b in bios], [tuple(b["spans"]) for b in bios],
                          dataset.attributes)
    return sets


def evaluate(model, sets: dict[str, EvalSet], pad: int, batch_size: int = 256) -> dict:
    """Accuracy summary of each evaluation set."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    result = {}
    for name, s in sets.items():
        hits = span_hits(model, s.examples, pad, batch_size)
        result[name] = _summary([(a, h) for attrs, hs in zip(s.attributes, hits) for a, h in zip(attrs, hs)],
                                s.order)
    return result


def accuracy_line(result: dict) -> str:
    """`evaluate`'s result (or a run's eval.json) in one line: the accuracy of each evaluation set."""
    return "  ".join(f"{name} {result[name]['accuracy']:.3f}" for name in EVAL_SETS if name in result)
