"""Every analysis of a run, declared once (lm-evaluation-harness's registry pattern).

An `Analysis` names what the study runs on each trained run: the settings that enter its cache
key, the earlier analyses whose files it reads, how it runs, the files it writes, how its result is
read back, its one-line headline and its entry in `summary.json`. The study's steps
(`runner.py`), the CLI's headlines, the summary (`summary.py`) and the report (`report/build.py`,
one section list per analysis) all iterate `ANALYSES`; adding an analysis is one entry here and
its figures in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.attention import attention_stats
from factrecall.analysis.circuit import circuit_curves
from factrecall.analysis.config import AnalysisConfig
from factrecall.analysis.consistency import consistency_run
from factrecall.analysis.graft import graft_run
from factrecall.analysis.inspect import inspect_run
from factrecall.analysis.shared import analyze_run
from factrecall.analysis.units import METRICS, NULLS, UNIT_KINDS
from factrecall.artifacts import read_json
from factrecall.errors import UserError
from factrecall.evaluation.forgetting import forgetting_run
from factrecall.layout import RunLayout
from factrecall.study.claims.c7_consistency import consistency_headline

HEADLINE_SHARED = ("k", "top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")


@dataclass(frozen=True)
class Analysis:
    """One analysis of a run directory. `name` is its step (`<name>/<strategy>`) and summary key."""

    name: str
    settings: Callable[[AnalysisConfig], list]  # the settings in its cache key
    reads: tuple[str, ...]  # analyses whose files it reads (every analysis reads the trained run)
    run: Callable[[Path, AnalysisConfig], dict]  # runs it on a run directory; returns its result
    writes: Callable[[RunLayout, AnalysisConfig], list[Path]]  # the files it writes
    headline: Callable[[dict], str]  # its result in one line
    summary: Callable[[dict], object] | None = None  # its entry in summary.json (None: not summarised)
    applies: Callable[[RunLayout], bool] = lambda run: True  # whether the study runs it on this run

    def path(self, run: RunLayout, config: AnalysisConfig) -> Path:
        """The JSON file holding its result (the first file it writes)."""
        return self.writes(run, config)[0]

    def load(self, run: RunLayout, config: AnalysisConfig) -> dict:
        """Its result, read back from the run directory."""
        return read_json(self.path(run, config), self.name)


def _shared_line(s: dict) -> str:
    return f"|Shared| {s['shared']} at k={s['k']:g}% (enrichment {s['enrichment']:.1f}), Gini heads {s['gini']['heads']:.2f}"


def _ablation_line(d: dict) -> str:
    m = d.get("matched")
    same = (f"; same-size set ({m['size']:,} entries) {m['shared']['drop']['qa_ood']:+.3f}, random "
            f"{m['random']['mean_drop']['qa_ood']:+.3f}" if m else "")
    return (f"OOD-QA drop shared {d['shared']['drop']['qa_ood']:+.3f}, random {d['random']['mean_drop']['qa_ood']:+.3f}"
            f" (k={d['k']:g}%){same}")


def _shared_summary(s: dict) -> dict:
    """The headline at k, and per matched size (keyed by its fraction, "0.01") its concentration per unit kind:
    entries, units, and per measure the observed value and each null's excess and sd. Results written before
    the two nulls existed summarise without them."""
    return {**{key: s[key] for key in HEADLINE_SHARED},
            "matched": {f"{p['fraction']:g}": {"size": p["size"], "depth": p["depth"]}
                        | {kind: {"entries": p[kind]["entries"], "units": p[kind]["units"],
                                  **{m: {"observed": p[kind][m][NULLS[0]]["observed"],
                                         **{null: {key: p[kind][m][null][key] for key in ("excess", "null_sd")}
                                            for null in NULLS}} for m in METRICS}} for kind in UNIT_KINDS}
                        for p in s.get("matched", []) if "units" in p["heads"]}}


def _ablation_sets(a: dict) -> dict:
    return {"shared": a["shared"]["drop"], **{n: a[n]["mean_drop"] for n in ("random", "top_bio_only", "top_qa_only")},
            "sizes": {n: a[n]["size"] for n in ("shared", "random", "top_bio_only", "top_qa_only")}}


def _ablation_summary(a: dict) -> dict:
    """Drops (mean over seeds) at k and, when measured, for the same-size set `matched`."""
    m = a.get("matched")
    return {"k": a["k"], "unablated": a["unablated"], **_ablation_sets(a),
            "matched": m and {"fraction": m["fraction"], "depth": m["depth"], **_ablation_sets(m)}}


def _graft_line(g: dict) -> str:
    acc, b = g["graft"]["accuracy"], g.get("bracket")
    reach = (f"; reaches {g['recover']:.0%} of θ_ft's ID-QA between {b['miss']['size'] / g['traced']:.1%} and "
             f"{b['hit']['size'] / g['traced']:.1%} of them" if b else "")
    return (f"|γ|₀ {g['graft']['size']:,} of {g['traced']:,} traced entries, grafted ID {acc['qa_id']:.3f} "
            f"OOD {acc['qa_ood']:.3f}{reach}")


def _graft_summary(g: dict) -> dict:
    """The saved graft, and C5's sweep and bracket (sizes in entries of the `traced` block matrices)."""
    return {"size": g["graft"]["size"], "traced": g["traced"], "sparsity": g["sparsity"],
            "converged": g["converged"], "accuracy": g["graft"]["accuracy"],
            "base_patch_accuracy": g["base_patch"]["accuracy"],
            "shared_enrichment": g.get("shared_overlap", {}).get("enrichment"),
            "finetuned": g.get("finetuned"), "recover": g.get("recover"), "bracket": g.get("bracket"),
            "sweep": [{key: p[key] for key in ("sparsity", "size", "converged", "accuracy")}
                      for p in g.get("sweep", [])]}


