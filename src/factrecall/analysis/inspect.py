"""Looking inside for one person (docs/method.md §9, the paper's Fig. 5).

For one person, one attribute and one head (default: the top `shared_size` head), side by side
for the person's first BIO text (read up to the value) and the question about the same attribute:

* the head's attention pattern, tokens labelled subject / relation / other (`analysis/labels.py`),
  and the final token's attention share on each label;
* the logit lens of the final token at every layer (`analysis/readout.py`): top tokens with their
  probabilities, and the gold answer's first token's probability and rank (1 = the top token);
* the head's direct contribution to the final token's logits (its top promoted tokens and its
  logit for the gold token), and every component's direct logit for the gold token.

The "final token" is the one that predicts the answer: the last prompt token of the question and,
in the bio, the token before the value. Output (default `RUN/analysis/inspect/`): `inspect.json`;
`report/inspect_figures.py` and `report/inspect_html.py` draw it (three PNGs and an HTML fragment).
An `out` of your own (`check_out`) lies outside what the inspection reads, and holds nothing or an
earlier inspection unless forced; the run itself is only read then.
"""

from __future__ import annotations

from pathlib import Path

import torch

from factrecall.analysis.declaration import Analysis
from factrecall.analysis.labels import LABELS, View, bio_views, dataset_pools, qa_view
from factrecall.analysis.readout import direct_contributions, logit_lens, read
from factrecall.analysis.run import model_config, run_dataset
from factrecall.analysis.selection import top_shared_head
from factrecall.analysis.weights import analysis_model
from factrecall.artifacts import read_json, write_json
from factrecall.errors import UserError
from factrecall.layout import LOCK, InspectLayout, RunLayout
from factrecall.locks import refuse_overlap
from factrecall.models.adapters import geometry
from factrecall.terms import MODEL_VARIANTS

DEFAULT_ATTRIBUTE = "birth_city"  # when the dataset has it (the generator's); else the dataset's first attribute


def check_head(config, layer: int | None, head: int | None) -> None:
    g = geometry(config)
    if (layer is None) != (head is None):
        raise UserError("give --layer and --head together (or neither for the top shared_size head)")
    if layer is not None and not (0 <= layer < g.n_layers and 0 <= head < g.n_heads):
        raise UserError(f"head L{layer}.H{head} does not exist; layers are 0–{g.n_layers - 1}, "
                        f"heads 0–{g.n_heads - 1}")


def default_attribute(dataset) -> str:
    """`DEFAULT_ATTRIBUTE` when the dataset has it, else its first attribute."""
    return DEFAULT_ATTRIBUTE if DEFAULT_ATTRIBUTE in dataset.attributes else dataset.attributes[0]


def pick_person(dataset, person: int | None, attribute: str | None = None) -> dict:
    """The person with id `person`, or the first OOD person asked about `attribute` (the first person asked
    about it when no OOD person is)."""
    by_id = {p["person_id"]: p for p in dataset.people}
    if person is None:
        asked = {q["person_id"] for q in dataset.qa if attribute is None or q["attribute"] == attribute}
        candidates = [p for p in dataset.people if p["person_id"] in asked] or dataset.people
        return next((p for p in candidates if p["split"] == "ood"), candidates[0])
    if person not in by_id:
        raise UserError(f"person {person} does not exist in {dataset.path}; valid ids are "
                        f"{min(by_id)}–{max(by_id)}")
    return by_id[person]


def label_shares(weights: torch.Tensor, labels: tuple[str, ...]) -> dict[str, float]:
    """Attention mass of one query row [T] on each label."""
    return {label: float(sum(w for w, lab in zip(weights.tolist(), labels) if lab == label)) for label in LABELS}


def _rank(logits: torch.Tensor, token: int) -> int:
    return int((logits > logits[token]).sum()) + 1


