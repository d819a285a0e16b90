"""`factrecall study`: the paper's comparison in one command (SPEC §0, §11).

Steps, each skipped when its output already exists for the same config (re-running resumes):
data → Stage run → Mix run (each with its trace) → shared parameters of each → `summary.json`
(accuracies, shared-parameter headline numbers, and the claims checked so far).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from factrecall.analysis.shared import analyze_run
from factrecall.artifacts import as_json, read_json, write_json
from factrecall.claims import c1_accuracy, c2_shared_size, c3_concentration
from factrecall.data.generate import generate_dataset
from factrecall.errors import UserError
from factrecall.presets import data_config, train_config
from factrecall.training.config import STRATEGIES
from factrecall.training.loop import train

def run_study(out: Path, preset: str = "default", force: bool = False, log=print) -> dict:
    out = Path(out)
    data_cfg, train_cfg = data_config(preset), train_config(preset)
    record = as_json({"preset": preset, "data": asdict(data_cfg), "train": asdict(train_cfg)})
    if (out / "study.json").is_file() and not force:
        if read_json(out / "study.json", "study config") != record:
            raise UserError(f"--out {out} holds a study with a different config; use another directory or --force")
    elif out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty and holds no study; choose another directory or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", record)

    t0 = time.perf_counter()
    if force or not (out / "data" / "meta.json").is_file():
        generate_dataset(data_cfg, out / "data")
    log(f"data      {time.perf_counter() - t0:6.1f}s  {out / 'data'}")
    accuracy = {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        cfg = train_config(preset, strategy=strategy)
        result = train(cfg, out / "data", out / "runs" / strategy, resume=not force, force=force)
        first_phase = next(iter(result["phases"].values()))
        accuracy[strategy] = {"qa_id": result["qa_id"]["accuracy"], "qa_ood": result["qa_ood"]["accuracy"],
                              "bio": result["bio"]["accuracy"],
                              "bio_after_bio_training": first_phase["bio"]["accuracy"]}
        a = accuracy[strategy]
        log(f"{strategy:<9} {time.perf_counter() - t0:6.1f}s  ID-QA {a['qa_id']:.3f}  OOD-QA {a['qa_ood']:.3f}  "
            f"BIO {a['bio']:.3f}")
    shared = {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        run = out / "runs" / strategy
        shared[strategy] = analyze_run(run)  # cheap (seconds); recomputed so it always matches the trace
        s = shared[strategy]
        log(f"shared    {time.perf_counter() - t0:6.1f}s  {strategy}: |Shared| {s['shared']} at k={s['k']:g}% "
            f"(enrichment {s['enrichment']:.1f}), Gini heads {s['gini']['heads']:.2f}")
    summary = {
        "preset": preset,
        "accuracy": accuracy,
        "shared": {st: {key: shared[st][key] for key in ("k", "top_bio", "top_qa", "shared", "chance", "enrichment",
                                                         "jaccard", "gini", "top_unit_share")} for st in STRATEGIES},
        "claims": [c1_accuracy(accuracy), c2_shared_size(shared), c3_concentration(shared)],
    }
    write_json(out / "summary.json", summary)
    return summary
