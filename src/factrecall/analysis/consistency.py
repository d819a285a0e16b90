"""Do BIO and QA agree? Representations, trace directions and gradients per layer (docs/method.md §10).

* **Representation consistency**: for the same fact in BIO form (the person's first bio that
  states it, read up to the value) and QA form (the question), the cosine similarity of the residual stream x_l
  (l = 0 embeddings … L, before the final norm) at two positions: the *last subject token* (the
  last token of the person's name: its first mention in the bio, its mention in the question)
  and the *answer position* (the token that predicts the value's first token). `matched` pairs a
  person's BIO with the same person's question; `mismatched` pairs it with the next person's
  question about the same attribute, the level any two texts of the same shape reach; `gap` =
  matched − mismatched is what is specific to the fact.
* **Trace direction**: per layer, cos(Δ_BIO, Δ_QA) over the layer's traced entries (and over all):
  do the accumulated BIO and QA updates point the same way? Defined for Stage and Mix alike.
* **Gradient consistency** (logged during training with `grad_consistency`): per layer, the cosine
  between the BIO and the QA gradient of the same or nearby optimizer steps (`training/consistency.py`),
  summarised from `metrics.jsonl`. Stage never has both tasks in one phase, so it logs none.
  Those gradients come from different people, so they are nearly orthogonal; the **gradient probe**
  asks about the same facts instead: at the analysed model, per person, the cosine between the
  gradient of the loss on the values in the person's first bio (six in generated data) and the
  gradient of the answer loss on the person's questions, per layer over the traced tensors; `mismatched` pairs a
  person's BIO gradient with the next person's QA gradient. Defined for Stage and Mix alike.

Written to `RUN/analysis/consistency.json`; running it on the Mix and the Stage run gives C7.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from factrecall.analysis.labels import View, batches, by_text, first_bio_and_questions, person_views
from factrecall.analysis.readout import read
from factrecall.analysis.run import load_trace, run_dataset
from factrecall.analysis.weights import analysis_model
from factrecall.artifacts import read_jsonl, write_json
from factrecall.encode import IGNORE, collate, encode_bio, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.models.adapters import tracked_parameter_names
from factrecall.terms import MODEL_VARIANTS
from factrecall.training.observer import cosine, cosine_sums

POSITIONS = ("subject", "answer")


def _states(model, texts: list[tuple[int, ...]], positions: list[list[int]], pad: int, batch_size: int,
            desc: str) -> torch.Tensor:
    """[n, L+1, D]: the residual stream at each (text, position) pair, in order."""
    out = []
    for start, ids, mask in tqdm(list(batches(texts, pad, batch_size)), desc=desc, leave=False):
        residual = read(model, ids, mask, attentions=False).residual  # [L+1, B, T, D]
        pairs = [(b, p) for b in range(ids.shape[0]) for p in positions[start + b]]
        out.append(residual[:, [b for b, _ in pairs], [p for _, p in pairs]].transpose(0, 1))
    return torch.cat(out)


def _cosines(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Mean over pairs of the per-layer cosine of [n, L+1, D] with [n, L+1, D] → [L+1]."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean(0).tolist()


def representation_consistency(model, tokenizer, dataset, people: int, batch_size: int = 64) -> dict:
    """Per position (subject, answer) and split (all, id, ood): matched, mismatched and gap per layer.

    Pairs: each (person, attribute) with a BIO view and a QA view that both hold the name before the answer
    position. A person's BIO views of one bio share one forward pass."""
    chosen = person_views(tokenizer, dataset, people)
    if len(chosen) < 2:
        raise UserError(f"--people must be at least 2 for representation consistency (got {people})")
    pad = pad_id(tokenizer)
    # (person index, BIO view, QA view), grouped by bio text: the order of the BIO states
    keep: list[tuple[int, View, View]] = []
    bio_texts: list[tuple[int, ...]] = []
    groups: list[list[int]] = []  # per bio text, its rows of `keep`
    for i, (_, bio, qa) in enumerate(chosen):
        question = {v.attribute: v for v in qa if v.last_subject is not None}
        usable = [v for v in bio if v.last_subject is not None and v.attribute in question]
        for group in by_text(usable):
            bio_texts.append(max((v.ids for v in group), key=len))
            groups.append([len(keep) + j for j in range(len(group))])
            keep += [(i, v, question[v.attribute]) for v in group]
    if not keep:
        raise UserError(f"no view of the first {people} people holds the name before the answer in both its bio and "
                        f"its question; representation consistency needs some (docs/data-format.md)")
    result = {}
    for position in POSITIONS:
        pick = (lambda v: v.last_subject) if position == "subject" else (lambda v: v.final)
        bio_states = _states(model, bio_texts, [[pick(keep[r][1]) for r in rows] for rows in groups], pad,
                             batch_size, f"bio {position}")
        qa_states = _states(model, [q.ids for _, _, q in keep], [[pick(q)] for _, _, q in keep], pad, batch_size,
                            f"qa {position}")
        # the next pair (in `keep` order) with the same attribute gives the mismatched question
        by_attribute: dict[str, list[int]] = {}
        for row, (_, v, _) in enumerate(keep):
            by_attribute.setdefault(v.attribute, []).append(row)
        other = [0] * len(keep)
        for rows in by_attribute.values():
            for j, row in enumerate(rows):
                other[row] = rows[(j + 1) % len(rows)]
        splits = [chosen[i][0]["split"] for i, _, _ in keep]
        table = {}
        for split in ("all", "id", "ood"):
            rows = [r for r, s in enumerate(splits) if split == "all" or s == split]
            if not rows:
                continue
            matched = _cosines(bio_states[rows], qa_states[rows])
            mismatched = _cosines(bio_states[rows], qa_states[[other[r] for r in rows]])
            table[split] = {"pairs": len(rows), "matched": matched, "mismatched": mismatched,
                            "gap": [m - x for m, x in zip(matched, mismatched)]}
        result[position] = table
    return result


