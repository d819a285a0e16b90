"""Do BIO and QA agree? Representations, trace directions and gradients per layer (docs/method.md §10).

* **Representation consistency**: for the same fact in BIO form (the person's first bio that
  states it, read up to the value) and QA form (the question), the cosine similarity of the residual stream x_l
  (l = 0 embeddings … L, before the final norm) at two positions: the *last subject token* (the
  last token of the person's name: its first mention in the bio, its mention in the question)
  and the *answer position* (the token that predicts the value's first token). `matched` pairs a
  person's BIO with the same person's question; `mismatched` pairs it with the next person's
  question about the same attribute, the level any two texts of the same shape reach; `gap` =
  matched − mismatched is what is specific to the fact. `centred`: the same cosines after
  subtracting, per layer, form and attribute, the mean state over the people analysed (a direction
  every state shares no longer counts). `retrieval`: per layer, whether the person's own question
  is the nearest (centred cosine, ties against) of all analysed people's questions about the
  attribute (`top1`), and the reciprocal of its rank (`mrr`).
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

`over_layers`: each measure averaged over layers (1 … L for representations: layer 0 is the token
embedding; every traced layer for the probe), with a bootstrap standard error over people
(`bootstrap_means`: people drawn with replacement, BOOTSTRAP_SEED; the centring mean and the
retrieval candidates stay those of all people analysed).

Written to `RUN/analysis/consistency.json`; running it on the Mix and the Stage run gives C7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.labels import View, batches, by_text, first_bio_and_questions, person_views
from factrecall.analysis.readout import read
from factrecall.analysis.run import load_trace, run_dataset
from factrecall.analysis.weights import analysis_model
from factrecall.artifacts import read_jsonl, write_json
from factrecall.encode import IGNORE, collate, encode_bio, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.models.adapters import tracked_parameter_names
from factrecall.progress import progress
from factrecall.terms import MODEL_VARIANTS
from factrecall.training.observer import cosine, cosine_sums

POSITIONS = ("subject", "answer")
SPLITS = ("all", "id", "ood")
BOOTSTRAP_SEED = 0  # the resamples of people behind every standard error: fixed, so reruns agree


def _states(model, texts: list[tuple[int, ...]], positions: list[list[int]], pad: int, batch_size: int,
            desc: str) -> torch.Tensor:
    """[n, L+1, D]: the residual stream at each (text, position) pair, in order."""
    out = []
    for start, ids, mask in progress(list(batches(texts, pad, batch_size)), desc=desc, leave=False):
        residual = read(model, ids, mask, attentions=False).residual  # [L+1, B, T, D]
        pairs = [(b, p) for b in range(ids.shape[0]) for p in positions[start + b]]
        out.append(residual[:, [b for b, _ in pairs], [p for _, p in pairs]].transpose(0, 1))
    return torch.cat(out)


def _row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n]: the cosine of each row of [n, D] with the same row of [n, D] (0 where either is the zero vector)."""
    return (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)


def _centre(x: torch.Tensor, attribute: torch.Tensor) -> torch.Tensor:
    """[n, D] minus, per row, the mean of the rows of its attribute (`attribute` [n]: 0 … A−1)."""
    groups = int(attribute.max()) + 1
    sums = torch.zeros(groups, x.shape[1], dtype=x.dtype).index_add_(0, attribute, x)
    return x - (sums / torch.bincount(attribute, minlength=groups)[:, None])[attribute]


