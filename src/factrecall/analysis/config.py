"""Settings of a study's analyses: shared parameters, ablation, grafting, heads, inspection."""

from __future__ import annotations

from dataclasses import dataclass

from factrecall.checks import checker, is_int, is_real
from factrecall.devices import DEVICES
from factrecall.errors import UserError
from factrecall.terms import MODEL_VARIANTS


@dataclass(frozen=True)
class AnalysisConfig:
    k: float = 1.0  # top-k percent of the shared set (Definition 3.1)
    sweep: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
    matched_sizes: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)  # C3: sets of these fractions of the tracked entries
    null_draws: int = 100  # C3: seeded placements per concentration null
    ablation_k: float = 5.0  # k of the ablated shared set (at k=1 the default model loses < 0.01 either way)
    ablation_size: float = 0.02  # C4: the same-size shared set ablated in every run, a fraction of the tracked entries
    ablation_seeds: int = 3
    ablation_eval_people: int = 0  # people per split evaluated in ablation; 0 = all
    graft_sparsity: float = 0.01  # base patch: top fraction of |θ_ft − θ_pre| over the traced block matrices
    graft_sparsities: tuple[float, ...] = ()  # C5: sparsities the bisection tries first, with graft_sparsity
    graft_steps: int = 20  # per block: a search goes on while its best step is its last, up to 4 blocks
    graft_lr: float = 1e7
    graft_eval_people: int = 0  # people per half (selection, report) and per split; 0 = all
    graft_bracket: float = 0.02  # C5: bisect the sparsity until the last miss and the first hit are this close
    heads_on: str = "finetuned"  # or "grafted"
    heads_eval_people: int = 100  # the fixed evaluation subset of the head and neuron curves
    neuron_points: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # fractions of neurons
    random_rankings: int = 10  # C6: the head curves' `random` is the median over this many seeded permutations
    attention_people: int = 500  # people in the aggregate attention statistics
    consistency_people: int = 200  # people in the representation consistency
    probe_people: int = 100  # people in the gradient probe (one backward pass per person and form)
    bootstrap: int = 200  # C7: resamples of people for each consistency measure's standard error
    device: str = "auto"  # where the analyses run their forwards and backwards: auto (the GPU if any), cpu, cuda
    # analyses a study leaves out, by name (study/registry.py); the claims that read them are "not measured". All of
    # them: training, the Stage arms and C1 only (e.g. a sweep over data settings that asks only for accuracies)
    skip: tuple[str, ...] = ()

    def validate(self) -> None:
        """Refuse any setting out of its range, NaN and infinity included, in one line starting `analysis.<key>`."""
        must = checker(self, "analysis")

        if self.device not in DEVICES:
            raise UserError(f"analysis.device: unknown analysis device {self.device!r}; "
                            f"choose one of {', '.join(DEVICES)}")
        if self.heads_on not in MODEL_VARIANTS:
            raise UserError(f"analysis.heads_on: unknown heads_on {self.heads_on!r}; "
                            f"choose one of {', '.join(MODEL_VARIANTS)}")
        for key in ("k", "ablation_k"):
            must(_percent(getattr(self, key)), key, "lie in (0, 100]", "a percentage of the tracked entries")
        must(isinstance(self.sweep, (tuple, list)) and len(self.sweep) > 0 and all(map(_percent, self.sweep)),
             "sweep", "be a non-empty list of percentages in (0, 100]")
        must(isinstance(self.matched_sizes, (tuple, list)) and len(self.matched_sizes) > 0
             and all(_fraction(x) for x in self.matched_sizes), "matched_sizes",
             "be a non-empty list of fractions in (0, 1]", "fractions of the tracked entries")
        must(_fraction(self.ablation_size), "ablation_size", "lie in (0, 1]", "a fraction of the tracked entries")
        must(isinstance(self.graft_sparsities, (tuple, list))
             and all(is_real(x) and 0 < x < 1 for x in self.graft_sparsities), "graft_sparsities",
             "be a list of fractions strictly between 0 and 1", "where C5's bisection looks first, as graft_sparsity")
        must(isinstance(self.neuron_points, (tuple, list)) and len(self.neuron_points) > 0
             and all(is_real(x) and 0 <= x <= 1 for x in self.neuron_points),
             "neuron_points", "be a non-empty list of fractions in [0, 1]")
        must(is_int(self.ablation_seeds) and self.ablation_seeds >= 1, "ablation_seeds", "be at least 1",
             "give an integer")
        for key, least in (("null_draws", 2), ("random_rankings", 1), ("bootstrap", 2)):
            must(is_int(getattr(self, key)) and getattr(self, key) >= least, key, f"be at least {least}",
                 "give an integer")
        must(is_real(self.graft_bracket) and 0 < self.graft_bracket < 1, "graft_bracket",
             "lie strictly between 0 and 1", "the width of the sparsity bracket C5 compares")
        must(is_real(self.graft_sparsity) and 0 < self.graft_sparsity < 1, "graft_sparsity",
             "lie strictly between 0 and 1", "the fraction of |θ_ft − θ_pre| in the base patch")
        must(is_int(self.graft_steps) and self.graft_steps >= 0, "graft_steps", "not be negative", "give an integer ≥ 0")
        must(is_real(self.graft_lr) and self.graft_lr > 0, "graft_lr", "be positive", "give a finite number > 0")
        for key in ("ablation_eval_people", "graft_eval_people", "heads_eval_people"):
            must(is_int(getattr(self, key)) and getattr(self, key) >= 0, key, "not be negative",
                 "give an integer ≥ 0 (0 = all people)")
        must(is_int(self.attention_people) and self.attention_people >= 1, "attention_people", "be at least 1",
             "give an integer")
        must(isinstance(self.skip, (tuple, list)) and all(isinstance(x, str) for x in self.skip)
             and len(set(self.skip)) == len(self.skip), "skip", "be a list of analysis names, each once")
        for key in ("consistency_people", "probe_people"):
            must(is_int(getattr(self, key)) and getattr(self, key) >= 2, key, "be at least 2", "give an integer")


DEFAULT = AnalysisConfig()  # the defaults of every analysis function and command: a study's, unless its config says


def _fraction(value) -> bool:
    return is_real(value) and 0 < value <= 1


def _percent(value) -> bool:
    return is_real(value) and 0 < value <= 100
