"""How a claim turns measured numbers into a verdict (docs/method.md §11).

A claim is judged on one or more `Measure`s. A measure compares Mix with Stage on one number (or
one number of Mix against a reference) and carries its uncertainty as `resolution`: the difference
counts only when it is larger than that (an interval from a bootstrap over people, a binomial
standard error, a null's spread or the seeds' spread, as each claim states). Each measure's
outcome is

    "for"          the difference points the way the claim says, by more than its resolution
    "against"      it points the other way by more than its resolution
    "unresolved"   within the resolution (a tie included)
    "not measurable"  the number cannot say anything here (`unmeasurable` gives the reason)

and `judge` counts only resolved measures: the claim holds when every resolved measure is "for",
does not hold when every one is "against", and is undetermined when none is resolved or they
disagree. Swapping Mix and Stage swaps "for" and "against" and leaves the rest, so a rule built
from measures is antisymmetric by construction: "holds" becomes "does not hold" and
"undetermined" stays.

Every verdict is also gated by fit (`fit_gate`): when either model misses FIT on ID-QA or on BIO
at the end of training, the claim is undetermined ("the models did not fit"), and `measured`
keeps what the rule alone would have said.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

FIT = 0.9  # a strategy fits ID-QA and BIO when its final accuracy is at least this
Z = 1.96  # a two-sided 95 % normal interval
TOLERANCE = 1e-9  # accuracies are fractions of counts: 0.70 − 0.40 must count as 0.3

HOLDS, FAILS, UNDETERMINED = "holds", "does not hold", "undetermined"
FOR, AGAINST, UNRESOLVED, NOT_MEASURABLE = "for", "against", "unresolved", "not measurable"


@dataclass(frozen=True)
class Measure:
    """One comparison: `mix` against `stage` (or against a reference), higher for the claim unless
    `lower_is_for`. `resolution` ≥ 0 is the smallest difference that counts."""
    name: str
    mix: float | None
    stage: float | None
    resolution: float = 0.0
    lower_is_for: bool = False
    unmeasurable: str | None = None  # why this measure cannot say anything here
    labels: tuple[str, str] = ("Mix", "Stage")  # what `mix` and `stage` are (a rule within one run names both)

    @property
    def outcome(self) -> str:
        if self.unmeasurable or self.mix is None or self.stage is None:
            return NOT_MEASURABLE
        gap = (self.stage - self.mix) if self.lower_is_for else (self.mix - self.stage)
        threshold = max(self.resolution, TOLERANCE)
        return FOR if gap > threshold else AGAINST if gap < -threshold else UNRESOLVED

    def swapped(self) -> Measure:
        """The same measure with Mix's and Stage's numbers exchanged."""
        return Measure(self.name, self.stage, self.mix, self.resolution, self.lower_is_for, self.unmeasurable,
                       self.labels)

    def row(self) -> dict:
        return {"name": self.name, "mix": self.mix, "stage": self.stage, "resolution": self.resolution,
                "lower_is_for": self.lower_is_for, "outcome": self.outcome, "labels": list(self.labels),
                **({"unmeasurable": self.unmeasurable} if self.unmeasurable else {})}


@dataclass(frozen=True)
class Verdict:
    """A rule's answer: `verdict` (HOLDS, FAILS or UNDETERMINED), one sentence of why, the evidence behind it."""
    verdict: str
    why: str
    evidence: str = ""
    measures: tuple[Measure, ...] = field(default=())

    @property
    def holds(self) -> bool | None:
        return {HOLDS: True, FAILS: False}.get(self.verdict)


def judge(measures: list[Measure] | tuple[Measure, ...], evidence: str = "") -> Verdict:
    """The verdict of resolved measures: all for → holds, all against → does not hold, else undetermined."""
    by = {o: [m.name for m in measures if m.outcome == o] for o in (FOR, AGAINST, UNRESOLVED, NOT_MEASURABLE)}
    resolved = len(by[FOR]) + len(by[AGAINST])
    if by[FOR] and not by[AGAINST]:
        verdict, why = HOLDS, f"{_count(by[FOR], 'measure')} for ({_names(by[FOR])})"
    elif by[AGAINST] and not by[FOR]:
        verdict, why = FAILS, f"{_count(by[AGAINST], 'measure')} against ({_names(by[AGAINST])})"
    elif resolved:
        verdict, why = UNDETERMINED, (f"resolved measures disagree: for {_names(by[FOR])}; "
                                      f"against {_names(by[AGAINST])}")
    else:
        verdict, why = UNDETERMINED, ("no measure is resolved" + (f": {_names(by[UNRESOLVED])} within their "
                                                                    f"uncertainty" if by[UNRESOLVED] else "")
                                      + (f"; not measurable: {_unmeasurable(measures)}" if by[NOT_MEASURABLE] else ""))
    if resolved and (by[UNRESOLVED] or by[NOT_MEASURABLE]):
        why += f"; {len(by[UNRESOLVED]) + len(by[NOT_MEASURABLE])} of {len(measures)} not resolved"
    return Verdict(verdict, why, evidence, tuple(measures))


def _names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "") or "none"


def _unmeasurable(measures) -> str:
    reasons = [f"{m.name} ({m.unmeasurable})" if m.unmeasurable else m.name for m in measures
               if m.outcome == NOT_MEASURABLE]
    return _names(reasons)