def pair_measures(bio: torch.Tensor, qa: torch.Tensor, attribute: torch.Tensor, other: torch.Tensor) -> dict:
    """Per pair and layer, {name: [n, L+1] float64 array} from the states of n (person, attribute) pairs.

    `bio`, `qa` [n, L+1, D]: the pair's states in BIO and QA form; `attribute` [n] (0 … A−1); `other` [n]:
    the pair whose question is the mismatched one. Names: matched, mismatched (uncentred cosines),
    centred_matched, centred_mismatched (after subtracting each form's mean state per attribute and
    layer), rank (of the own question among all pairs' questions of the attribute by centred cosine,
    1 = nearest, ties counted against). One layer at a time in float64: identical states centre to 0."""
    names = ("matched", "mismatched", "centred_matched", "centred_mismatched", "rank")
    out = {name: torch.zeros(bio.shape[:2], dtype=torch.float64) for name in names}
    groups = [torch.nonzero(attribute == a).squeeze(1) for a in attribute.unique()]
    for layer in range(bio.shape[1]):
        x, y = bio[:, layer].double(), qa[:, layer].double()
        xc, yc = _centre(x, attribute), _centre(y, attribute)
        out["matched"][:, layer] = _row_cosines(x, y)
        out["mismatched"][:, layer] = _row_cosines(x, y[other])
        out["centred_matched"][:, layer] = _row_cosines(xc, yc)
        out["centred_mismatched"][:, layer] = _row_cosines(xc, yc[other])
        xn, yn = torch.nn.functional.normalize(xc, dim=-1), torch.nn.functional.normalize(yc, dim=-1)
        for rows in groups:
            similarity = xn[rows] @ yn[rows].T  # [m, m]: BIO state × question state
            own = similarity.diagonal()
            out["rank"][rows, layer] = (similarity >= own[:, None]).sum(1).double()
    return {name: value.numpy() for name, value in out.items()}


