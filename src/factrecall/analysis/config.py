"""Settings of a study's analyses: shared parameters, ablation, grafting, heads, inspection."""

from __future__ import annotations

from dataclasses import dataclass

from factrecall.devices import DEVICES
from factrecall.errors import UserError


@dataclass(frozen=True)
class AnalysisConfig:
    k: float = 1.0  # top-k percent of the shared set (Definition 3.1)
    sweep: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
    ablation_k: float = 5.0  # k of the ablated shared set (at k=1 the default model loses < 0.01 either way)
    ablation_seeds: int = 3
    ablation_eval_people: int = 0  # people per split evaluated in ablation; 0 = all
    graft_sparsity: float = 0.01  # base patch: top fraction of |θ_ft − θ_pre|
    graft_steps: int = 20
    graft_lr: float = 1e7
    graft_eval_people: int = 0
    heads_on: str = "finetuned"  # or "grafted"
    heads_eval_people: int = 100  # the fixed evaluation subset of the head and neuron curves
    neuron_points: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # fractions of neurons
    attention_people: int = 500  # people in the aggregate attention statistics
    consistency_people: int = 200  # people in the representation consistency
    probe_people: int = 100  # people in the gradient probe (one backward pass per person and form)
    device: str = "auto"  # where the analyses run their forwards and backwards: auto (the GPU if any), cpu, cuda

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"unknown analysis device {self.device!r}; choose one of {', '.join(DEVICES)}")