def _count(names: list[str], what: str) -> str:
    return f"{len(names)} {what}{'s' * (len(names) != 1)}"


def undetermined(why: str, evidence: str = "", measures: tuple[Measure, ...] = ()) -> Verdict:
    return Verdict(UNDETERMINED, why, evidence, tuple(measures))


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n items (0 when n is 0: nothing to resolve)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


def resolution(*standard_errors: float) -> float:
    """Z × the standard error of a difference of independent estimates."""
    return Z * math.sqrt(sum(se * se for se in standard_errors))


def fit_gate(accuracy: dict) -> str | None:
    """Why the models cannot be judged, or None: either misses FIT on ID-QA or on BIO at the end of training.

    `accuracy[strategy]` holds qa_id, bio (final) and bio_after_bio_training."""
    misses = [f"{s.capitalize()}'s {label} {a[key]:.3f}" for s, a in sorted(accuracy.items(), reverse=True)
              for key, label in (("qa_id", "ID-QA"), ("bio", "final BIO")) if a[key] < FIT - TOLERANCE]
    if not misses:
        return None
    forgot = [f"{s.capitalize()} forgot its biographies ({a['bio_after_bio_training']:.3f} after its BIO "
              f"phase, {a['bio']:.3f} at the end)" for s, a in sorted(accuracy.items(), reverse=True)
              if a["bio"] < FIT - TOLERANCE and a["bio_after_bio_training"] >= FIT - TOLERANCE]
    return (f"the models did not fit: {', '.join(misses)} (below {FIT:g})"
            + (f"; {'; '.join(forgot)}" if forgot else ""))


def fit_warnings(evaluation: dict, train: dict, bios: int) -> list[str]:
    """What keeps a finished run from the claims' fit (FIT on BIO and ID-QA), each with the setting to change.

    `evaluation`: its eval.json; `train`: its train settings; `bios`: the dataset's biographies."""
    first, final = next(iter(evaluation["phases"].values())), evaluation
    batches = train["bio_epochs"] * math.ceil(bios / train["bio_batch_size"])
    warnings = []
    if first["bio"]["accuracy"] < FIT - TOLERANCE:
        warnings.append(f"BIO accuracy {first['bio']['accuracy']:.3f} after the BIO training is below {FIT:g}: the "
                        f"model has not memorised the biographies in {batches} BIO micro-batches; raise --bio-epochs "
                        f"(now {train['bio_epochs']}) or --lr (now {train['lr']:g})")
    elif final["bio"]["accuracy"] < FIT - TOLERANCE:
        warnings.append(f"BIO accuracy fell from {first['bio']['accuracy']:.3f} to {final['bio']['accuracy']:.3f} in "
                        f"the QA training (below {FIT:g}): the run forgot its biographies; lower --qa-phase-lr "
                        f"(now {train['qa_phase_lr'] or train['lr']:g}), as a study's [stage_arms] does")
    if final["qa_id"]["accuracy"] < FIT - TOLERANCE:
        warnings.append(f"ID-QA accuracy {final['qa_id']['accuracy']:.3f} is below {FIT:g}: raise --qa-epochs "
                        f"(now {train['qa_epochs']})")
    return warnings


Getter = Callable[[dict, str], "float | None"]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, declared once: the study's summary, report and sweep ladders iterate these.

    `needs`: the entries of the study's evidence it reads ("accuracy" and analysis names); `rule` maps
    {need: {strategy: result}} to a Verdict; `ladder`: (label, getter(point summary, strategy)) pairs the
    sweep report plots; `compares`: a Mix-vs-Stage rule (antisymmetric under swapping the runs)."""
    id: str
    statement: str
    needs: tuple[str, ...]
    rule: Callable[[dict], Verdict]
    ladder: tuple[tuple[str, Getter], ...] = ()
    compares: bool = True

    def check(self, evidence: dict) -> dict:
        """The claim's entry of summary.json: the rule's verdict, gated by fit and by missing analyses."""
        missing = [n for n in self.needs if n not in evidence]
        measured = (undetermined(f"not measured: {', '.join(missing)} did not run") if missing
                    else self.rule(evidence))
        gate = fit_gate(evidence["accuracy"]) if "accuracy" in evidence else None
        final = undetermined(gate, measured.evidence, measured.measures) if gate else measured
        return {"id": self.id, "statement": self.statement, "verdict": final.verdict, "holds": final.holds,
                "why": final.why, "evidence": final.evidence,
                "measured": {"verdict": measured.verdict, "why": measured.why},
                "measures": [m.row() for m in final.measures]}


def at(*path) -> Getter:
    """A ladder getter: the number at `path` of a point's summary ("{s}" = the strategy, an int indexes a list)."""
    def get(summary: dict, strategy: str):
        node = summary
        for key in path:
            if isinstance(key, int):
                node = node[key] if isinstance(node, list) and len(node) > key else None
            else:
                node = node.get(key.format(s=strategy)) if isinstance(node, dict) else None
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None
    return get


def swap(evidence: dict) -> dict:
    """The evidence with the two runs exchanged (the antisymmetry tests)."""
    return {name: {"mix": e["stage"], "stage": e["mix"], **{k: v for k, v in e.items() if k not in ("mix", "stage")}}
            if isinstance(e, dict) and "mix" in e and "stage" in e else e for name, e in evidence.items()}
