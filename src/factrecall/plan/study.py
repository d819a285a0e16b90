"""The plan of a preset's study, what `factrecall plan` prints: training per GPU (`plan_training.py`), each
analysis on one GPU (`plan_analyses.py`) and the disk of a run and of the whole study (`plan_disk.py`)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from factrecall.config.study import SWEEP_KEYS, read_config_file, study_config
from factrecall.errors import UserError
from factrecall.models.spec import spec_config
from factrecall.plan.analyses import analyses_plan
from factrecall.plan.disk import checkpoints_written, dataset_counts, run_bytes, study_disk_bytes
from factrecall.plan.training import GIB, PlanSettings, data_vocabulary, model_shapes, plan
from factrecall.terms import STRATEGIES


def format_plan(p: dict) -> str:
    """The plan as a text table (GiB)."""
    def gib(b: int) -> str:
        return f"{b / GIB:8.2f}"
    m, s = p["model"], p["settings"]
    lines = [f"{m['family']}: {m['parameters'] / 1e9:.3f} B parameters, {m['traced'] / 1e9:.3f} B traced; "
             f"{s['gpus']} GPU(s) of {s['gpu_memory_gib']:g} GiB, {s['precision']}, micro-batch "
             f"{s['bio_rows']} bios × {s['seq_len']} / {s['qa_rows']} questions × {s['qa_seq_len']} tokens",
             "", f"{'per GPU (GiB)':<28}{'DDP':>10}{'FSDP2':>10}"]
    ddp, fsdp = p["per_gpu"]["ddp"], p["per_gpu"]["fsdp"]
    keys = ["weights", "gradients", "optimizer", "trace", "ddp_buckets", "unsharded_working_set"]
    for key in keys:
        lines.append(f"{key:<28}{gib(ddp['state'].get(key, 0)):>10}{gib(fsdp['state'].get(key, 0)):>10}")
    for mode in ("plain", "checkpointing"):
        label = "activations" + (" (checkpointing)" if mode == "checkpointing" else "")
        lines.append(f"{label:<28}{gib(ddp[mode]['activations']):>10}{gib(fsdp[mode]['activations']):>10}")
        copies = "  autocast weight copies"
        lines.append(f"{copies:<28}{gib(ddp[mode]['autocast_weight_copies']):>10}"
                     f"{gib(fsdp[mode]['autocast_weight_copies']):>10}")
        lines.append(f"{'  total':<28}{gib(ddp[mode]['total']):>10}{gib(fsdp[mode]['total']):>10}")
        fits = ["yes" if layout[mode]["fits"] else "no" for layout in (ddp, fsdp)]
        lines.append(f"{'  fits':<28}{fits[0]:>10}{fits[1]:>10}")
    fits = ["yes" if layout["evaluation"]["fits"] else "no" for layout in (ddp, fsdp)]
    lines += [f"{'evaluation between steps':<28}{gib(ddp['evaluation']['total']):>10}"
              f"{gib(fsdp['evaluation']['total']):>10}", f"{'  fits':<28}{fits[0]:>10}{fits[1]:>10}"]
    need = p["fsdp_gpus_needed"]
    lines.append("")
    lines.append(f"FSDP2 GPUs needed: {need['plain'] or '> 64'} (plain), {need['checkpointing'] or '> 64'} "
                 f"(gradient checkpointing); host memory while saving {p['host_memory_at_save'] / GIB:.2f} GiB"
                 if p["fsdp_supported"] else f"FSDP2: not supported for the {m['family']} family (train refuses "
                 f"it; use DDP); host memory while saving {p['host_memory_at_save'] / GIB:.2f} GiB")
    if "analyses" in p:  # a preset's plan: its analyses and disk too
        lines += ["", f"{'analyses on one GPU (GiB)':<28}{'total':>10}{'fits':>6}  peak at (weights + …)"]
        for name, a in p["analyses"].items():
            lines.append(f"{'  ' + name:<28}{gib(a['total']):>10}{'yes' if a['fits'] else 'no':>6}  {a['peak']}")
        lines += ["", *_disk_lines(p["disk"]["run"], p["disk"]["study"])]
    return "\n".join(lines)


def _disk_lines(run: dict, study: dict) -> list[str]:
    def items(d: dict, labels: dict[str, str], sep: str) -> str:
        return sep.join(f"{label} {d[key] / GIB:.2f}" for key, label in labels.items())
    parts = {"base": "θ_pre", "model": "θ_ft", "trace": "trace", "checkpoint": "checkpoint", "other": "other"}
    terms = {"runs": "runs", "analysis_masks": "masks", "built_bases": "built bases", "data": "data",
             "training_excess": "one training's excess"}
    return [f"disk (GiB), a run: peak {run['peak'] / GIB:.2f}, keeps {run['kept'] / GIB:.2f}; {items(run, parts, ', ')}"
            f" ({min(run['checkpoints'], 2)} checkpoint(s) at once)",
            f"disk (GiB), the study: peak {study['peak'] / GIB:.2f} = {items(study, terms, ' + ')}"]


def preset_plan(preset: str | None, gpus: int = 1, gpu_memory_gib: float = 80.0, seq_len: int = 128,
                qa_seq_len: int = 32, precision: str | None = None, config: Path | None = None) -> dict:
    """The plan of a study (a preset, or a study config `config` over its preset): training (`precision` defaults
    to the config's), the analyses on one GPU (`plan_analyses.py`) and the disk of a run and of the study
    (`plan_disk.py`)."""
    if config is not None and set(read_config_file(config)) & set(SWEEP_KEYS):
        raise UserError(f"{config} is a sweep; 'factrecall plan' plans one study: give a config without seeds, "
                        f"[sweep] or points (e.g. the setting of its largest point)")
    study = study_config(preset, config)
    preset = study.preset
    cfg, data = study.train, study.data
    if precision is not None and precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose one of fp32, bf16")
    if min(seq_len, qa_seq_len) < 1:
        raise UserError(f"--seq-len and --qa-seq-len must be at least 1 (got {seq_len}, {qa_seq_len})")
    if not (math.isfinite(gpu_memory_gib) and gpu_memory_gib > 0):
        raise UserError(f"--gpu-memory must be a positive number of GiB (got {gpu_memory_gib})")
    shapes = model_shapes(spec_config(cfg.model, lambda: data_vocabulary(data)), cfg.trace_include)
    settings = PlanSettings(bio_rows=cfg.bio_batch_size, qa_rows=cfg.qa_batch_size, seq_len=seq_len,
                            qa_seq_len=qa_seq_len, precision=precision or cfg.precision, gpus=gpus,
                            gpu_memory_gib=gpu_memory_gib)
    runs = [run_bytes(shapes, run, checkpoints_written(run, *dataset_counts(data)))
            for run in (replace(cfg, strategy=strategy) for strategy in STRATEGIES)]
    return {"preset": preset, "model_name": cfg.model, **plan(shapes, settings),
            "analyses": analyses_plan(shapes, settings, study.analysis, data),
            "disk": {"run": max(runs, key=lambda r: r["peak"]), "study": study_disk_bytes(study)}}
