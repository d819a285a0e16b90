"""`summary.json` of a study, built from its artifacts alone (so `factrecall report` can rebuild it).

    accuracy.{stage,mix}.{qa_id, qa_ood, bio, bio_after_bio_training}
    <analysis>.{stage,mix}: each summarised analysis of `registry.ANALYSES` (shared, ablation, graft,
        heads, neurons, attention, consistency; forgetting on a built base)
    claims: [{id, statement, verdict, holds, evidence}] for C1–C7 (docs/method.md §11; verdict: holds,
        does not hold or undetermined, with the reason in the evidence)
"""

from __future__ import annotations

from pathlib import Path

from factrecall.artifacts import read_json
from factrecall.errors import UserError
from factrecall.layout import RunLayout, StudyLayout
from factrecall.study.claims import (
    c1_accuracy,
    c2_shared_size,
    c3_concentration,
    c4_ablation,
    c5_grafting,
    c6_heads,
    c7_consistency,
)
from factrecall.study.config import BASE_KINDS, recorded_analysis
from factrecall.study.registry import ANALYSES
from factrecall.terms import EVAL_SETS, STRATEGIES


def study_artifacts(study: Path) -> dict[str, dict[str, dict]]:
    """{"eval" or analysis name: {strategy: its result}} for every analysis the study ran on both runs."""
    files = StudyLayout(Path(study))
    a = recorded_analysis(read_json(files.record, "study record")["config"])
    runs = {s: files.run(s) for s in STRATEGIES}
    art = {"eval": {s: _evaluation(run) for s, run in runs.items()}}
    for analysis in ANALYSES:
        if all(analysis.applies(run) for run in runs.values()):
            art[analysis.name] = {s: analysis.load(run, a) for s, run in runs.items()}
    return art


def _evaluation(run: RunLayout) -> dict:
    """A run's eval.json, checked to hold what the summary reads."""
    result = read_json(run.eval, "final evaluation")
    ok = isinstance(result, dict) and isinstance(result.get("phases"), dict) and result["phases"] and all(
        isinstance(result.get(m), dict) and "accuracy" in result[m] for m in EVAL_SETS)
    if not ok:
        raise UserError(f"{run.eval} is damaged (not a run's final evaluation); retrain the run (delete it and "
                        f"rerun 'factrecall study')")
    return result


def _accuracy(result: dict) -> dict:
    first_phase = next(iter(result["phases"].values()))
    return {"qa_id": result["qa_id"]["accuracy"], "qa_ood": result["qa_ood"]["accuracy"],
            "bio": result["bio"]["accuracy"], "bio_after_bio_training": first_phase["bio"]["accuracy"]}


def summarize_study(study: Path) -> dict:
    art = study_artifacts(study)
    accuracy = {s: _accuracy(art["eval"][s]) for s in STRATEGIES}
    files = StudyLayout(Path(study))
    config = read_json(files.record, "study record")["config"]
    summary = {"preset": config["preset"], "accuracy": accuracy,
               **{a.name: {s: a.summary(art[a.name][s]) for s in STRATEGIES}
                  for a in ANALYSES if a.summary and a.name in art}}
    summary["claims"] = [c1_accuracy(accuracy), c2_shared_size(art["shared"]), c3_concentration(art["shared"]),
                         c4_ablation(art["ablation"]), c5_grafting(art["graft"], accuracy),
                         c6_heads(art["heads"], art["neurons"]), c7_consistency(art["consistency"])]
    bases = config.get("bases", ["random"])
    if len(bases) > 1:  # the first base is this study's own; each other one is a study under bases/<name>/
        roots = {base_name(b): (files.sub_study(base_name(b)) if i else files) for i, b in enumerate(bases)}
        summary["bases"] = {name: _base_entry(summary if root == files else summarize_study(root.root),
                                              StudyLayout(root.root.relative_to(study))) for name, root in roots.items()}
    return summary


def base_name(base: str) -> str:
    """A base's name in step names and folders: its kind, or its directory's name."""
    return base if base in BASE_KINDS else Path(base).name


def _base_entry(summary: dict, where: StudyLayout) -> dict:
    """A base's row of the comparison; `where` is its study, relative to the main study."""
    return {"accuracy": summary["accuracy"], "forgetting": summary.get("forgetting"),
            "claims": [{k: c[k] for k in ("id", "verdict", "holds", "evidence")} for c in summary["claims"]],
            "report": str(where.report)}
