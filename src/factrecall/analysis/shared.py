"""`factrecall shared`: Shared(k) of a run at k and over a sweep, in both threshold modes (docs/method.md §5).

Writes `RUN/shared/shared.json` (the summary of `selection.scan` at every point: sizes, chance,
enrichment, Jaccard, breakdowns by layer, module and unit, concentration) and
`RUN/shared/mask.safetensors` (Shared, Top_BIO and Top_QA at k, global threshold), which the
other analyses read instead of selecting again. `matched` holds the concentration of sets of exact
sizes (fractions of the tracked entries, the same in every run: `selection.matched`) against two
placement nulls (`units.concentration_against_null`), so two runs compare at the same |set|.
"""

from __future__ import annotations

from pathlib import Path

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.declaration import Analysis
from factrecall.analysis.masks import save_masks
from factrecall.analysis.run import load_trace, model_config
from factrecall.analysis.selection import MODES, Point, matched, scan
from factrecall.analysis.threshold import fraction_count
from factrecall.analysis.units import METRICS, NULLS, UNIT_KINDS
from factrecall.analysis.units import concentration_against_null
from factrecall.artifacts import write_json
from factrecall.layout import RunLayout

_HEADLINE = ("top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")


def run_points(k: float, sweep: tuple[float, ...]) -> list[Point]:
    """The points `analyze_run` reports: k in both modes, then every sweep value in both modes."""
    return list(dict.fromkeys([(k, "global"), (k, "per_tensor")] + [(s, mode) for s in sweep for mode in MODES]))


def analyze_run(run: Path, k: float = DEFAULT.shared.k, sweep: tuple[float, ...] = DEFAULT.shared.sweep,
                matched_sizes: tuple[float, ...] = DEFAULT.shared.matched_sizes, null_draws: int = DEFAULT.shared.null_draws) -> dict:
    """Write `run/shared/shared.json` and `run/shared/mask.safetensors` (global, at k); return the JSON."""
    run = Path(run)
    trace, config = load_trace(run), model_config(run)
    summaries, selection = scan(trace, config, run_points(k, sweep), keep=(k, "global"))
    save_masks(RunLayout(run).shared_mask,
               {"shared": selection.shared, "top_bio": selection.top_bio, "top_qa": selection.top_qa},
               {"k": str(k), "mode": "global"})
    result = summaries[(k, "global")]  # the global threshold at the top level, as in the paper
    result["per_tensor"] = summaries[(k, "per_tensor")]
    result["sweep"] = [{"k": s, **{mode: {key: summaries[(s, mode)][key] for key in _HEADLINE} for mode in MODES}}
                       for s in sweep]
    counts = {f: fraction_count(f, trace.entries) for f in matched_sizes}
    sets = matched(trace, sorted(set(counts.values()))) if counts else {}
    result["matched"] = [{"fraction": f, "size": n, "depth": sets[n].depth, "null_draws": null_draws,
                          **concentration_against_null(config, sets[n].shared, null_draws)} for f, n in counts.items()]
    write_json(RunLayout(run).shared, result)
    return result


HEADLINE = ("k", *_HEADLINE)  # the keys of shared.json its summary entry keeps


def _line(s: dict) -> str:
    return (f"|Shared| {s['shared']} at k={s['k']:g}% (enrichment {s['enrichment']:.1f}), "
            f"Gini heads {s['gini']['heads']:.2f}")


def _entry(s: dict) -> dict:
    """The headline at k, and per matched size (keyed by its fraction, "0.01") its concentration per unit kind:
    entries, units, and per measure the observed value and each null's excess and sd. Results written before
    the two nulls existed summarise without them."""
    return {**{key: s[key] for key in HEADLINE},
            "matched": {f"{p['fraction']:g}": {"size": p["size"], "depth": p["depth"]}
                        | {kind: {"entries": p[kind]["entries"], "units": p[kind]["units"],
                                  **{m: {"observed": p[kind][m][NULLS[0]]["observed"],
                                         **{null: {key: p[kind][m][null][key] for key in ("excess", "null_sd")}
                                            for null in NULLS}} for m in METRICS}} for kind in UNIT_KINDS}
                        for p in s.get("matched", []) if "units" in p["heads"]}}


ANALYSIS = Analysis(
    name="shared", reads=(),
    run=lambda run, a: analyze_run(run, a.shared.k, a.shared.sweep, a.shared.matched_sizes, a.shared.null_draws),
    writes=lambda run, a: [run.shared, run.shared_mask], headline=_line, summary=_entry)
