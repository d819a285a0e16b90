"""`factrecall study`: the paper's comparison in one command (SPEC §0, §11).

Steps, each skipped when its output already exists for the same config (re-running resumes):
data → Stage run → Mix run → `summary.json` (accuracies and the claims checked so far).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from factrecall.artifacts import read_json, write_json
from factrecall.data.generate import generate_dataset
from factrecall.errors import UserError
from factrecall.presets import data_config, train_config
from factrecall.training.config import STRATEGIES
from factrecall.training.loop import train

CLAIM_C1 = "Mix OOD-QA accuracy is far above Stage's; both fit ID-QA and BIO"
FIT = 0.9  # "fits" ID-QA and BIO: accuracy at least this
FAR_ABOVE = 0.3  # "far above": OOD-QA gap at least this


def claim_c1(accuracy: dict) -> dict:
    mix, stage = accuracy["mix"], accuracy["stage"]
    gap = mix["qa_ood"] - stage["qa_ood"]
    fits = {s: accuracy[s]["qa_id"] >= FIT and accuracy[s]["bio_after_bio_training"] >= FIT for s in STRATEGIES}
    evidence = (f"OOD-QA Mix {mix['qa_ood']:.3f} vs Stage {stage['qa_ood']:.3f} (gap {gap:+.3f}, needs ≥ {FAR_ABOVE}); "
                f"ID-QA Mix {mix['qa_id']:.3f}, Stage {stage['qa_id']:.3f}; BIO after BIO training "
                f"Mix {mix['bio_after_bio_training']:.3f}, Stage {stage['bio_after_bio_training']:.3f} "
                f"(fit needs ≥ {FIT}); Stage's final BIO {stage['bio']:.3f}")
    return {"id": "C1", "statement": CLAIM_C1, "holds": bool(gap >= FAR_ABOVE and all(fits.values())),
            "evidence": evidence}


def run_study(out: Path, preset: str = "default", force: bool = False, log=print) -> dict:
    out = Path(out)
    data_cfg, train_cfg = data_config(preset), train_config(preset)
    record = {"preset": preset, "data": asdict(data_cfg), "train": asdict(train_cfg)}
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
    summary = {"preset": preset, "accuracy": accuracy, "claims": [claim_c1(accuracy)]}
    write_json(out / "summary.json", summary)
    return summary