def trace_direction(run: Path) -> dict:
    """cos(Δ_BIO, Δ_QA) per layer (`other` for traced tensors outside the blocks) and over all traced entries."""
    trace = load_trace(run)
    sums = cosine_sums((name, trace.delta("bio", name), trace.delta("qa", name)) for name in trace.names)
    total = [sum(v[i] for v in sums.values()) for i in range(3)]
    layers = sorted(sums, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))
    return {"by_layer": {k: cosine(*sums[k]) for k in layers}, "all": cosine(*total)}


def _gradients(model, params: dict[str, torch.nn.Parameter], batch: dict) -> dict[str, torch.Tensor]:
    """{name: gradient of the batch's token loss} over the traced tensors: the `.grad` tensors themselves
    (the next backward allocates new ones), so a probe holds at most three gradients of the model."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model(**batch).loss.backward()
    return {name: p.grad for name, p in params.items()}


def _layer_cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer, the cosine of the two gradients over the layer's traced tensors (0 for a zero gradient)."""
    return {layer: cosine(*v) or 0.0 for layer, v in cosine_sums((n, a[n], b[n]) for n in a).items()}


def gradient_probe(model, tokenizer, dataset, people: int) -> dict:
    """Per split (all, id, ood): mean matched and mismatched cosine of BIO-value and QA-answer gradients per layer."""
    params = {n: p for n, p in model.named_parameters() if n in set(tracked_parameter_names(model))}
    pad, device = pad_id(tokenizer), next(model.parameters()).device
    first_bio, questions = first_bio_and_questions(dataset)
    chosen = dataset.people[:people]
    rows: list[tuple[str, str, dict[str, float]]] = []  # (split, matched|mismatched, {layer: cos})
    previous_bio = None
    for person in tqdm(chosen, desc="gradient probe", leave=False):
        bio = encode_bio(tokenizer, first_bio[person["person_id"]])
        batch = collate([bio], pad)
        labels = torch.full_like(batch["labels"], IGNORE)
        for s, e in bio.spans:  # the loss on the six values only: the facts, as the QA answers are
            labels[0, s:e] = batch["input_ids"][0, s:e]
        g_bio = _gradients(model, params, {k: v.to(device) for k, v in {**batch, "labels": labels}.items()})
        encoded = [encode_qa(tokenizer, q) for q in questions[person["person_id"]]]
        g_qa = _gradients(model, params, {k: v.to(device) for k, v in collate(encoded, pad).items()})
        rows.append((person["split"], "matched", _layer_cosines(g_bio, g_qa)))
        if previous_bio is not None:
            rows.append((previous_bio[0], "mismatched", _layer_cosines(previous_bio[1], g_qa)))
        previous_bio = (person["split"], g_bio)
    model.zero_grad(set_to_none=True)
    result = {}
    for split in ("all", "id", "ood"):
        table = {}
        for kind in ("matched", "mismatched"):
            values = [v for s, k, v in rows if k == kind and split in ("all", s)]
            if values:
                table[kind] = {layer: sum(v[layer] for v in values) / len(values) for layer in values[0]}
        if len(table) == 2:
            table["gap"] = {k: table["matched"][k] - table["mismatched"][k] for k in table["matched"]}
            result[split] = table
    return result


def gradient_summary(run: Path) -> dict:
    """Mean of the per-layer gradient cosines logged in `metrics.jsonl` (rows with `grad_cosine`)."""
    path = RunLayout(Path(run)).metrics
    rows = [r["grad_cosine"] for r in (read_jsonl(path) if path.is_file() else []) if r.get("grad_cosine")]
    if not rows:
        return {"logged": 0, "note": "no BIO and QA gradients of one phase were logged; train with "
                                     "grad_consistency > 0 (Stage trains BIO and QA in separate phases)"}
    keys = list(rows[0]["by_layer"])
    return {"logged": len(rows), "mean_lag": sum(r["lag"] for r in rows) / len(rows),
            "same_step": sum(r["lag"] == 0 for r in rows),
            "by_layer": {k: sum(r["by_layer"][k] for r in rows) / len(rows) for k in keys},
            "all": sum(r["all"] for r in rows) / len(rows)}


def consistency_run(run: Path, people: int = 500, on: str = "finetuned", batch_size: int = 64,
                    probe_people: int = 100, device: str = "auto") -> dict:
    """Representation, trace-direction and logged gradient consistency of a run; writes analysis/consistency.json.

    Called by the study's consistency step (and `factrecall consistency --run DIR --people N`).
    """
    run = Path(run)
    if on not in MODEL_VARIANTS:
        raise UserError(f"--on {on!r} is not one of {', '.join(MODEL_VARIANTS)}")
    if probe_people < 2:
        raise UserError(f"--probe-people must be at least 2 (got {probe_people})")
    dataset = run_dataset(run)
    model, tokenizer = analysis_model(run, on, device)
    result = {"run": str(run), "on": on, "people": min(people, len(dataset.people)),
              "representation": representation_consistency(model, tokenizer, dataset, people, batch_size),
              "trace_direction": trace_direction(run) if RunLayout(run).trace.is_file() else None,
              "gradient": gradient_summary(run),
              "gradient_probe": {"people": min(probe_people, len(dataset.people)),
                                 **gradient_probe(model, tokenizer, dataset, probe_people)}}
    write_json(RunLayout(run).result("consistency"), result)
    return result