def _circuit_line(c: dict) -> str:
    m = c["metrics"]["shared_size"]
    return f"shared_size {c['kind']}s: minimal sufficient {m['minimal_sufficient']}, critical {m['critical']} of {c['units']}"


def _circuit_summary(c: dict) -> dict:
    """Both n per metric (`random`: the medians over its permutations, and how many; the C6 ladder reads them)."""
    return {"units": c["units"], "unablated_qa_ood": c["unablated"]["qa_ood"],
            **{m: {"minimal_sufficient": v["minimal_sufficient"], "critical": v["critical"],
                   **({"rankings": len(v["permutations"])} if "permutations" in v else {})}
               for m, v in c["metrics"].items()}}


def _circuit(kind: str) -> Analysis:
    """Head or neuron curves: read the graft (the `graft_size` metric, `heads_on = grafted`). `random` is the median
    of `random_rankings` permutations on heads (C6); neurons, which no claim judges, take one."""
    points = (lambda a: [a.neuron_points]) if kind == "neuron" else (lambda a: [])
    rankings = (lambda a: a.random_rankings) if kind == "head" else (lambda a: 1)
    return Analysis(
        name=f"{kind}s", settings=lambda a: [a.k, a.heads_on, a.heads_eval_people, rankings(a), *points(a)],
        reads=("graft",),
        run=lambda run, a: circuit_curves(run, kind, k=a.k, eval_people=a.heads_eval_people, on=a.heads_on,
                                          random_rankings=rankings(a), device=a.device,
                                          **({"points": a.neuron_points} if kind == "neuron" else {})),
        writes=lambda run, a: [run.curves(kind, a.heads_on)],
        headline=_circuit_line, summary=_circuit_summary)


def _inspect_line(r: dict) -> str:
    return f"person {r['person']['person_id']} ({r['person']['split']}), head L{r['layer']}.H{r['head']}"


def _attention_line(a: dict) -> str:
    top = a.get("top_shared_head")
    if not top:
        return "attention shares per head"
    return (f"top shared head L{top['layer']}.H{top['head']}: relation share BIO {top['bio']['relation']:.2f} "
            f"QA {top['qa']['relation']:.2f}, subject share BIO {top['bio']['subject']:.2f} QA {top['qa']['subject']:.2f}")