def _describe(model, tokenizer, view: View, layer: int, head: int, top: int) -> dict:
    readout = read(model, torch.tensor([view.ids]))
    final, gold = view.final, view.gold[0]
    pattern = readout.attentions[layer, 0, head]  # [T, T]

    def name(i) -> str:  # an embedding row beyond the tokenizer (Pythia-2.8B has 27) has no token
        return tokenizer.convert_ids_to_tokens(int(i)) or f"<id {int(i)}>"

    def ranked(best, key: str) -> list[dict]:  # a topk result as [{token, key: value}]
        return [{"token": name(i), key: float(v)} for v, i in zip(best.values, best.indices)]

    lens = []
    for level, logits in enumerate(logit_lens(model, readout.residual[:, 0, final])):
        p = logits.softmax(-1)
        lens.append({"layer": level, "top": ranked(p.topk(top), "p"), "gold_p": float(p[gold]),
                     "gold_rank": _rank(logits, gold)})
    parts = direct_contributions(model, readout, 0, final)
    mine = parts[f"L{layer}.H{head}"]
    on_gold = sorted(((c, float(v[gold])) for c, v in parts.items()), key=lambda cv: -abs(cv[1]))
    logits = readout.logits[0, final]
    return {
        "form": view.form, "attribute": view.attribute, "text": view.text, "tokens": list(view.tokens),
        "labels": list(view.labels), "final": final, "gold": [name(i) for i in view.gold],
        "predicted": name(logits.argmax()), "correct": int(logits.argmax()) == gold,
        "attention": {"pattern": [[round(float(w), 5) for w in row] for row in pattern],
                      "final_share": label_shares(pattern[final], view.labels)},
        "logit_lens": lens,
        "direct": {"head_top": ranked(mine.topk(top), "logit"),
                   "head_gold_logit": float(mine[gold]), "head_gold_rank": _rank(mine, gold),
                   "components_on_gold": [{"component": c, "logit": v} for c, v in on_gold],
                   "sum_error": float((sum(parts.values()) - logits).abs().max())},
    }


def _is_inspection(path: Path) -> bool:
    try:
        result = read_json(path, "inspection")
    except UserError:
        return False
    return isinstance(result, dict) and {"run", "person", "attribute", "layer", "head", "views"} <= set(result)


def check_out(run: Path, out: Path, force: bool = False) -> None:
    """Refuse an `out` of one's own that is, contains or lies inside the run's dataset, θ_ft or θ_pre (`force`
    included), and one that holds files but no earlier inspection (unless `force`), before anything is written."""
    out, files = Path(out), RunLayout(Path(run))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    refuse_overlap(out, [("dataset", run_dataset(run).path), ("model directory", files.model),
                         ("base model directory", files.base)], "inspect")
    held = [c for c in out.iterdir() if c.name != LOCK] if out.is_dir() else []
    if held and not force and not _is_inspection(InspectLayout(out).json):
        raise UserError(f"--out {out} is not empty and holds no inspection; choose another directory or pass "
                        f"--force to write over its files")


def inspect_run(run: Path, person: int | None = None, layer: int | None = None, head: int | None = None,
                on: str = "finetuned", attribute: str | None = None, out: Path | None = None,
                top: int = 5, device: str = "auto", force: bool = False) -> dict:
    """One person's BIO and QA views through one head; writes and returns inspect.json (in `out`, checked by
    `check_out` with `force`, or in the run).

    `attribute` None: `birth_city` for a generated dataset, else the dataset's first attribute. The BIO view
    comes from the person's first bio that states the attribute, the QA view from their first question on it.
    Called by `factrecall inspect --run DIR [--person ID] [--layer L --head H] [--on grafted|finetuned]
    [--attribute A] [--out DIR]`.
    """
    run = Path(run)
    if on not in MODEL_VARIANTS:
        raise UserError(f"--on {on!r} is not one of {', '.join(MODEL_VARIANTS)}")
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    config = model_config(run)
    check_head(config, layer, head)
    if out is not None:
        check_out(run, out, force)
    dataset = run_dataset(run)
    attribute = default_attribute(dataset) if attribute is None else attribute
    if attribute not in dataset.attributes:
        raise UserError(f"--attribute {attribute!r} is not one of {', '.join(dataset.attributes)}")
    who = pick_person(dataset, person, attribute)
    qa_row = next((q for q in dataset.qa if q["person_id"] == who["person_id"] and q["attribute"] == attribute), None)
    if qa_row is None:
        raise UserError(f"person {who['person_id']} has no question about {attribute} in {dataset.path}; pick another "
                        f"--person or --attribute")
    if layer is None:
        layer, head = top_shared_head(run)
    model, tokenizer = analysis_model(run, on, device)
    pools = dataset_pools(dataset)
    bio_row = next(b for b in dataset.bios if b["person_id"] == who["person_id"] and attribute in b["spans"])
    views = [next(v for v in bio_views(tokenizer, bio_row, who, pools) if v.attribute == attribute),
             qa_view(tokenizer, qa_row, who, pools)]
    result = {"run": str(run), "on": on, "person": {k: who[k] for k in ("person_id", "name", "split")},
              "attribute": attribute, "layer": layer, "head": head,
              "views": [_describe(model, tokenizer, v, layer, head, top) for v in views]}
    files = InspectLayout(Path(out)) if out else RunLayout(run).inspect
    write_json(files.json, result)
    return result


ANALYSIS = Analysis(
    name="inspect", reads=("shared",), run=lambda run, a: inspect_run(run, device=a.device),
    writes=lambda run, a: [run.inspect.json],
    headline=lambda r: f"person {r['person']['person_id']} ({r['person']['split']}), head L{r['layer']}.H{r['head']}")
