"""`factrecall show RUN|STUDY`: what a run or a study found, as terminal tables (or one JSON object), read from
the files they wrote — nothing is computed again.

* a run (`train`'s directory): its settings, accuracies after each phase, and the headline of every analysis
  written into it (`analysis/registry.py`), with the top shared heads and (layer, module) cells when `shared` ran;
* a study: its setting, the accuracies of both strategies, every Stage run (with `[stage_arms]`), and each
  claim's verdict with its one-line reason;
* a sweep: each claim's verdict over seeds per setting, and which points are missing.
"""

from __future__ import annotations

from pathlib import Path

from factrecall.analysis.config import DEFAULT
from factrecall.analysis.masks import load_mask
from factrecall.analysis.registry import ANALYSES
from factrecall.analysis.units import by_cell
from factrecall.artifacts import read_json
from factrecall.errors import UserError
from factrecall.layout import RunLayout, StudyLayout
from factrecall.terms import EVAL_SETS, STRATEGIES

TOP_HEADS = 5  # heads listed by their count of shared entries
TOP_CELLS = 5  # (layer, module) cells listed by their count of shared entries


def show(path: Path) -> dict:
    """What `path` (a run, a study or a sweep) holds, as {"kind", "title", "tables": [{title, columns, rows}],
    "lines": [...]}: the same content for the terminal (`render`) and for `--json`."""
    path = Path(path)
    if StudyLayout(path).record.is_file():
        files = StudyLayout(path)
        if not files.summary.is_file():
            raise UserError(f"{path} is a study without summary.json yet; run 'factrecall study --out {path}' to the end")
        summary = read_json(files.summary, "study summary")
        return _sweep(path, summary) if "sweep" in summary else _study(path, summary)
    if RunLayout(path).config.is_file():
        return _run(RunLayout(path))
    raise UserError(f"{path} is neither a run directory (config.json, from 'factrecall train') nor a study "
                    f"(study.json, from 'factrecall study'); give one of them")


def render(shown: dict) -> str:
    """`show`'s content as plain text: the title, its lines, then each table with aligned columns."""
    out = [shown["title"], *shown["lines"]]
    for table in shown["tables"]:
        rows = [table["columns"], *[[_cell(v) for v in row] for row in table["rows"]]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(table["columns"]))]
        out += ["", table["title"]]
        for i, row in enumerate(rows):
            out.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "—" if value is None else str(value)


def _table(title: str, columns: list[str], rows: list[list]) -> dict:
    return {"title": title, "columns": columns, "rows": rows}


def _run(run: RunLayout) -> dict:
    record = read_json(run.config, "run config")
    train = record.get("train", {})
    lines = [f"strategy {train.get('strategy')}, model {train.get('model')}, seed {train.get('seed')}, "
             f"data {str(record.get('data', {}).get('content_hash', ''))[:12]}"]
    tables = []
    if run.eval.is_file():
        evaluation = read_json(run.eval, "final evaluation")
        phases = evaluation.get("phases", {})
        rows = [[f"after {name}", *(phase[m]["accuracy"] for m in EVAL_SETS)] for name, phase in phases.items()]
        tables.append(_table("Accuracy (exact match)", ["", "ID-QA", "OOD-QA", "BIO"], rows))
    else:
        lines.append("not finished: no eval.json yet (resume with 'factrecall train --resume')")
    for analysis in ANALYSES:
        if analysis.path(run, DEFAULT).is_file():
            try:
                headline = analysis.headline(analysis.load(run, DEFAULT))
            except (KeyError, TypeError, IndexError):  # a result of an earlier factrecall's format
                headline = "written by an earlier factrecall's format: rerun the analysis (or the study) to read it"
            lines.append(f"{analysis.name}: {headline}")
    if run.shared.is_file():
        shared = read_json(run.shared, "shared parameters")
        heads = sorted(((count, layer, head) for layer, row in enumerate(shared["heads"])
                        for head, count in enumerate(row)), reverse=True)[:TOP_HEADS]
        tables.append(_table(f"Heads holding most of Shared({shared['k']:g}%), of {shared['shared']:,} entries",
                             ["head", "entries", "share"],
                             [[f"L{layer}.H{head}", f"{count:g}", count / max(shared["shared"], 1)]
                              for count, layer, head in heads]))
    if run.shared_mask.is_file():
        shared = load_mask(run.shared_mask, "shared")
        cells = sorted(by_cell({name: shared.count(name) for name in shared.index}).items(), key=lambda kv: -kv[1])
        total = max(sum(n for _, n in cells), 1)
        tables.append(_table("Where Shared sits: the layer and module cells holding most of it",
                             ["layer", "module", "entries", "share"],
                             [[layer, module, f"{n:,}", n / total] for (layer, module), n in cells[:TOP_CELLS]]))
    return {"kind": "run", "title": f"Run {run.root}", "lines": lines, "tables": tables}


