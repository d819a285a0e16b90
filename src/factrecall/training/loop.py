"""The training loop: read it top to bottom.

    data ─▶ θ_pre (base/) ─▶ for each phase: fresh AdamW, warmup+cosine
                               for each optimizer step:
                                   for each single-task micro-batch: forward, backward (trace hooks,
                                       and gradient-consistency hooks when `grad_consistency` > 0)
                                   clip, step, log; evaluate / checkpoint now and then
                             ─▶ model/, trace.safetensors, eval.json

A run directory is resumable: its checkpoint holds the model, optimizer, trace, RNG and the step
index, and the schedule is a pure function of the config, so a resumed run continues exactly
where the interrupted one was.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from factrecall.artifacts import append_jsonl, as_json, atomic_directory, read_json, save_tensors, write_json
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.encode import Encoded, collate, encode_bio, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.base import write_base
from factrecall.models.loading import load_model
from factrecall.provenance import package_versions
from factrecall.training.checkpoint import load_checkpoint, save_checkpoint
from factrecall.training.config import TrainConfig
from factrecall.training.consistency import GradientConsistency
from factrecall.training.schedule import build_phases, lr_at
from factrecall.training.trace import TraceRecorder


def _run_record(cfg: TrainConfig, dataset: Dataset) -> dict:
    return {
        "train": as_json(asdict(cfg)),
        "data": {"path": str(dataset.path.resolve()), "content_hash": dataset.content_hash,
                 "config": dataset.meta.get("config")},
        "seeds": {"model_init": cfg.seed, "data_order": cfg.seed},
        "versions": package_versions(),
    }


def _prepare_run_dir(out: Path, record: dict, resume: bool, force: bool) -> bool:
    """Check what `out` holds; returns True when a checkpoint should be resumed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()):
        config = out / "config.json"
        if force:
            shutil.rmtree(out)
        elif not config.is_file():
            raise UserError(f"--out {out} is not empty and holds no run; choose another directory or pass --force")
        else:
            old = read_json(config, "run config")
            same = old.get("train") == record["train"] and old.get("data", {}).get("content_hash") == \
                record["data"]["content_hash"]
            if not resume:
                raise UserError(f"--out {out} already holds a run; pass --resume to continue it or --force to replace it")
            if not same:
                raise UserError(f"--out {out} holds a run with a different config or dataset; "
                                f"use another directory or --force to replace it")
            return (out / "checkpoint").is_dir()
    return False


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _micro_batch_loss(model, examples: list[Encoded], rows: tuple[int, ...], pad: int, accelerator) -> torch.Tensor:
    """This rank's share of a micro-batch's mean token loss.

    Rank r takes rows r, r+W, … of the micro-batch and divides its summed token loss by the
    micro-batch's total trained tokens / W; DDP's gradient average over W ranks then equals the
    single-process gradient of the whole micro-batch exactly (and so does the trace).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = rows[rank::world]
    weight = 1.0
    if not mine:  # a short last batch: this rank joins the backward with a zero-weighted row
        mine, weight = rows[:1], 0.0
    n_items = sum(examples[r].n_trained for r in rows) / world
    batch = {k: v.to(accelerator.device) for k, v in collate([examples[r] for r in mine], pad).items()}
    return model(**batch, num_items_in_batch=n_items).loss * weight


def train(cfg: TrainConfig, data_dir: Path, out: Path, resume: bool = False, force: bool = False) -> dict:
    """Train one strategy; writes the run directory and returns the final evaluation."""
    cfg.validate()
    out = Path(out)
    dataset = load_dataset(data_dir)
    record = _run_record(cfg, dataset)
    resuming = _prepare_run_dir(out, record, resume, force)  # checks a run in `out` has this config
    if resume and (out / "eval.json").is_file() and (out / "model").is_dir():
        return read_json(out / "eval.json", "final evaluation")
    if not (out / "config.json").is_file():  # a new run: θ_pre first, then the record that makes it a run
        write_base(cfg.model, dataset, cfg.seed, out / "base")
        write_json(out / "config.json", record)

    # cpu=True where no accelerator exists lets Accelerate run several CPU processes (gloo) under torchrun
    accelerator = Accelerator(cpu=torch.accelerator.current_accelerator() is None)
    model, tokenizer = load_model(out / "base")
    model.to(accelerator.device)
    pad = pad_id(tokenizer)
    examples = {"bio": [encode_bio(tokenizer, b) for b in dataset.bios],
                "qa": [encode_qa(tokenizer, q) for q in dataset.qa_split("id")]}
    phases = build_phases(cfg, len(examples["bio"]), len(examples["qa"]))
    periodic_sets = eval_sets(tokenizer, dataset, cfg.eval_people)
    full_sets = eval_sets(tokenizer, dataset)

    tracked = dict(model.named_parameters())
    tracked = {name: tracked[name] for name in tracked_parameter_names(model, cfg.trace_include)}
    trace = TraceRecorder(tracked, cfg.trace_mode) if cfg.trace else None
    consistency = GradientConsistency(tracked, cfg.grad_consistency) if cfg.grad_consistency else None
    metrics = out / "metrics.jsonl"

    start_phase, start_step, phase_evals, global_step = 0, 0, {}, 0
    checkpoint_dir = out / "checkpoint"
    if resuming:
        state = read_json(checkpoint_dir / "state.json", "checkpoint state")["position"]
        start_phase, start_step = state["phase"], state["step"]
        phase_evals, global_step = state["phase_evals"], state["global_step"]
        with open(metrics, "r+b") as f:  # drop lines logged after the checkpoint
            f.truncate(state["metrics_bytes"])

    def checkpoint(phase_index: int, step: int, optimizer) -> None:
        """Called by every rank. Saves the trace reduced over ranks: on resume each rank adds its new
        local sums to it, and the mean at the end is still the single-process trace."""
        trace_state = trace.reduced(accelerator) if trace else {}
        if accelerator.is_main_process:
            position = {"phase": phase_index, "step": step, "phase_evals": phase_evals, "global_step": global_step,
                        "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0}
            save_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, trace_state, position)
        accelerator.wait_for_everyone()

    model.train()
    for phase_index, phase in enumerate(phases):
        if phase_index < start_phase:
            continue
        optimizer = _optimizer(model, cfg)
        prepared_model, optimizer = accelerator.prepare(model, optimizer)
        if consistency:
            consistency.new_phase()
        first_step = 0
        if resuming and phase_index == start_phase:
            # a checkpoint at step 0 of a phase carries no optimizer state: each phase starts a fresh AdamW
            trace_state = load_checkpoint(checkpoint_dir, accelerator.unwrap_model(prepared_model),
                                          optimizer if start_step > 0 else None)
            if trace:
                trace.load_state_dict(trace_state)
            first_step = start_step
        n_steps = len(phase.steps)
        bar = tqdm(range(first_step, n_steps), desc=f"{cfg.strategy}:{phase.name}", initial=first_step,
                   total=n_steps, disable=not accelerator.is_local_main_process, leave=False)
        for step in bar:
            t0 = time.perf_counter()
            lr = lr_at(step, n_steps, phase.peak_lr, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses: dict[str, list[float]] = {}
            micro_batches = phase.steps[step]
            for i, mb in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                sync = contextlib.nullcontext() if last else accelerator.no_sync(prepared_model)
                attribute = trace.attribute(mb.task, lr) if trace else contextlib.nullcontext()
                observe = consistency.attribute(mb.task, global_step + 1) if consistency else contextlib.nullcontext()
                with sync:  # DDP all-reduces only on a step's last micro-batch
                    loss = _micro_batch_loss(prepared_model, examples[mb.task], mb.rows, pad, accelerator)
                    with attribute, observe:
                        accelerator.backward(loss / len(micro_batches))
                losses.setdefault(mb.task, []).append(loss.item())
            grad_norm = accelerator.clip_grad_norm_(prepared_model.parameters(), cfg.clip) if cfg.clip else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            row = {"event": "step", "phase": phase.name, "step": step, "global_step": global_step, "lr": lr,
                   "loss": {t: sum(v) / len(v) for t, v in losses.items()},
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "seconds": time.perf_counter() - t0}
            cosines = consistency.report(global_step) if consistency else None
            if cosines:
                row["grad_cosine"] = cosines
            if accelerator.is_main_process:
                append_jsonl(metrics, row)
            bar.set_postfix({t: f"{v:.3f}" for t, v in row["loss"].items()})
            if cfg.eval_every and global_step % cfg.eval_every == 0 and accelerator.is_main_process:
                append_jsonl(metrics, {"event": "eval", "phase": phase.name, "global_step": global_step,
                                       "subset_people": cfg.eval_people,
                                       **_accuracies(evaluate(model, periodic_sets, pad))})
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < n_steps:
                checkpoint(phase_index, step + 1, optimizer)
        bar.close()
        if accelerator.is_main_process:
            phase_evals[phase.name] = evaluate(model, full_sets, pad)
            append_jsonl(metrics, {"event": "eval", "phase": phase.name, "global_step": global_step,
                                   "phase_end": True, **_accuracies(phase_evals[phase.name])})
        if phase_index + 1 < len(phases):
            checkpoint(phase_index + 1, 0, optimizer)

    trace_state = trace.reduced(accelerator) if trace else None  # a collective: every rank takes part
    if trace:
        trace.close()
    if consistency:
        consistency.close()
    if accelerator.is_main_process:
        if trace_state is not None:
            save_tensors(out / "trace.safetensors", trace_state, metadata={
                "model": cfg.model, "strategy": cfg.strategy, "mode": cfg.trace_mode,
                "dataset_hash": dataset.content_hash,
                "steps": json.dumps({p.name: len(p.steps) for p in phases})})
        with atomic_directory(out / "model") as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        write_json(out / "eval.json", {**phase_evals[phases[-1].name], "phases": phase_evals})
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    return read_json(out / "eval.json", "final evaluation")


def _accuracies(evaluation: dict) -> dict:
    return {name: {"accuracy": r["accuracy"], "first_token_accuracy": r["first_token_accuracy"]}
            for name, r in evaluation.items()}
