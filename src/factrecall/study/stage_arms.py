"""Stage's QA phase over a grid of settings, and the arm the analyses take (docs/method.md §3, §11).

Physics of LMs 3.1 reports two-stage training at its best over a grid of QA-phase settings; one
recipe can make Stage look worse than it is (the default's Stage forgets two thirds of its
biographies in the QA phase). `[stage_arms]` lists QA-phase values (`config.study.StageArmsConfig`);
every grid point but [train]'s own recipe is a run forked from the Stage run's kept BIO phase
(`train --start-from`), so the arms share one BIO phase and differ only in the QA phase.

`choose` picks the run the analyses take: among the Stage runs whose final ID-QA fits (≥ FIT), the
one that keeps BIO best (final BIO, then ID-QA, then the listed order); when none fits ID-QA, the
one with the highest ID-QA. C1 compares Mix with the best OOD-QA of any Stage run that fits
(`claims.c1_recall.best_fitting`).
`stage_arms.json` records every run's accuracies and the choice.
"""

from __future__ import annotations

from factrecall.errors import UserError
from factrecall.study.claims.verdict import FIT, TOLERANCE


def arm_label(settings: dict) -> str:
    """A folder name for an arm's QA-phase settings, e.g. "qa_phase_lr=0.0002,qa_epochs=10" (values by `repr`, so
    two distinct values never share a folder)."""
    return ",".join(f"{key}={value!r}" for key, value in settings.items())


def choose(runs: list[dict]) -> dict:
    """The run the analyses take, of `runs` = [{label, run, settings, accuracy}] in the listed order."""
    if not runs:
        raise ValueError("no Stage run to choose from")
    fitting = [r for r in runs if r["accuracy"]["qa_id"] >= FIT - TOLERANCE]
    if fitting:
        return max(fitting, key=lambda r: (r["accuracy"]["bio"], r["accuracy"]["qa_id"], -runs.index(r)))
    return max(runs, key=lambda r: (r["accuracy"]["qa_id"], -runs.index(r)))


def headline(record: dict) -> str:
    """stage_arms.json in one line."""
    chosen = next((r for r in record["runs"] if r["run"] == record["chosen"]), None)
    if chosen is None:
        raise UserError(f"stage_arms.json names {record['chosen']!r}, none of its Stage runs; delete it and rerun "
                        f"'factrecall study'")
    a = chosen["accuracy"]
    return (f"{len(record['runs'])} Stage runs; analysed {chosen['label']}: ID-QA {a['qa_id']:.3f}, OOD-QA "
            f"{a['qa_ood']:.3f}, final BIO {a['bio']:.3f}")
