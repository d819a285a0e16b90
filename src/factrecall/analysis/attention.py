"""Where the final token looks, over many people (docs/method.md §9: "subject linking", "relation focusing").

For each of the first `people` people: their first bio, read up to each of the six values, and
their six questions (facts of your own: per attribute, the first bio that states it and the first
question about it; `analysis/labels.py person_views`). At the token that predicts the answer (the
token before the value; the last prompt token), every head's attention is split by token label
(`analysis/labels.py`):

    share_label[l, h] = Σ over key tokens k labelled `label` of attention[l, h, final, k]

averaged over all (person, attribute) views of a form. Subject, relation and other sum to 1.
Written to `RUN/analysis/attention.json` with per-split (id, ood) tables and the top
`shared_size` head's numbers; running it on the Mix and the Stage run gives the comparison.
"""

from __future__ import annotations

from pathlib import Path

import torch

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.labels import LABELS, batches, by_text, person_views
from factrecall.analysis.readout import read
from factrecall.analysis.run import model_config, run_dataset
from factrecall.analysis.selection import top_shared_head
from factrecall.analysis.weights import analysis_model
from factrecall.artifacts import write_json
from factrecall.encode import pad_id
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.models.adapters import geometry
from factrecall.progress import progress
from factrecall.terms import MODEL_VARIANTS, TASKS


def final_shares(model, texts: list[tuple[int, ...]], queries: list[list[tuple[int, tuple[str, ...]]]], pad: int,
                 batch_size: int, desc: str) -> torch.Tensor:
    """[len(views), 3, L, H]: per (text, query) pair its attention shares on LABELS at the query position.

    `queries[i]` lists (position, labels of the tokens up to it) for text i; the pairs come out in order.
    """
    index = {label: i for i, label in enumerate(LABELS)}
    out = []
    for start, ids, mask in progress(list(batches(texts, pad, batch_size)), desc=desc, leave=False):
        attn = read(model, ids, mask).attentions  # [L, B, H, T, T]
        pairs = [(b, position, labels) for b in range(ids.shape[0]) for position, labels in queries[start + b]]
        onehot = torch.zeros(len(pairs), ids.shape[1], len(LABELS))  # [Q, keys, labels]; keys past a query stay 0
        for q, (_, _, labels) in enumerate(pairs):
            onehot[q, torch.arange(len(labels)), torch.tensor([index[x] for x in labels])] = 1.0
        rows = attn[:, [b for b, _, _ in pairs], :, [p for _, p, _ in pairs], :]  # [Q, L, H, keys]
        out.append(torch.einsum("qlhk,qkc->qclh", rows, onehot))
    return torch.cat(out)


def _table(shares: torch.Tensor) -> dict[str, list]:
    mean = shares.mean(0)  # [3, L, H]
    return {label: mean[i].tolist() for i, label in enumerate(LABELS)}


def attention_stats(run: Path, people: int = DEFAULT.attention.people, on: str = "finetuned", batch_size: int = 64,
                    device: str = "auto") -> dict:
    """Final-token attention shares on subject / relation / other per head, BIO and QA; writes analysis/attention.json.

    Called by the study's inspection step (and `factrecall inspect --run DIR --aggregate N`).
    """
    run = Path(run)
    if on not in MODEL_VARIANTS:
        raise UserError(f"--on {on!r} is not one of {', '.join(MODEL_VARIANTS)}")
    config = model_config(run)
    dataset = run_dataset(run)
    model, tokenizer = analysis_model(run, on, device)
    chosen = person_views(tokenizer, dataset, people)
    pad = pad_id(tokenizer)
    split_of: dict[str, list[str]] = {}
    shares = {}
    for form in TASKS:
        texts, queries, splits = [], [], []
        for person, bio, qa in chosen:
            for group in (by_text(bio) if form == "bio" else [[v] for v in qa]):  # one text per bio, per question
                texts.append(max((v.ids for v in group), key=len))  # each view's ids are a prefix of its text
                queries.append([(v.final, v.labels) for v in group])
                splits += [person["split"]] * len(group)
        shares[form] = final_shares(model, texts, queries, pad, batch_size, f"attention {form}")
        split_of[form] = splits
    g = geometry(config)
    result = {"run": str(run), "on": on, "people": len(chosen), "layers": g.n_layers, "heads": g.n_heads,
              "views": {form: int(shares[form].shape[0]) for form in TASKS},
              "shares": {form: _table(shares[form]) for form in TASKS}, "by_split": {}}
    for split in ("id", "ood"):
        keep = {form: torch.tensor([s == split for s in split_of[form]]) for form in TASKS}
        if all(k.any() for k in keep.values()):
            result["by_split"][split] = {form: _table(shares[form][keep[form]]) for form in TASKS}
    files = RunLayout(run)
    if files.shared_mask.is_file() or files.trace.is_file():
        layer, head = top_shared_head(run)
        result["top_shared_head"] = {"layer": layer, "head": head, **{
            form: {label: result["shares"][form][label][layer][head] for label in LABELS} for form in TASKS}}
    write_json(files.result("attention"), result)
    return result


def _line(a: dict) -> str:
    top = a.get("top_shared_head")
    if not top:
        return "attention shares per head"
    return (f"top shared head L{top['layer']}.H{top['head']}: relation share BIO {top['bio']['relation']:.2f} "
            f"QA {top['qa']['relation']:.2f}, subject share BIO {top['bio']['subject']:.2f} QA {top['qa']['subject']:.2f}")


def _entry(a: dict) -> dict:
    """Mean over heads of the final token's attention share per label and form, and the top shared head's."""
    mean = {form: {label: sum(map(sum, rows)) / (a["layers"] * a["heads"]) for label, rows in table.items()}
            for form, table in a["shares"].items()}
    return {"mean_over_heads": mean, "top_shared_head": a.get("top_shared_head")}


ANALYSIS = Analysis(
    name="attention", reads=("shared",),
    run=lambda run, a: attention_stats(run, people=a.attention.people, device=a.device),
    writes=lambda run, a: [run.result("attention")], headline=_line, summary=_entry)