def _attention_summary(a: dict) -> dict:
    """Mean over heads of the final token's attention share per label and form, and the top shared head's."""
    mean = {form: {label: sum(map(sum, rows)) / (a["layers"] * a["heads"]) for label, rows in table.items()}
            for form, table in a["shares"].items()}
    return {"mean_over_heads": mean, "top_shared_head": a.get("top_shared_head")}


def _consistency_line(c: dict) -> str:
    h = consistency_headline(c)
    probe = h["gradient_probe_gap"]
    rep = ", ".join(f"{p} {r['centred_gap']['value']:+.3f} (top-1 {r['top1']['value']:.3f})"
                    for p, r in h["representation"].items() if r)
    return f"gradient probe gap {'n/a' if probe is None else format(probe['value'], '+.3f')}; centred gap {rep}"


def _forgetting_line(f: dict) -> str:
    return "base population " + ", ".join(f"{m} {f['before'][m]:.3f} → {f['after'][m]:.3f}" for m in f["after"])


ANALYSES: tuple[Analysis, ...] = (
    Analysis(
        name="shared", settings=lambda a: [a.k, a.sweep, a.matched_sizes, a.null_draws], reads=(),
        run=lambda run, a: analyze_run(run, a.k, a.sweep, a.matched_sizes, a.null_draws),
        writes=lambda run, a: [run.shared, run.shared_mask],
        headline=_shared_line, summary=_shared_summary),
    Analysis(
        name="ablation", settings=lambda a: [a.ablation_k, a.ablation_seeds, a.ablation_eval_people, a.ablation_size],
        reads=(),
        run=lambda run, a: ablate_run(run, a.ablation_k, a.ablation_seeds, a.ablation_eval_people, device=a.device,
                                      size=a.ablation_size),
        writes=lambda run, a: [run.result("ablation")],
        headline=_ablation_line, summary=_ablation_summary),
    Analysis(
        name="graft", settings=lambda a: [a.graft_sparsity, a.graft_steps, a.graft_lr, a.graft_eval_people,
                                          a.graft_sparsities, a.graft_bracket],
        reads=("shared",),
        run=lambda run, a: graft_run(run, a.graft_sparsity, a.graft_steps, a.graft_lr,
                                     eval_people=a.graft_eval_people, device=a.device,
                                     grid=a.graft_sparsities, bracket=a.graft_bracket),
        writes=lambda run, a: [run.result("graft"), run.graft_mask],
        headline=_graft_line, summary=_graft_summary),
    _circuit("head"),
    _circuit("neuron"),
    Analysis(
        name="inspect", settings=lambda a: [], reads=("shared",),
        run=lambda run, a: inspect_run(run, device=a.device),
        writes=lambda run, a: [run.inspect.json], headline=_inspect_line),
    Analysis(
        name="attention", settings=lambda a: [a.attention_people], reads=("shared",),
        run=lambda run, a: attention_stats(run, people=a.attention_people, device=a.device),
        writes=lambda run, a: [run.result("attention")],
        headline=_attention_line, summary=_attention_summary),
    Analysis(
        name="consistency", settings=lambda a: [a.consistency_people, a.probe_people, a.bootstrap], reads=(),
        run=lambda run, a: consistency_run(run, people=a.consistency_people, probe_people=a.probe_people,
                                           device=a.device, bootstrap=a.bootstrap),
        writes=lambda run, a: [run.result("consistency")],
        headline=_consistency_line, summary=consistency_headline),
    Analysis(  # only a run from a built base has a population of its own to forget
        name="forgetting", settings=lambda a: [a.heads_eval_people], reads=(),
        run=lambda run, a: forgetting_run(run, a.heads_eval_people, a.device),
        writes=lambda run, a: [run.result("forgetting")],
        headline=_forgetting_line, summary=lambda f: {k: f[k] for k in ("before", "after")},
        applies=lambda run: run.base_record.is_file()),
)

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
