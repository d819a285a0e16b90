"""Forgetting: what a built base knew about its own population, before and after fine-tuning.

A run whose θ_pre came from `factrecall base build` keeps the base's `base.json` in `base/`; its
population is evaluated with θ_pre (`before`) and θ_ft (`after`) on the same people.
"""

from __future__ import annotations

from pathlib import Path

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.artifacts import read_json, write_json
from factrecall.data.dataset import load_dataset
from factrecall.encode import pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.models.loading import load_model


def forgetting_run(run: Path, eval_people: int = DEFAULT.forgetting.eval_people, device: str = "auto") -> dict | None:
    """Write `analysis/forgetting.json` for a run fine-tuned from a built base; None for other bases."""
    run = Path(run)
    files = RunLayout(run)
    if not files.base_record.is_file():
        return None
    record = read_json(files.base_record, "base record")
    population = record["population"]
    dataset = load_dataset(Path(population["path"]))
    if dataset.content_hash != population["content_hash"]:
        raise UserError(f"{population['path']} is not the population the base of {run} was trained on "
                        f"(content hash differs); rebuild the base")
    result = {"base": record["kind"], "population": population["path"], "eval_people": eval_people}
    for when, weights in (("before", files.base), ("after", files.model)):
        model, tokenizer = load_model(weights, device=device)
        sets = {n: s for n, s in eval_sets(tokenizer, dataset, eval_people).items() if s.examples}
        result[when] = {n: r["accuracy"] for n, r in evaluate(model, sets, pad_id(tokenizer)).items()}
    write_json(files.result("forgetting"), result)
    return result


ANALYSIS = Analysis(  # only a run from a built base has a population of its own to forget
    name="forgetting", reads=(), run=lambda run, a: forgetting_run(run, a.forgetting.eval_people, a.device),
    writes=lambda run, a: [run.result("forgetting")],
    headline=lambda f: "base population " + ", ".join(f"{m} {f['before'][m]:.3f} → {f['after'][m]:.3f}"
                                                      for m in f["after"]),
    summary=lambda f: {k: f[k] for k in ("before", "after")}, applies=lambda run: run.base_record.is_file())
