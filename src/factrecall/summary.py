"""`summary.json` of a study, built from its artifacts alone (so `factrecall report` can rebuild it).

    accuracy.{stage,mix}.{qa_id, qa_ood, bio, bio_after_bio_training}
    shared / ablation / graft / heads / neurons / attention / consistency: headline numbers per strategy
    claims: [{id, statement, holds, evidence}] for C1–C7 (docs/method.md §11)
"""

from __future__ import annotations

from pathlib import Path

from factrecall.artifacts import read_json
from factrecall.claims import (c1_accuracy, c2_shared_size, c3_concentration, c4_ablation, c5_grafting, c6_heads,
                               c7_consistency, consistency_headline)
from factrecall.layout import StudyLayout
from factrecall.presets import BASE_KINDS
from factrecall.training.config import STRATEGIES

HEADLINE_SHARED = ("k", "top_bio", "top_qa", "shared", "chance", "enrichment", "jaccard", "gini", "top_unit_share")


def study_artifacts(study: Path) -> dict[str, dict[str, dict]]:
    """{artifact: {strategy: its JSON}} for every artifact a study writes per run."""
    files = StudyLayout(Path(study))
    on = read_json(files.record, "study record")["config"]["analysis"]["heads_on"]
    paths = {"eval": lambda run: run.eval, "shared": lambda run: run.shared,
             **{name: lambda run, name=name: run.result(name) for name in ("ablation", "graft", "attention",
                                                                          "consistency")},
             "heads": lambda run: run.curves("head", on), "neurons": lambda run: run.curves("neuron", on)}
    return {name: {s: read_json(path(files.run(s)), name) for s in STRATEGIES} for name, path in paths.items()}


def _accuracy(result: dict) -> dict:
    first_phase = next(iter(result["phases"].values()))
    return {"qa_id": result["qa_id"]["accuracy"], "qa_ood": result["qa_ood"]["accuracy"],
            "bio": result["bio"]["accuracy"], "bio_after_bio_training": first_phase["bio"]["accuracy"]}


def _circuit(c: dict) -> dict:
    return {"units": c["units"], "unablated_qa_ood": c["unablated"]["qa_ood"],
            **{m: {"minimal_sufficient": v["minimal_sufficient"], "critical": v["critical"]}
               for m, v in c["metrics"].items()}}


def _attention(a: dict) -> dict:
    """Mean over heads of the final token's attention share per label and form, and the top shared head's."""
    mean = {form: {label: sum(map(sum, rows)) / (a["layers"] * a["heads"]) for label, rows in table.items()}
            for form, table in a["shares"].items()}
    return {"mean_over_heads": mean, "top_shared_head": a.get("top_shared_head")}


def summarize_study(study: Path) -> dict:
    art = study_artifacts(study)
    accuracy = {s: _accuracy(art["eval"][s]) for s in STRATEGIES}
    per = {
        "shared": lambda x: {key: x[key] for key in HEADLINE_SHARED},
        "ablation": lambda a: {"k": a["k"], "unablated": a["unablated"], "shared": a["shared"]["drop"],
                               **{n: a[n]["mean_drop"] for n in ("random", "top_bio_only", "top_qa_only")}},
        "graft": lambda g: {"size": g["graft"]["size"], "parameters": g["parameters"], "sparsity": g["sparsity"],
                            "accuracy": g["graft"]["accuracy"], "base_patch_accuracy": g["base_patch"]["accuracy"],
                            "shared_enrichment": g.get("shared_overlap", {}).get("enrichment")},
        "heads": _circuit,
        "neurons": _circuit,
        "attention": _attention,
        "consistency": consistency_headline,
    }
    files = StudyLayout(Path(study))
    config = read_json(files.record, "study record")["config"]
    preset = config["preset"]
    summary = {"preset": preset, "accuracy": accuracy, **{name: {s: f(art[name][s]) for s in STRATEGIES} for name, f in per.items()}}
    forgetting = {s: files.run(s).result("forgetting") for s in STRATEGIES}
    if all(f.is_file() for f in forgetting.values()):
        summary["forgetting"] = {s: {k: v for k, v in read_json(f, "forgetting").items() if k in ("before", "after")}
                                 for s, f in forgetting.items()}
    summary["claims"] = [c1_accuracy(accuracy), c2_shared_size(art["shared"]), c3_concentration(art["shared"]),
                         c4_ablation(art["ablation"]), c5_grafting(art["graft"], accuracy),
                         c6_heads(art["heads"], art["neurons"]), c7_consistency(art["consistency"])]
    bases = config.get("bases", ["random"])
    if len(bases) > 1:  # the first base is this study's own; each other one is a study under bases/<name>/
        roots = {base_name(b): (files.sub_study(base_name(b)) if i else files) for i, b in enumerate(bases)}
        summary["bases"] = {name: _base_entry(summary if root == files else summarize_study(root.root),
                                              StudyLayout(root.root.relative_to(study))) for name, root in roots.items()}
    return summary


def base_name(base: str) -> str:
    """A base's name in step names and folders: its kind, or its directory's name."""
    return base if base in BASE_KINDS else Path(base).name


def _base_entry(summary: dict, where: StudyLayout) -> dict:
    """A base's row of the comparison; `where` is its study, relative to the main study."""
    return {"accuracy": summary["accuracy"], "forgetting": summary.get("forgetting"),
            "claims": [{k: c[k] for k in ("id", "holds", "evidence")} for c in summary["claims"]],
            "report": str(where.report)}
