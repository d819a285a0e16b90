"""Every analysis of a run, in the order a study runs them: each declared at the end of its own module
(`declaration.Analysis`; its settings are `AnalysisConfig.<name>`). Adding an analysis is its module,
its settings class in `config.py`, one line here and its figures in the report.
"""

from __future__ import annotations

from factrecall.analysis import ablation, attention, circuit, consistency, forgetting, graft, inspect, shared
from factrecall.analysis.config import AnalysisConfig
from factrecall.analysis.declaration import Analysis
from factrecall.errors import UserError
from factrecall.layout import RunLayout

ANALYSES: tuple[Analysis, ...] = (shared.ANALYSIS, ablation.ANALYSIS, graft.ANALYSIS, circuit.HEADS, circuit.NEURONS,
                                  inspect.ANALYSIS, attention.ANALYSIS, consistency.ANALYSIS, forgetting.ANALYSIS)

REGISTRY: dict[str, Analysis] = {a.name: a for a in ANALYSES}


def check_skip(config: AnalysisConfig) -> None:
    """Refuse an `analysis.skip` naming an unknown analysis, or leaving out one that a run analysis reads."""
    for name in config.skip:
        if name not in REGISTRY:
            raise UserError(f"analysis.skip names {name!r}, which is no analysis; choose among {', '.join(REGISTRY)}")
    for analysis in ANALYSES:
        missing = [r for r in analysis.reads if r in config.skip]
        if analysis.name not in config.skip and missing:
            raise UserError(f"analysis.skip leaves out {missing[0]}, which {analysis.name} reads; skip "
                            f"{analysis.name} too or keep {missing[0]}")


def runs_on(analysis: Analysis, run: RunLayout, config: AnalysisConfig) -> bool:
    """Whether a study runs `analysis` on `run`: it applies there and the config does not skip it."""
    return analysis.name not in config.skip and analysis.applies(run)
