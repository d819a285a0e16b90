"""`report/index.html` of a sweep: the verdict of every claim per point and over seeds, which axis
values change a verdict, and a scale ladder per claim (its numbers against the points, mean ± sd
over seeds with each seed as a dot). Each finished point keeps its own full report, linked.

Built from the sweep's summary only (`study.sweep_summary`), so `factrecall report` rebuilds it with
whatever points have finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from factrecall.artifacts import read_json, write_bytes  # noqa: E402
from factrecall.layout import StudyLayout  # noqa: E402
from factrecall.report.figures import COLORS  # noqa: E402
from factrecall.report.save import literal_text, save_figure  # noqa: E402
from factrecall.study.claims import STATEMENTS  # noqa: E402
from factrecall.study.sweep_summary import mean_sd  # noqa: E402
from factrecall.terms import STRATEGIES  # noqa: E402



def ladder_figure(groups: list[dict], claim_id: str, measure: str) -> Figure:
    """One measure of `claim_id` per group (x) for both strategies: mean ± sd over seeds and each seed's value."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(groups) + 2), 3.2))
    for offset, strategy in zip((-0.08, 0.08), STRATEGIES):
        for x, g in enumerate(groups):
            values = [v for v in g["ladder"][claim_id][measure][strategy] if v is not None]
            if not values:
                continue
            mean, sd = mean_sd(values)
            ax.errorbar(x + offset, mean, yerr=sd, fmt="o", color=COLORS[strategy], capsize=4, ms=7,
                        label=strategy.capitalize() if x == 0 else None)
            ax.scatter([x + offset + 0.05] * len(values), values, s=12, color=COLORS[strategy], alpha=0.45)
    ax.set_xticks(range(len(groups)), [g["label"] for g in groups], rotation=15 if len(groups) > 3 else 0,
                  fontsize=8)
    ax.set_title(f"{claim_id}: {measure}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # a measure no point has (e.g. no graft reached the target) draws none
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def build_sweep_report(study: Path, summary: dict | None = None) -> Path:
    """Write the sweep's `report/index.html` (and its figures); returns the page's path."""
    study = Path(study)
    files = StudyLayout(study)
    summary = summary or read_json(files.summary, "sweep summary")
    groups = [g for g in summary["groups"] if g["finished"]]
    with literal_text():  # point labels are the user's settings
        ladders = [{"id": f"{cid}-{i}", "claim": cid, "measure": measure,
                    "src": save_figure(ladder_figure(groups, cid, measure), files.figures, f"ladder_{cid}_{i}")}
                   for cid, measures in summary["ladder"].items() for i, measure in enumerate(measures) if groups]
    env = jinja2.Environment(loader=jinja2.PackageLoader("factrecall", "report"), autoescape=True)
    page = env.get_template("sweep.html").render(
        study=str(study), summary=summary, statements=STATEMENTS, ladders=ladders,
        record=json.dumps(read_json(files.record, "study record"), indent=2, ensure_ascii=False))
    write_bytes(files.report, page.encode("utf-8"))
    return files.report
