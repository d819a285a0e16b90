"""Settings of the analyses: one dataclass per analysis (its defaults, ranges and one line of help per
setting), gathered in `AnalysisConfig` under the analysis's name (kronfluence's one arguments class per
computation). Light on purpose (no torch): the CLI builds each analysis command's options from these
fields (`cli.settings_options`), so a command's defaults are the study's.

A study config sets them per analysis, `[analysis.ablation] k = 5`, or by the flat names of earlier
configs, `[analysis] ablation_k = 5` (`FLAT_KEYS`; study.json records the nested form).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from factrecall.checks import checker, is_int, is_real
from factrecall.devices import DEVICES
from factrecall.errors import UserError
from factrecall.terms import MODEL_VARIANTS


def setting(default, help: str, option: str | None = None):
    """A settings field: its default and the line of help the CLI shows (`option`: its CLI name, if not the field's)."""
    return field(default=default, metadata={"help": help, **({"option": option} if option else {})})


def _fraction(value) -> bool:
    return is_real(value) and 0 < value <= 1


def _percent(value) -> bool:
    return is_real(value) and 0 < value <= 100


def _fractions(value, low_open: bool = True, high_open: bool = False) -> bool:
    return isinstance(value, (tuple, list)) and all(
        is_real(x) and (0 < x if low_open else 0 <= x) and (x < 1 if high_open else x <= 1) for x in value)


def _count(must, settings, key: str, least: int) -> None:
    """An integer setting of at least `least` (a count of people: 0 = all of them)."""
    every = " (0 = all people)" if least == 0 and key.endswith("people") else ""
    must(is_int(getattr(settings, key)) and getattr(settings, key) >= least, key,
         "not be negative" if least == 0 else f"be at least {least}",
         f"give an integer ≥ 0{every}" if least == 0 else "give an integer")


@dataclass(frozen=True)
class SharedSettings:
    """Shared parameters (Definition 3.1), their sweep over k and their concentration (C2, C3)."""
    k: float = setting(1.0, "Top k percent per task: Shared(k) = Top_BIO(k) ∩ Top_QA(k); heads and neurons rank "
                            "by it.")
    sweep: tuple[float, ...] = setting((0.1, 0.5, 1.0, 2.0, 5.0, 10.0), "k values of the sweep (Fig. 2a).")
    matched_sizes: tuple[float, ...] = setting((0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
                                               "C3: sets of these fractions of the traced entries.")
    null_draws: int = setting(100, "C3: seeded placements per concentration null.")

    def check(self, must) -> None:
        must(_percent(self.k), "k", "lie in (0, 100]", "a percentage of the tracked entries")
        must(isinstance(self.sweep, (tuple, list)) and len(self.sweep) > 0 and all(map(_percent, self.sweep)),
             "sweep", "be a non-empty list of percentages in (0, 100]")
        must(isinstance(self.matched_sizes, (tuple, list)) and len(self.matched_sizes) > 0
             and all(map(_fraction, self.matched_sizes)), "matched_sizes",
             "be a non-empty list of fractions in (0, 1]", "fractions of the tracked entries")
        _count(must, self, "null_draws", 2)


@dataclass(frozen=True)
class AblationSettings:
    """Resetting the shared set to θ_pre against random and Top-only sets (C4)."""
    k: float = setting(5.0, "Top k percent defining the ablated shared set (at 1 the default model loses < 0.01).")
    seeds: int = setting(3, "Random and Top-only sets drawn per kind.")
    eval_people: int = setting(0, "People per split evaluated; 0 = all.")
    size: float = setting(0.02, "C4: also a shared set of this fraction of the traced entries, with its random "
                                "and Top-only sets; 0 = none.")

    def check(self, must) -> None:
        must(_percent(self.k), "k", "lie in (0, 100]", "a percentage of the tracked entries")
        _count(must, self, "seeds", 1)
        _count(must, self, "eval_people", 0)
        must(is_real(self.size) and 0 <= self.size <= 1, "size", "lie in [0, 1]",
             "a fraction of the tracked entries; 0 = no same-size sets")


@dataclass(frozen=True)
class GraftSettings:
    """The sparse graft of θ_ft − θ_pre that recalls the ID facts, and the bisection of its size (C5)."""
    sparsity: float = setting(0.01, "Base patch: the top fraction of |θ_ft − θ_pre| over the traced block "
                                    "matrices.")
    steps: int = setting(20, "Mask steps per block; a search goes on while its best step is its last, up to 4 blocks.")
    lr: float = setting(1e7, "Learning rate on the mask scores S.")
    eval_people: int = setting(0, "People per half (selection, report) and per split; 0 = all.")
    sparsities: tuple[float, ...] = setting((), "C5: sparsities the bisection tries first, with the sparsity.",
                                            option="grid")
    bracket: float = setting(0.02, "C5: bisect the sparsity reaching 90 % of θ_ft's ID-QA until the last miss and "
                                   "the first hit are this close.")

    def check(self, must) -> None:
        must(is_real(self.sparsity) and 0 < self.sparsity < 1, "sparsity", "lie strictly between 0 and 1",
             "the fraction of |θ_ft − θ_pre| in the base patch")
        _count(must, self, "steps", 0)
        must(is_real(self.lr) and self.lr > 0, "lr", "be positive", "give a finite number > 0")
        _count(must, self, "eval_people", 0)
        must(_fractions(self.sparsities, high_open=True), "sparsities",
             "be a list of fractions strictly between 0 and 1", "where C5's bisection looks first")
        must(is_real(self.bracket) and 0 < self.bracket < 1, "bracket", "lie strictly between 0 and 1",
             "the width of the sparsity bracket C5 compares")


def _check_on(must, settings) -> None:
    must(settings.on in MODEL_VARIANTS, "on", f"be one of {', '.join(MODEL_VARIANTS)}")


@dataclass(frozen=True)
class HeadSettings:
    """Sufficiency and criticality of attention heads per ranking (C6), on Shared(k) of `shared`."""
    on: str = setting("finetuned", "finetuned (θ_ft) or grafted (θ_pre + γ⊙Δ of the graft).")
    eval_people: int = setting(100, "People per split in the fixed evaluation subset; 0 = all.")
    random_rankings: int = setting(10, "C6: seeded permutations behind `random` (its n are their medians).")

    def check(self, must) -> None:
        _check_on(must, self)
        _count(must, self, "eval_people", 0)
        _count(must, self, "random_rankings", 1)


@dataclass(frozen=True)
class NeuronSettings:
    """The same curves for MLP neurons (one random ranking; no claim judges them)."""
    on: str = setting("finetuned", "finetuned (θ_ft) or grafted (θ_pre + γ⊙Δ of the graft).")
    eval_people: int = setting(100, "People per split in the fixed evaluation subset; 0 = all.")
    points: tuple[float, ...] = setting((0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), "Fractions of the neurons.")

    def check(self, must) -> None:
        _check_on(must, self)
        _count(must, self, "eval_people", 0)
        must(isinstance(self.points, (tuple, list)) and len(self.points) > 0
             and _fractions(self.points, low_open=False), "points", "be a non-empty list of fractions in [0, 1]")


@dataclass(frozen=True)
class InspectSettings:
    """One person's attention, logit lens and head contribution (Fig. 5): nothing to set in a study."""

    def check(self, must) -> None:
        pass


@dataclass(frozen=True)
class AttentionSettings:
    """The final token's attention on subject and relation, per head (Fig. 5, aggregate)."""
    people: int = setting(500, "People in the aggregate attention statistics.")

    def check(self, must) -> None:
        _count(must, self, "people", 1)


@dataclass(frozen=True)
class ConsistencySettings:
    """BIO–QA consistency per layer: representations, gradient probe, trace direction (C7)."""
    people: int = setting(200, "People in the representation consistency.")
    probe_people: int = setting(100, "People in the gradient probe (one backward pass per person and form).")
    bootstrap: int = setting(200, "C7: resamples of people behind each standard error.")

    def check(self, must) -> None:
        for key in ("people", "probe_people", "bootstrap"):
            _count(must, self, key, 2)


@dataclass(frozen=True)
class ForgettingSettings:
    """Accuracy on a built base's own population before and after fine-tuning."""
    eval_people: int = setting(100, "People per split; 0 = all.")

    def check(self, must) -> None:
        _count(must, self, "eval_people", 0)


@dataclass(frozen=True)
class AnalysisConfig:
    """Every analysis's settings under its name (`analysis/registry.py`), where they run and which a study skips."""
    shared: SharedSettings = SharedSettings()
    ablation: AblationSettings = AblationSettings()
    graft: GraftSettings = GraftSettings()
    heads: HeadSettings = HeadSettings()
    neurons: NeuronSettings = NeuronSettings()
    inspect: InspectSettings = InspectSettings()
    attention: AttentionSettings = AttentionSettings()
    consistency: ConsistencySettings = ConsistencySettings()
    forgetting: ForgettingSettings = ForgettingSettings()
    device: str = "auto"  # where the analyses run their forwards and backwards: auto (the GPU if any), cpu, cuda
    # analyses a study leaves out, by name; the claims that read them are "not measured". All of them:
    # training, the Stage arms and C1 only (e.g. a sweep over data settings that asks only for accuracies)
    skip: tuple[str, ...] = ()

    def validate(self) -> None:
        """Refuse any setting out of its range, NaN and infinity included, in one line starting `analysis.<...>`."""
        must = checker(self, "analysis")
        must(self.device in DEVICES, "device", f"be one of {', '.join(DEVICES)}")
        must(isinstance(self.skip, (tuple, list)) and all(isinstance(x, str) for x in self.skip)
             and len(set(self.skip)) == len(self.skip), "skip", "be a list of analysis names, each once")
        for name in ANALYSIS_NAMES:
            settings = getattr(self, name)
            settings.check(checker(settings, f"analysis.{name}"))


ANALYSIS_NAMES = tuple(f.name for f in fields(AnalysisConfig) if is_dataclass(f.default))

# the flat names of earlier configs → the settings they set (a flat key of two analyses set both, as before)
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "k": ("shared.k",), "sweep": ("shared.sweep",), "matched_sizes": ("shared.matched_sizes",),
    "null_draws": ("shared.null_draws",),
    **{f"ablation_{key}": (f"ablation.{key}",) for key in ("k", "seeds", "eval_people", "size")},
    **{f"graft_{key}": (f"graft.{key}",)
       for key in ("sparsity", "steps", "lr", "eval_people", "sparsities", "bracket")},
    "heads_on": ("heads.on", "neurons.on"),
    "heads_eval_people": ("heads.eval_people", "neurons.eval_people", "forgetting.eval_people"),
    "random_rankings": ("heads.random_rankings",), "neuron_points": ("neurons.points",),
    "attention_people": ("attention.people",), "consistency_people": ("consistency.people",),
    "probe_people": ("consistency.probe_people",), "bootstrap": ("consistency.bootstrap",),
}


def dotted(overrides: dict, where: str = "analysis") -> dict[str, object]:
    """An [analysis] table as {"device" | "skip" | "<analysis>.<setting>": value}: nested tables and flat keys
    both read; a setting given twice (nested and flat) is refused."""
    out: dict[str, object] = {}

    def put(key: str, value) -> None:
        if key in out:
            raise UserError(f"{where}: {key} is given twice (as [analysis.{key.partition('.')[0]}] and by a flat "
                            f"name); keep one")
        out[key] = value

    for key, value in overrides.items():
        if key in ANALYSIS_NAMES and isinstance(value, dict):
            for name, v in value.items():
                put(f"{key}.{name}", v)
        else:
            for target in FLAT_KEYS.get(key, (key,)):
                put(target, value)
    return out


def nested(overrides: dict, where: str = "analysis") -> dict:
    """An [analysis] table in its nested form, {"device": .., "ablation": {"k": ..}, ..}, flat names translated."""
    out: dict = {}
    for key, value in dotted(overrides, where).items():
        owner, _, name = key.rpartition(".")
        (out.setdefault(owner, {}) if owner else out)[name] = value
    return out


def setting_names() -> set[str]:
    """Every name an [analysis] table or a sweep axis `analysis.<name>` may set: dotted, flat, device, skip."""
    return ({f.name for f in fields(AnalysisConfig) if f.name not in ANALYSIS_NAMES} | set(FLAT_KEYS)
            | {f"{name}.{f.name}" for name in ANALYSIS_NAMES for f in fields(getattr(DEFAULT, name))})


DEFAULT = AnalysisConfig()  # the defaults of every analysis function and command: a study's, unless its config says


def settings_table() -> str:
    """Every analysis setting as a Markdown table (docs/method.md's "Analysis settings", kept equal by a test)."""
    rows = ["| setting | default | what it sets |", "|---|---|---|"]
    for name in ANALYSIS_NAMES:
        for f in fields(getattr(DEFAULT, name)):
            value = getattr(getattr(DEFAULT, name), f.name)
            shown = ", ".join(f"{x:g}" for x in value) if isinstance(value, tuple) else f"{value:g}" if isinstance(
                value, float) else value
            help = f.metadata["help"].replace("|", "\\|")
            rows.append(f"| `{name}.{f.name}` | {shown if shown != '' else '(none)'} | {help} |")
    return "\n".join(rows) + "\n"
