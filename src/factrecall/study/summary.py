"""`summary.json` of a study, built from its artifacts alone (so `factrecall report` can rebuild it).

    accuracy.{stage,mix}.{qa_id, qa_ood, bio, bio_after_bio_training, n}: Stage's is the analysed run's
    stage_arms: with [stage_arms], stage_arms.json: every Stage run's accuracies and the one analysed
    <analysis>.{stage,mix}: each summarised analysis of `registry.ANALYSES` (shared, ablation, graft,
        heads, neurons, attention, consistency; forgetting on a built base)
    not_fit: why no claim can be judged (a model missed the fit thresholds), or null
    plumbing_check: true for a smoke study (seconds of training: its claims are no finding)
    claims: [{id, statement, verdict, holds, why, evidence, measured, measures}] for every claim of
        `claims.CLAIMS` (docs/method.md §11; verdict: holds, does not hold or undetermined; `why` in one
        sentence; `measured`: the rule's verdict before the fit gate; `measures`: each compared number)
"""

from __future__ import annotations

from pathlib import Path

from factrecall.analysis.registry import ANALYSES, runs_on
from factrecall.artifacts import read_json
from factrecall.config.presets import recorded_analysis
from factrecall.config.study import base_name
from factrecall.errors import UserError
from factrecall.layout import RunLayout, StudyLayout
from factrecall.study.claims import check_claims
from factrecall.study.claims.verdict import fit_gate
from factrecall.terms import EVAL_SETS, STRATEGIES
from factrecall.training.run_dir import is_final_evaluation


def study_artifacts(study: Path) -> dict[str, dict[str, dict]]:
    """{"eval" or analysis name: {strategy: its result}} for every analysis the study ran on both runs."""
    files = StudyLayout(Path(study))
    a = recorded_analysis(read_json(files.record, "study record")["config"])
    runs = {s: files.analysed(s) for s in STRATEGIES}
    art = {"eval": {s: run_evaluation(run) for s, run in runs.items()}}
    for analysis in ANALYSES:
        if all(runs_on(analysis, run, a) for run in runs.values()):
            art[analysis.name] = {s: analysis.load(run, a) for s, run in runs.items()}
    return art


def run_evaluation(run: RunLayout) -> dict:
    """A run's eval.json, checked to hold what the summary reads."""
    result = read_json(run.eval, "final evaluation")
    if not is_final_evaluation(result):
        raise UserError(f"{run.eval} is damaged (not a run's final evaluation); retrain the run (delete it and "
                        f"rerun 'factrecall study')")
    return result


def run_accuracy(result: dict) -> dict:
    """Final accuracies, BIO after the first phase, and `n`: the items each final accuracy was measured on."""
    first_phase = next(iter(result["phases"].values()))
    return {"qa_id": result["qa_id"]["accuracy"], "qa_ood": result["qa_ood"]["accuracy"],
            "bio": result["bio"]["accuracy"], "bio_after_bio_training": first_phase["bio"]["accuracy"],
            "n": {m: result[m].get("n", 0) for m in EVAL_SETS}}


def outdated_guard(study: Path, what: str, read, result):
    """`read(result)`, or one line saying that `what` was written by an earlier factrecall (a key it lacks)."""
    try:
        return read(result)
    except KeyError as e:
        raise UserError(f"{study}: {what} was written by an earlier factrecall (no {e}); rerun 'factrecall study "
                        f"--out {study}' with its config, which reruns the analyses whose settings changed") from None


def summarize_study(study: Path) -> dict:
    art = study_artifacts(study)
    accuracy = {s: run_accuracy(art["eval"][s]) for s in STRATEGIES}
    files = StudyLayout(Path(study))
    config = read_json(files.record, "study record")["config"]
    summary = {"preset": config["preset"], "accuracy": accuracy,
               **{a.name: {s: outdated_guard(study, a.name, a.summary, art[a.name][s]) for s in STRATEGIES}
                  for a in ANALYSES if a.summary and a.name in art}}
    summary["plumbing_check"] = config["preset"] == "smoke"  # seconds of training: no finding
    summary["not_fit"] = fit_gate(accuracy)
    arms = read_json(files.stage_choice, "Stage arms") if files.stage_choice.is_file() else None
    if arms:
        summary["stage_arms"] = arms
    summary["claims"] = check_claims({"accuracy": accuracy, **{n: r for n, r in art.items() if n != "eval"},
                                      **({"stage_arms": arms["runs"]} if arms else {})})
    bases = config.get("bases", ["random"])
    if len(bases) > 1:  # the first base is this study's own; each other one is a study under bases/<name>/
        roots = {base_name(b): (files.sub_study(base_name(b)) if i else files) for i, b in enumerate(bases)}
        summary["bases"] = {name: _base_entry(summary if root == files else summarize_study(root.root),
                                              StudyLayout(root.root.relative_to(study))) for name, root in roots.items()}
    return summary


def _base_entry(summary: dict, where: StudyLayout) -> dict:
    """A base's row of the comparison; `where` is its study, relative to the main study."""
    return {"accuracy": summary["accuracy"], "forgetting": summary.get("forgetting"),
            "claims": [{k: c[k] for k in ("id", "verdict", "holds", "why", "evidence")} for c in summary["claims"]],
            "report": str(where.report)}
