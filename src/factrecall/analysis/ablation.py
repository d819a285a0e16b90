"""Ablation of shared parameters (docs/method.md §6; the paper's Fig. 2b).

Reset a set of entries to their θ_pre values and re-evaluate ID-QA, OOD-QA and BIO:

    θ_ablated = where(mask, θ_pre, θ_ft)          (tensor by tensor; θ_pre and θ_ft never edited)

The model in memory is the only copy of the weights: sets are index masks, θ_pre is read from
its file a tensor at a time, and a reset keeps just the values it overwrote.

Sets compared with the shared set S = Top_BIO ∩ Top_QA at k:
* `random`: the same number of entries in every tensor as S, at random positions (one per seed);
* `top_bio_only` / `top_qa_only`: |S| entries drawn at random from Top_BIO∖S (resp. Top_QA∖S)
  over all tensors (size-matched in total: those sets are not spread over tensors like S).

With `size` (a fraction of the tracked entries), `matched` repeats all four with S = Matched(n), the
n = ⌈size·P⌉ entries of smallest max(r_BIO, r_QA) (`selection.matched`), and Top_T = the entries of
rank ≤ its depth: a set of the same size in every run, so strategies compare at the same |S|.
"""

from __future__ import annotations

import statistics
from pathlib import Path


from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.masks import IndexMask, random_like, sample_from
from factrecall.analysis.run import load_pair, load_trace, run_dataset
from factrecall.analysis.selection import matched, run_selection
from factrecall.analysis.threshold import fraction_count, top_count
from factrecall.analysis.weights import reset_to_base
from factrecall.artifacts import write_json
from factrecall.encode import pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.progress import progress
from factrecall.terms import EVAL_SETS


def _result(acc: dict, reference: dict, size: int) -> dict:
    accuracy = {m: acc[m]["accuracy"] for m in EVAL_SETS}
    return {"size": size, "accuracy": accuracy, "change": {m: accuracy[m] - reference[m] for m in EVAL_SETS}}


def _ablate(model, base, sets: dict, pad: int, reference: dict, shared: IndexMask, top_bio: IndexMask,
            top_qa: IndexMask, seeds: int) -> dict:
    """Accuracy and change (ablated − unablated; negative = lost) after resetting `shared` and its controls (random, Top_BIO∖shared, Top_QA∖shared)."""
    bio_only, qa_only = top_bio - shared, top_qa - shared
    jobs = [("shared", None, lambda: shared)]  # sets are drawn when their turn comes: one in memory at a time
    jobs += [("random", s, lambda s=s: random_like(shared, s)) for s in range(seeds)]
    jobs += [("top_bio_only", s, lambda s=s: sample_from(bio_only, shared.size(), s)) for s in range(seeds)]
    jobs += [("top_qa_only", s, lambda s=s: sample_from(qa_only, shared.size(), s)) for s in range(seeds)]
    raw: dict[str, list[dict]] = {}
    for name, seed, make in progress(jobs, desc="ablate", leave=False):
        masks = make()
        with reset_to_base(model, base, masks):
            acc = evaluate(model, sets, pad)
        raw.setdefault(name, []).append({"seed": seed, **_result(acc, reference, masks.size())})
    result = {"shared": raw["shared"][0]}
    for name in ("random", "top_bio_only", "top_qa_only"):
        runs = raw[name]
        result[name] = {
            "size": runs[0]["size"], "runs": runs,
            "mean_change": {m: statistics.fmean(r["change"][m] for r in runs) for m in EVAL_SETS},
            "std_change": {m: statistics.pstdev([r["change"][m] for r in runs]) for m in EVAL_SETS},
        }
    return result


def ablate_run(run: Path, k: float = DEFAULT.ablation.k, seeds: int = DEFAULT.ablation.seeds,
               eval_people: int = DEFAULT.ablation.eval_people, data: Path | None = None, device: str = DEFAULT.device,
               size: float | None = DEFAULT.ablation.size) -> dict:
    """Write `run/analysis/ablation.json`: accuracy and change for every set at k, and with `size` (a fraction of the
    traced entries; None: none) for the same-size sets `matched` that C4 judges; returns it."""
    run = Path(run)
    top_count(k, 1)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1 (got {seeds})")
    if size is not None:
        fraction_count(size, 1)
    model, tokenizer, base = load_pair(run, "ablation resets entries to it", device)
    trace = load_trace(run)
    dataset = run_dataset(run, data)
    sets, pad = eval_sets(tokenizer, dataset, eval_people), pad_id(tokenizer)
    unablated = evaluate(model, sets, pad)
    reference = {m: r["accuracy"] for m, r in unablated.items()}

    selection = run_selection(run, trace, k)
    at_k = _ablate(model, base, sets, pad, reference, selection.shared, selection.top_bio, selection.top_qa, seeds)
    result = {"k": k, "seeds": seeds, "eval_people": eval_people, "unablated": reference,
              "n": {m: r["n"] for m, r in unablated.items()}, **at_k}
    del selection  # its top sets (8 B per entry) go before the same-size ones are gathered
    if size is not None:
        n = fraction_count(size, trace.entries)
        chosen = matched(trace, [n])[n]
        result["matched"] = {"fraction": size, "size": n, "depth": chosen.depth,
                             **_ablate(model, base, sets, pad, reference, chosen.shared, chosen.top_bio,
                                       chosen.top_qa, seeds)}
    write_json(RunLayout(run).result("ablation"), result)
    return result


def _sets(a: dict) -> dict:
    return {"shared": a["shared"]["change"],
            **{n: a[n]["mean_change"] for n in ("random", "top_bio_only", "top_qa_only")},
            "sizes": {n: a[n]["size"] for n in ("shared", "random", "top_bio_only", "top_qa_only")}}


def _entry(a: dict) -> dict:
    """Drops (mean over seeds) at k and, when measured, for the same-size set `matched`."""
    m = a.get("matched")
    return {"k": a["k"], "unablated": a["unablated"], **_sets(a),
            "matched": m and {"fraction": m["fraction"], "depth": m["depth"], **_sets(m)}}


def _line(d: dict) -> str:
    m = d.get("matched")
    same = (f"; same-size set ({m['size']:,} entries) {m['shared']['change']['qa_ood']:+.3f}, random "
            f"{m['random']['mean_change']['qa_ood']:+.3f}" if m else "")
    return (f"OOD-QA change shared {d['shared']['change']['qa_ood']:+.3f}, random "
            f"{d['random']['mean_change']['qa_ood']:+.3f} (k={d['k']:g}%){same}")


ANALYSIS = Analysis(
    name="ablation", reads=(),
    run=lambda run, a: ablate_run(run, a.ablation.k, a.ablation.seeds, a.ablation.eval_people, device=a.device,
                                  size=a.ablation.size or None),
    writes=lambda run, a: [run.result("ablation")], headline=_line, summary=_entry,
    version=2)  # 2: "change" (ablated − unablated) for what was called "drop"
