"""`factrecall study`: the paper's comparison in one command (SPEC §0, §11).

Steps, each skipped when its output already exists for the same config (re-running resumes):
data → Stage run → Mix run (each with its trace) → shared parameters of each → ablation of each
→ `summary.json` (accuracies, headline numbers of every step, and the claims checked so far).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.shared import analyze_run
from factrecall.artifacts import as_json, read_json, write_json
from factrecall.claims import c1_accuracy, c2_shared_size, c3_concentration, c4_ablation
from factrecall.data.generate import generate_dataset
from factrecall.errors import UserError
from factrecall.presets import analysis_config, data_config, train_config
from factrecall.training.config import STRATEGIES
from factrecall.training.loop import train

HEADLINE_SHARED = ("k", "top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")


def _train(out: Path, preset: str, strategy: str, force: bool) -> dict:
    """Train (or resume, or reuse) one strategy's run; its accuracies for the summary."""
    result = train(train_config(preset, strategy=strategy), out / "data", out / "runs" / strategy,
                   resume=not force, force=force)
    first_phase = next(iter(result["phases"].values()))
    return {"qa_id": result["qa_id"]["accuracy"], "qa_ood": result["qa_ood"]["accuracy"],
            "bio": result["bio"]["accuracy"], "bio_after_bio_training": first_phase["bio"]["accuracy"]}


def _ablate(run: Path, cfg) -> dict:
    """The run's ablation.json, recomputed unless it was made with the same settings."""
    path = run / "analysis" / "ablation.json"
    done = read_json(path, "ablation") if path.is_file() else None
    same = done is not None and (done["k"], done["seeds"], done["eval_people"]) == (
        cfg.ablation_k, cfg.ablation_seeds, cfg.ablation_eval_people)
    return done if same else ablate_run(run, cfg.ablation_k, cfg.ablation_seeds, cfg.ablation_eval_people)


def _ablation_headline(a: dict) -> dict:
    """Accuracy drops per set (the shared set's, and the mean over seeds of the others)."""
    return {"k": a["k"], "unablated": a["unablated"], "shared": a["shared"]["drop"],
            **{name: a[name]["mean_drop"] for name in ("random", "top_bio_only", "top_qa_only")}}


def run_study(out: Path, preset: str = "default", force: bool = False, log=print) -> dict:
    out = Path(out)
    data_cfg, analysis_cfg = data_config(preset), analysis_config(preset)
    record = as_json({"preset": preset, "data": asdict(data_cfg), "train": asdict(train_config(preset)),
                      "analysis": asdict(analysis_cfg)})
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
    accuracy, shared, ablation = {}, {}, {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        a = accuracy[strategy] = _train(out, preset, strategy, force)
        log(f"{strategy:<9} {time.perf_counter() - t0:6.1f}s  ID-QA {a['qa_id']:.3f}  OOD-QA {a['qa_ood']:.3f}  "
            f"BIO {a['bio']:.3f}")
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        s = shared[strategy] = analyze_run(out / "runs" / strategy, analysis_cfg.k, analysis_cfg.sweep)
        log(f"shared    {time.perf_counter() - t0:6.1f}s  {strategy}: |Shared| {s['shared']} at k={s['k']:g}% "
            f"(enrichment {s['enrichment']:.1f}), Gini heads {s['gini']['heads']:.2f}")
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        d = ablation[strategy] = _ablate(out / "runs" / strategy, analysis_cfg)
        log(f"ablate    {time.perf_counter() - t0:6.1f}s  {strategy}: OOD-QA drop shared "
            f"{d['shared']['drop']['qa_ood']:+.3f}, random {d['random']['mean_drop']['qa_ood']:+.3f} (k={d['k']:g}%)")
    summary = {
        "preset": preset,
        "accuracy": accuracy,
        "shared": {st: {key: shared[st][key] for key in HEADLINE_SHARED} for st in STRATEGIES},
        "ablation": {st: _ablation_headline(ablation[st]) for st in STRATEGIES},
        "claims": [c1_accuracy(accuracy), c2_shared_size(shared), c3_concentration(shared), c4_ablation(ablation)],
    }
    write_json(out / "summary.json", summary)
    return summary