def bootstrap_means(values: np.ndarray, person: np.ndarray, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[resamples, m]: the column means of `values` [n, m] (NaN = absent) over resampled people.

    `person` [n] names each row's person. A resample draws as many people as there are, uniformly with
    replacement, and weights each row by its person's draws (a column none of the drawn people has: NaN)."""
    _, index = np.unique(person, return_inverse=True)
    people = int(index.max()) + 1
    draws = np.random.default_rng(seed).multinomial(people, np.full(people, 1 / people), size=resamples)
    weights = draws[:, index].astype(np.float64)  # [resamples, n]
    present = ~np.isnan(values)
    total, count = weights @ np.where(present, values, 0.0), weights @ present
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def value_and_se(value: float, resampled: np.ndarray, people: int) -> dict:
    """{value, se}: se is the sample sd of the resampled statistic (None from one person or < 2 finite resamples)."""
    finite = resampled[np.isfinite(resampled)]
    return {"value": float(value), "se": float(finite.std(ddof=1)) if finite.size > 1 and people > 1 else None}


def _split_table(measures: dict, rows: np.ndarray, person: np.ndarray, resamples: int, candidates: int) -> dict:
    """One split's per-layer means over its pairs `rows` (uncentred, centred, retrieval) and, in `over_layers`,
    the judged measures' means over layers 1..L, each {value, se} (se: bootstrap over `person`)."""
    m = {name: v[rows] for name, v in measures.items()}
    per_pair = {"gap": m["matched"] - m["mismatched"], "centred_gap": m["centred_matched"] - m["centred_mismatched"],
                "top1": (m["rank"] == 1).astype(np.float64), "mrr": 1 / m["rank"]}  # each [pairs, L+1]
    over_layers = np.stack([v[:, 1:].mean(1) for v in per_pair.values()], axis=1)  # [pairs, measures]
    resampled, people = bootstrap_means(over_layers, person[rows], resamples), np.unique(person[rows]).size
    mean = {k: v.mean(0).tolist() for k, v in {**m, **per_pair}.items() if k != "rank"}  # over pairs: [L+1] each
    return {"pairs": int(rows.size), "matched": mean["matched"], "mismatched": mean["mismatched"], "gap": mean["gap"],
            "centred": {"matched": mean["centred_matched"], "mismatched": mean["centred_mismatched"],
                        "gap": mean["centred_gap"]},
            "retrieval": {"top1": mean["top1"], "mrr": mean["mrr"], "candidates": candidates},
            "over_layers": {k: value_and_se(over_layers[:, j].mean(), resampled[:, j], people)
                            for j, k in enumerate(per_pair)}}


def representation_consistency(model, tokenizer, dataset, people: int, batch_size: int = 64,
                               bootstrap: int = 200) -> dict:
    """Per position (subject, answer) and split (all, id, ood): `_split_table` of the BIO/QA state pairs.

    Pairs: each (person, attribute) with a BIO view and a QA view that both hold the name before the answer
    position. A person's BIO views of one bio share one forward pass. Retrieval candidates (`candidates`:
    the fewest of an attribute) and the centring mean are all people's, whatever the split."""
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
    attributes = sorted({v.attribute for _, v, _ in keep})
    attribute = torch.tensor([attributes.index(v.attribute) for _, v, _ in keep])
    # the next pair (in `keep` order) with the same attribute gives the mismatched question
    other = torch.zeros(len(keep), dtype=torch.long)
    for a in range(len(attributes)):
        rows = torch.nonzero(attribute == a).squeeze(1)
        other[rows] = rows.roll(-1)
    person = np.array([i for i, _, _ in keep])
    splits = np.array([chosen[i][0]["split"] for i, _, _ in keep])
    candidates = int(torch.bincount(attribute).min())
    result = {}
    for position in POSITIONS:
        pick = (lambda v: v.last_subject) if position == "subject" else (lambda v: v.final)
        bio_states = _states(model, bio_texts, [[pick(keep[r][1]) for r in rows] for rows in groups], pad,
                             batch_size, f"bio {position}")
        qa_states = _states(model, [q.ids for _, _, q in keep], [[pick(q)] for _, _, q in keep], pad, batch_size,
                            f"qa {position}")
        measures = pair_measures(bio_states, qa_states, attribute, other)
        table = {}
        for split in SPLITS:
            rows = np.flatnonzero((splits == split) | (split == "all"))
            if rows.size:
                table[split] = _split_table(measures, rows, person, bootstrap, candidates)
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


def gradient_probe(model, tokenizer, dataset, people: int, bootstrap: int = 200) -> dict:
    """Per split (all, id, ood): mean matched and mismatched cosine of BIO-value and QA-answer gradients per layer,
    and `over_layers[split]["gap"]`: the gap's mean over layers with its bootstrap se over people.

    A person's mismatched cosine pairs their BIO gradient with the next person's QA gradient (the last
    person's BIO has none); a split without a mismatched pair is left out."""
    params = {n: p for n, p in model.named_parameters() if n in set(tracked_parameter_names(model))}
    pad, device = pad_id(tokenizer), next(model.parameters()).device
    first_bio, questions = first_bio_and_questions(dataset)
    chosen = dataset.people[:people]
    matched: list[dict[str, float]] = []  # per person: {layer: cos}
    mismatched: list[dict[str, float]] = []  # per person but the last: their BIO gradient, the next one's QA
    previous_bio = None
    for person in progress(chosen, desc="gradient probe", leave=False):
        bio = encode_bio(tokenizer, first_bio[person["person_id"]])
        batch = collate([bio], pad)
        labels = torch.full_like(batch["labels"], IGNORE)
        for s, e in bio.spans:  # the loss on the six values only: the facts, as the QA answers are
            labels[0, s:e] = batch["input_ids"][0, s:e]
        g_bio = _gradients(model, params, {k: v.to(device) for k, v in {**batch, "labels": labels}.items()})
        encoded = [encode_qa(tokenizer, q) for q in questions[person["person_id"]]]
        g_qa = _gradients(model, params, {k: v.to(device) for k, v in collate(encoded, pad).items()})
        matched.append(_layer_cosines(g_bio, g_qa))
        if previous_bio is not None:
            mismatched.append(_layer_cosines(previous_bio, g_qa))
        previous_bio = g_bio
    model.zero_grad(set_to_none=True)
    layers = list(matched[0])
    cos = {"matched": np.array([[c[k] for k in layers] for c in matched]),  # [people, layers]
           "mismatched": np.array([[c[k] for k in layers] for c in mismatched] + [[np.nan] * len(layers)])}
    split_of = np.array([p["split"] for p in chosen])
    result, over_layers = {}, {}
    for split in SPLITS:
        rows = np.flatnonzero((split_of == split) | (split == "all"))
        if not rows.size or np.isnan(cos["mismatched"][rows]).all():
            continue
        means = {kind: np.nanmean(c[rows], axis=0) for kind, c in cos.items()}  # [layers]
        table = {kind: dict(zip(layers, m.tolist())) for kind, m in means.items()}
        table["gap"] = {k: table["matched"][k] - table["mismatched"][k] for k in layers}
        result[split] = table
        per_person = np.stack([c[rows].mean(1) for c in cos.values()], axis=1)  # [people, 2]: over layers
        resampled = bootstrap_means(per_person, rows, bootstrap)
        gap = float(np.mean(means["matched"]) - np.mean(means["mismatched"]))
        over_layers[split] = {"gap": value_and_se(gap, resampled[:, 0] - resampled[:, 1], rows.size)}
    return {**result, "over_layers": over_layers}


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


def consistency_run(run: Path, people: int = DEFAULT.consistency.people, on: str = "finetuned", batch_size: int = 64,
                    probe_people: int = DEFAULT.consistency.probe_people, device: str = DEFAULT.device,
                    bootstrap: int = DEFAULT.consistency.bootstrap) -> dict:
    """Representation, trace-direction and logged gradient consistency of a run; writes analysis/consistency.json.

    Called by the study's consistency step (and `factrecall consistency --run DIR --people N`). `bootstrap`:
    the resamples of people behind each standard error (`over_layers`).
    """
    run = Path(run)
    if on not in MODEL_VARIANTS:
        raise UserError(f"--on {on!r} is not one of {', '.join(MODEL_VARIANTS)}")
    if probe_people < 2:
        raise UserError(f"--probe-people must be at least 2 (got {probe_people})")
    if bootstrap < 2:
        raise UserError(f"--bootstrap must be at least 2 (got {bootstrap})")
    dataset = run_dataset(run)
    model, tokenizer = analysis_model(run, on, device)
    result = {"run": str(run), "on": on, "people": min(people, len(dataset.people)), "bootstrap": bootstrap,
              "representation": representation_consistency(model, tokenizer, dataset, people, batch_size, bootstrap),
              "trace_direction": trace_direction(run) if RunLayout(run).trace.is_file() else None,
              "gradient": gradient_summary(run),
              "gradient_probe": {"people": min(probe_people, len(dataset.people)),
                                 **gradient_probe(model, tokenizer, dataset, probe_people, bootstrap)}}
    write_json(RunLayout(run).result("consistency"), result)
    return result


def consistency_headline(c: dict) -> dict:
    """A run's consistency.json in a few numbers (all people), each {value, se} or None where not measured:
    `gradient_probe_gap`; per position of `representation`, its `over_layers` (gap, centred_gap, top1, mrr);
    the trace-direction cosine over all traced entries and the mean logged per-step gradient cosine."""
    probe = (c.get("gradient_probe") or {}).get("over_layers") or {}
    return {"gradient_probe_gap": (probe.get("all") or {}).get("gap"),
            "representation": {p: t["all"].get("over_layers") for p, t in c["representation"].items()},
            "trace_direction": (c.get("trace_direction") or {}).get("all"),
            "logged_gradient": c["gradient"].get("all")}


def _line(c: dict) -> str:
    h = consistency_headline(c)
    probe = h["gradient_probe_gap"]
    rep = ", ".join(f"{p} {r['centred_gap']['value']:+.3f} (top-1 {r['top1']['value']:.3f})"
                    for p, r in h["representation"].items() if r)
    return f"gradient probe gap {'n/a' if probe is None else format(probe['value'], '+.3f')}; centred gap {rep}"


ANALYSIS = Analysis(
    name="consistency", reads=(),
    run=lambda run, a: consistency_run(run, people=a.consistency.people, probe_people=a.consistency.probe_people,
                                       device=a.device, bootstrap=a.consistency.bootstrap),
    writes=lambda run, a: [run.result("consistency")], headline=_line, summary=consistency_headline)