def _study(path: Path, summary: dict) -> dict:
    lines = [f"preset {summary.get('preset')}"]
    if summary.get("plumbing_check"):
        lines.append("plumbing check: a smoke study trains for seconds, so its claims are no finding")
    if summary.get("not_fit"):
        lines.append(f"no claim can be judged: {summary['not_fit']}")
    accuracy = summary["accuracy"]
    tables = [_table("Accuracy (exact match; Stage: the run analysed)",
                     ["strategy", "ID-QA", "OOD-QA", "BIO after BIO training", "final BIO"],
                     [[s.capitalize(), accuracy[s]["qa_id"], accuracy[s]["qa_ood"],
                       accuracy[s]["bio_after_bio_training"], accuracy[s]["bio"]] for s in reversed(STRATEGIES)])]
    arms = summary.get("stage_arms")
    if arms:
        tables.append(_table("Stage runs (the analysed one marked *)", ["run", "ID-QA", "OOD-QA", "final BIO"],
                             [[r["label"] + (" *" if r["run"] == arms["chosen"] else ""), r["accuracy"]["qa_id"],
                               r["accuracy"]["qa_ood"], r["accuracy"]["bio"]] for r in arms["runs"]]))
    tables.append(_table("Claims", ["claim", "verdict", "why"],
                         [[c["id"], c["verdict"], c["why"]] for c in summary["claims"]]))
    return {"kind": "study", "title": f"Study {path}", "lines": lines, "tables": tables}


def _sweep(path: Path, summary: dict) -> dict:
    sweep = summary["sweep"]
    lines = [f"{sweep['finished']} of {sweep['points']} points finished"
             + (f"; missing: {', '.join(sweep['missing'])}" if sweep["missing"] else ""), *summary.get("changes", [])]
    groups = summary["groups"]
    ids = [c["id"] for c in groups[0]["claims"]] if groups else []
    rows = [[g["label"], len(g["finished"]), *(c["verdict"] for c in g["claims"])] for g in groups]
    return {"kind": "sweep", "title": f"Sweep {path}", "lines": lines,
            "tables": [_table("Claims over seeds (holds / does not hold on every finished seed, else undetermined)",
                              ["setting", "seeds", *ids], rows),
                       _table("Accuracy per finished point (Stage: the run analysed; BIO: at the end)",
                              ["point", "Mix ID-QA", "Mix OOD-QA", "Mix BIO", "Stage run", "Stage ID-QA",
                               "Stage OOD-QA", "Stage BIO", "fit"],
                              [_point_row(p) for p in summary["points"] if p.get("finished")])]}


def _point_row(point: dict) -> list:
    """A finished point's accuracies: Mix's, the analysed Stage run's (and which arm), and whether both fit."""
    s = point["summary"]
    mix, stage = s["accuracy"]["mix"], s["accuracy"]["stage"]
    arms = s.get("stage_arms")
    chosen = next((r["label"] for r in arms["runs"] if r["run"] == arms["chosen"]), None) if arms else "[train]"
    return [point["label"], mix["qa_id"], mix["qa_ood"], mix["bio"], chosen, stage["qa_id"], stage["qa_ood"],
            stage["bio"], "no" if s.get("not_fit") else "yes"]
