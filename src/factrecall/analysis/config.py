"""Settings of a study's analyses (shared parameters, ablation)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisConfig:
    k: float = 1.0  # top-k percent of the shared set (Definition 3.1)
    sweep: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
    ablation_k: float = 5.0  # k of the ablated shared set (at k=1 the default model loses < 0.01 either way)
    ablation_seeds: int = 3
    ablation_eval_people: int = 0  # people per split evaluated in ablation; 0 = all
