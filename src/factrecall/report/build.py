"""`report/index.html` of a study: one self-contained page (figures inline as PNG data, no external
files, no network), plus every figure as PNG and PDF under `report/figures/`.

Built from the study's artifacts only, so `factrecall report --study DIR` rebuilds it at any time.
Every string from data or configs goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
from matplotlib.figure import Figure

from factrecall.analysis.masks import load_mask
from factrecall.analysis.units import by_cell
from factrecall.analysis.registry import ANALYSES
from factrecall.artifacts import read_json, read_jsonl, write_bytes, write_json
from factrecall.errors import UserError
from factrecall.layout import RunLayout, StudyLayout
from factrecall.report import figures
from factrecall.report.inspect_html import fragment
from factrecall.report.save import literal_text, save_figure
from factrecall.study.summary import outdated_guard, study_artifacts
from factrecall.terms import STRATEGIES
from factrecall.training.config import QA_PHASE_SETTINGS


def _layer_module_grid(mask_file: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Shared entries per (layer, module) from a run's shared mask file."""
    shared = load_mask(mask_file, "shared")
    counts = by_cell({name: shared.count(name) for name in shared.index})
    layers = sorted({k[0] for k in counts}, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
    modules = sorted({k[1] for k in counts})
    grid = np.array([[counts.get((layer, module), 0) for module in modules] for layer in layers], dtype=float)
    return layers, modules, grid


@dataclass(frozen=True)
class Section:
    """One figure of the report: drawn from the study's artifacts ({name: {strategy: result}}) and runs."""
    id: str
    title: str
    caption: str
    draw: Callable[[dict, dict[str, RunLayout]], Figure]


# the report's figures per analysis of `registry.ANALYSES` (the report follows the registry's order);
# inspection is embedded as its own fragments, forgetting is in the bases table
SECTIONS: dict[str, tuple[Section, ...]] = {
    "shared": (
        Section("shared_sweep", "Shared parameters vs k", "|Top_BIO(k) ∩ Top_QA(k)| for a global and a per-tensor "
                "threshold; chance is (k/100)²·P (Fig. 2a).", lambda art, runs: figures.shared_sweep(art["shared"])),
        Section("shared_heatmap", "Where the shared parameters sit", "Shared entries (global threshold, default k) "
                "by layer and module.", lambda art, runs: figures.shared_heatmaps(
                    {s: _layer_module_grid(run.shared_mask) for s, run in runs.items()})),
        Section("concentration", "Concentration", "Shared entries per attention head and the Lorenz curve over MLP "
                "neurons (claim C3).", lambda art, runs: figures.concentration(art["shared"]))),
    "ablation": (Section("ablation", "Ablation", "Accuracy change after resetting each set to θ_pre; random and "
                         "Top∖Shared sets are size-matched, bars show the mean and spread over seeds (Fig. 2b).",
                         lambda art, runs: figures.ablation(art["ablation"])),),
    "graft": (Section("grafting", "Grafting", "Size of the learned graft mask and the grafted model's accuracy, "
                      "with the magnitude-only base patch for comparison (Fig. 3b).",
                      lambda art, runs: figures.grafting(art["graft"])),),
    "heads": (Section("heads", "Attention heads", "Sufficiency (keep θ_ft only in the top-n heads), criticality "
                      "(reset the top-n heads) and the fraction of parameters reset, per ranking metric (Fig. 4a–c).",
                      lambda art, runs: figures.circuit(art["heads"], "head")),),
    "neurons": (Section("neurons", "MLP neurons", "The same curves for MLP neurons.",
                        lambda art, runs: figures.circuit(art["neurons"], "neuron")),),
    "inspect": (),
    "attention": (Section("attention", "Attention on subject and relation", "Share of the final token's attention "
                          "on the subject's and the relation's tokens, per head, BIO vs QA (Fig. 5, aggregate).",
                          lambda art, runs: figures.attention(art["attention"])),),
    "consistency": (Section("consistency", "BIO–QA consistency", "Per layer: cosine between the BIO and QA trace "
                            "directions, and between hidden states of the same fact in BIO and QA form (claim C7).",
                            lambda art, runs: figures.consistency(art["consistency"])),),
    "forgetting": (),
}


def setting_line(config: dict, summary: dict) -> str:
    """The report's first screen: θ_pre, the Stage recipe the analyses took, and how much BIO it kept."""
    train, stage = config["train"], summary["accuracy"]["stage"]
    chosen = next((r for r in (summary.get("stage_arms") or {}).get("runs", [])
                   if r["run"] == summary["stage_arms"]["chosen"]), None)
    qa = {**{k: train.get(k) for k in QA_PHASE_SETTINGS},
          **(chosen["settings"] if chosen else {})}
    lr = qa["qa_phase_lr"] or train["lr"]
    wd = qa.get("qa_phase_weight_decay")
    decay = train["weight_decay"] if wd is None or wd < 0 else wd
    arms = summary.get("stage_arms")
    return (f"θ_pre: {', '.join(config.get('bases', ['random']))} ({train['model']}). Stage: BIO phase lr "
            f"{train['lr']:g} × {train['bio_epochs']} epochs, then QA phase lr {lr:g} × {qa['qa_epochs']} epochs, "
            f"weight decay {decay:g}" + (f", early stop at ID-QA {qa['qa_stop_at']:g}" if qa.get("qa_stop_at") else "")
            + (f", LoRA adapters of rank {qa['qa_phase_lora_rank']} only" if qa.get("qa_phase_lora_rank") else "")
            + (f" (the arm chosen of {len(arms['runs'])} Stage runs)" if arms else "")
            + f"; it keeps BIO at {stage['bio']:.3f} after its QA phase ({stage['bio_after_bio_training']:.3f} "
              f"after its BIO phase). Mix: lr {train['lr']:g}, {train['bio_epochs']} BIO and {train['qa_epochs']} "
              f"QA epochs interleaved.")


def build_report(study: Path, summary: dict | None = None) -> Path:
    """Write `study/report/index.html` (and `report/figures/*.png|pdf`); returns the page's path. A new
    `summary` is written to summary.json once every input has been read (else summary.json is read)."""
    study = Path(study)
    files = StudyLayout(study)
    if summary is None and not files.summary.is_file():
        raise UserError(f"{study} has no summary.json; run 'factrecall study --out {study}' first")
    fresh, summary = summary is not None, summary or read_json(files.summary, "study summary")
    record = read_json(files.record, "study record")
    art = study_artifacts(study)
    runs = {s: files.analysed(s) for s in STRATEGIES}
    metrics = {s: read_jsonl(run.metrics) for s, run in runs.items()}  # every input read before anything is written
    if fresh:
        write_json(files.summary, summary)
    figures_of = [
        Section("accuracy", "Fact recall: Stage vs Mix", "Exact-match accuracy of the final models on trained (ID) "
                "and held-out (OOD) questions and on the biographies (Fig. 1a).",
                lambda art, runs: figures.accuracy(summary["accuracy"])),
        Section("training", "Training curves", "Periodic evaluations on a subset of people; the dashed line marks "
                "Stage's switch from BIO to QA.",
                lambda art, runs: figures.training_curves(metrics)),
        *(section for analysis in ANALYSES if analysis.name in art for section in SECTIONS[analysis.name])]
    with literal_text():
        sections = [{"id": f.id, "title": f.title, "caption": f.caption,
                     "src": save_figure(outdated_guard(study, f"the figure {f.id!r}'s input",
                                                       lambda f: f.draw(art, runs), f), files.figures, f.id)}
                    for f in figures_of]
    inspections = [{"strategy": s, "html": fragment(result)} for s, result in art.get("inspect", {}).items()]
    env = jinja2.Environment(loader=jinja2.PackageLoader("factrecall", "report"), autoescape=True)
    page = env.get_template("template.html").render(
        study=str(study), summary=summary, sections=sections, inspections=inspections,
        setting=setting_line(record["config"], summary),
        config=json.dumps(record["config"], indent=2, ensure_ascii=False),
        provenance=json.dumps(record.get("provenance", {}), indent=2, ensure_ascii=False),
        manifest=read_json(files.manifest, "study manifest") if files.manifest.is_file() else {})
    out = files.report
    write_bytes(out, page.encode("utf-8"))
    return out


def build_reports(study: Path, summary: dict | None = None) -> Path:
    """The study's report and, when it compares several bases, each base's own report first; a new `summary`
    (`factrecall report`) is written with the study's report. A sweep's: each finished point's report (where
    missing or older than its summary), then the sweep's page (`report.sweep`)."""
    from factrecall.report.sweep import build_sweep_report

    listed = summary or read_json(StudyLayout(Path(study)).summary, "study summary")
    if "sweep" in listed:
        for point in listed["points"]:
            files = StudyLayout(Path(study) / point["dir"])
            if point["finished"] and (not files.report.is_file()
                                      or files.report.stat().st_mtime < files.summary.stat().st_mtime):
                build_reports(files.root)
        if summary is not None:
            write_json(StudyLayout(Path(study)).summary, summary)
        return build_sweep_report(study, listed)
    for entry in listed.get("bases", {}).values():
        root = Path(study) / Path(entry["report"]).parent.parent  # entry["report"]: <sub-study>/report/index.html
        if root != Path(study):
            build_report(root)
    return build_report(study, summary)
