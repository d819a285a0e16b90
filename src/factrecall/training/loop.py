"""The training loop: read it top to bottom (`_train`, then its parts in the order they run).

    data ─▶ θ_pre (base/) ─▶ for each phase: fresh AdamW, warmup+cosine                   `_open_run`, `_start`
                               for each optimizer step:                                   `_train_phase`
                                   for each single-task micro-batch: forward, backward    `_step`
                                       (trace hooks, and gradient-consistency hooks when `grad_consistency` > 0;
                                       trace normalisation "example_sum": the trace's own backward first)
                                   clip, step (trace mode "update": the step's change), log;
                                   evaluate / checkpoint now and then                     `_evaluate_between_steps`,
                                   (Stage's QA phase may end at an evaluation: `qa_stop_at`)  `_checkpoint`
                               Stage's BIO phase ends: bio_phase/ kept (what `start_from` forks from)
                             ─▶ model/, trace.safetensors, eval.json                      `_write_results`

A run directory is resumable: its checkpoint holds the model, optimizer, trace, RNG and the step
index, and the schedule is a pure function of the config, so a resumed run continues exactly
where the interrupted one was: `metrics.jsonl` is cut back to its length at the checkpoint (to
nothing without one) and the trace's header has a fixed order, so a resumed run writes what an
uninterrupted one writes, byte for byte (the `seconds` of each step row aside). The main process
holds the run directory's lock (`factrecall.locks`) throughout; an `--out` over the data or model
directory is refused before anything is deleted.

Stage keeps its state at the end of the BIO phase (`bio_phase/`: the checkpoint at phase 1, step 0, and the
log so far) after the run. `start_from` forks from it: a Stage run that differs only in its QA phase
(`config.QA_PHASE_SETTINGS`; `run_dir.donor_run` refuses any other difference) starts there as a resumed run,
and writes what the same run trained from scratch writes. Stage's QA phase may stop early (`qa_stop_at`) at a
periodic evaluation; its schedule stays that of the whole phase. It may train LoRA adapters only
(`qa_phase_lora_rank`, `training/lora.py`): traced by its merged update, merged into model/ at the end.

Scale (the same code on one CPU process and on n GPUs, started by `torchrun` or `accelerate launch`):

* every rank takes every W-th row of each micro-batch (`_micro_batch_loss`), so W must divide the
  micro-batch sizes, and the averaged gradient is the single-process one;
* `distributed="ddp"`: Accelerate's DDP; every rank holds the whole model, optimizer and trace;
* `distributed="fsdp"`: FSDP2 (`torch.distributed.fsdp.fully_shard`, per block, then the root):
  parameters, gradients, AdamW moments and trace accumulators are sharded by rows over the ranks,
  gradients are reduce-scattered after every micro-batch (the trace needs each one), and every
  rank runs the evaluations (a sharded forward is a collective);
* `precision="bf16"`: forward and backward under `torch.autocast(bfloat16)` on the run's device
  (what Accelerate's `mixed_precision="bf16"` does, without fixing it for the whole process:
  Accelerate's state is a per-process singleton, and a process may train several runs);
  weights, gradients, AdamW state and the trace stay float32; bf16 needs no loss scaling;
* `gradient_checkpointing`: each block's activations are recomputed in the backward pass
  (non-reentrant, so parameter hooks and the trace see the same gradients).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.distributed.tensor import DTensor

from factrecall.artifacts import (
    append_jsonl,
    as_json,
    atomic_directory,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.devices import resolve_device
from factrecall.encode import Encoded, collate, encode_bio, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.layout import RunLayout
from factrecall.locks import refuse_overlap
from factrecall.models.adapters import adapter_for, tracked_parameter_names
from factrecall.models.base import source_dtype, write_base
from factrecall.models.compat import enable_gradient_checkpointing
from factrecall.models.families import FAMILIES
from factrecall.models.loading import load_model
from factrecall.models.spec import spec_family
from factrecall.progress import progress
from factrecall.provenance import package_versions
from factrecall.training import live, lora
from factrecall.training.checkpoint import (
    checkpoint_position,
    full_optimizer_state,
    full_parameters,
    load_checkpoint,
    save_checkpoint,
)
from factrecall.training.config import TrainConfig, train_record
from factrecall.training.consistency import GradientConsistency
from factrecall.training.run_dir import (
    check_same_base,
    discard_new_run,
    donor_run,
    model_directory,
    prepare_run_dir,
    resume_point,
    run_lock,
    truncate_log,
)
from factrecall.training.schedule import Phase, build_phases, lr_at
from factrecall.training.trace import TraceRecorder, save_trace


def _run_record(cfg: TrainConfig, dataset: Dataset) -> dict:
    return {
        "train": train_record(cfg),
        "data": {"path": str(dataset.path.resolve()), "content_hash": dataset.content_hash,
                 "config": dataset.meta.get("config")},
        "seeds": {"model_init": cfg.seed, "data_order": cfg.seed},
        "base": {"source": cfg.model, "checkpoint_dtype": source_dtype(cfg.model)},  # θ_pre is float32 whatever it was
        "versions": package_versions(),
    }


def _optimizer(model, cfg: TrainConfig, weight_decay: float | None = None) -> torch.optim.Optimizer:
    """A fresh AdamW over the trainable tensors (a LoRA phase: the adapters); `weight_decay` (a phase's; None:
    cfg's) on tensors with ≥ 2 dimensions only."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    weight_decay = cfg.weight_decay if weight_decay is None else weight_decay
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _accelerator(cfg: TrainConfig, log_with: str | None = None, live: Path | None = None) -> Accelerator:
    """The process's Accelerator (with a live tracker, `live.tracker`), after refusing settings this machine
    or process count cannot run."""
    device = resolve_device(cfg.device)
    # cpu=True where no GPU exists lets Accelerate run several CPU processes (gloo) under torchrun
    accelerator = Accelerator(cpu=device.type == "cpu", log_with=log_with, project_dir=live)
    # Accelerate's gradient state is one per process: a `transformers.Trainer` that ran before in this process
    # leaves its accumulation steps (backward would divide our loss) and sync flag (the prepared optimizer
    # would skip every step) behind. This loop accumulates by itself, so it sets both.
    accelerator.gradient_accumulation_steps = 1
    accelerator.gradient_state._set_sync_gradients(True)
    world = accelerator.num_processes
    for name in ("bio_batch_size", "qa_batch_size"):
        if getattr(cfg, name) % world:
            raise UserError(f"{name} {getattr(cfg, name)} is not divisible by the {world} processes; "
                            f"choose a multiple of {world} or launch a number of processes that divides it")
    if world > 1 and cfg.distributed == "ddp" and cfg.trace and cfg.trace_mode == "abs":
        raise UserError("trace mode 'abs' under DDP would sum each rank's |g| instead of |g| of the averaged "
                        "gradient; use --distributed fsdp (it sees the averaged gradient) or one process")
    if world > 1 and cfg.distributed == "fsdp" and cfg.trace and cfg.trace_normalization == "example_sum":
        raise UserError("trace normalization 'example_sum' takes a second backward to the parameters, which FSDP "
                        "shards outside the graph; use --distributed ddp or one process")
    if cfg.distributed == "fsdp":  # refused even on one process, where it would run unsharded
        family = spec_family(cfg.model)
        if not family.fsdp:
            supported = ", ".join(f.name for f in FAMILIES if f.fsdp)
            raise UserError(f"distributed 'fsdp' does not support the {family.name!r} family of {cfg.model}; "
                            f"supported: {supported} (use --distributed ddp)")
        if cfg.grad_consistency:
            raise UserError("grad_consistency needs each rank's full gradients, which FSDP never holds; "
                            "set it to 0 or use --distributed ddp")
    return accelerator


def _shard(model) -> None:
    """FSDP2 in place: each block, then the root (embeddings, final norm, unembedding)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.get_submodule(adapter_for(model.config).layers):
        fully_shard(block)
    fully_shard(model)


def _micro_batch_loss(model, examples: list[Encoded], rows: tuple[int, ...], pad: int, accelerator,
                      bf16: bool = False, example_sum: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This rank's share of a micro-batch's mean token loss, and with `example_sum` W × its rows' Σ_n ℓ_n
    (`_example_sum`; else None), whose rank average is the whole micro-batch's sum.

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
    with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=bf16):
        out = model(**batch, num_items_in_batch=n_items)
    loss = out.loss * weight
    return loss, _example_sum(out.logits, batch["labels"]) * (world * weight) if example_sum else None


def _example_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ_n ℓ_n over the rows, ℓ_n the mean cross-entropy of row n's trained tokens, each predicted from the
    position before (logits [B, T, V], cast to float32 as the model's own loss does; labels [B, T], -100 where
    untrained). A scalar."""
    targets = labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    return (tokens.sum(1) / (targets != -100).sum(1).clamp(min=1)).sum()


def train(cfg: TrainConfig, data_dir: Path, out: Path, resume: bool = False, force: bool = False,
          report_to: str = "none", start_from: Path | None = None) -> dict:
    """Train one strategy; writes the run directory and returns the final evaluation. `report_to`
    ("tensorboard", "wandb") also logs every metrics row live (`training/live.py`). `start_from` (a Stage
    run directory or its bio_phase/): start this Stage run's QA phase from that run's kept BIO phase.

    Refused before anything is written or deleted: an `out` that is, contains or lies inside the
    data or model directory or the run it reads, an `out` another process is writing (its lock), and a
    `start_from` whose BIO phase is not this run's (`run_dir.donor_run`)."""
    cfg.validate()
    out = Path(out)
    log_with = live.tracker(report_to)
    accelerator = _accelerator(cfg, log_with, RunLayout(out).live if log_with else None)
    dataset = load_dataset(data_dir)
    record = _run_record(cfg, dataset)
    donor = None
    if start_from is not None:
        donor, record["start_from"] = donor_run(start_from, record)
    refuse_overlap(out, [("data directory", data_dir), ("model directory", model_directory(cfg.model)),
                         ("run to start from", donor.root if donor else None)], "train")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    with run_lock(out, accelerator):
        try:
            return _train(cfg, accelerator, dataset, record, out, resume, force, donor, live_tracker=bool(log_with))
        finally:
            if log_with:
                accelerator.end_training()


def _train(cfg: TrainConfig, accelerator, dataset: Dataset, record: dict, out: Path, resume: bool,
           force: bool, donor: RunLayout | None, live_tracker: bool = False) -> dict:
    """`train` under the run directory's lock, in its parts: the run directory, the run opened (θ_pre, model,
    data, trace), where it starts, each phase, the files it leaves. `donor`: the run a fork starts from;
    `live_tracker`: start the live tracker once `out` is checked."""
    files = RunLayout(out)
    prepare_run_dir(out, record, resume, force, accelerator.is_main_process)  # same config?
    if live_tracker:  # after the check: TensorBoard's writer creates RUN/live/ at once
        accelerator.init_trackers(out.name, config=live.hyperparameters(as_json(asdict(cfg))))
    accelerator.wait_for_everyone()
    if resume and files.finished:
        return read_json(files.eval, "final evaluation")
    run = _open_run(cfg, accelerator, dataset, record, files, donor, live_tracker)
    start = _start(run, donor)
    for index in range(start.phase, len(run.phases)):
        _train_phase(run, index, start if index == start.phase and start.source else None)
    _write_results(run)
    accelerator.wait_for_everyone()
    return read_json(files.eval, "final evaluation")


@dataclass
class _Run:
    """What a training run holds while it trains, on every rank. `model` is rebound when a LoRA phase wraps it;
    `global_step`, `phase_evals` and `steps_run` (a phase stopped early ran fewer) move as it trains."""
    cfg: TrainConfig
    accelerator: Accelerator
    dataset: Dataset
    files: RunLayout
    model: torch.nn.Module
    tokenizer: object
    pad: int  # the tokenizer's padding id
    examples: dict[str, list[Encoded]]  # per task, in the dataset's order
    phases: list[Phase]
    periodic_sets: dict  # evaluation sets of `eval_people` people (between steps)
    full_sets: dict  # of every person (at each phase's end)
    trace: TraceRecorder | None
    consistency: GradientConsistency | None
    live: bool  # rows go to the live tracker too
    global_step: int = 0
    phase_evals: dict = field(default_factory=dict)
    steps_run: dict = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return self.cfg.distributed == "fsdp" and self.accelerator.num_processes > 1

    @property
    def per_example(self) -> bool:
        """Trace normalisation "example_sum": the trace takes a backward of its own per micro-batch."""
        return self.trace is not None and self.cfg.trace_normalization == "example_sum"

    def log(self, row: dict) -> None:
        """A metrics row: to metrics.jsonl, and to the live tracker if any (main process only)."""
        append_jsonl(self.files.metrics, row)
        if self.live:
            self.accelerator.log(live.scalars(row), step=row["global_step"])


def _open_run(cfg: TrainConfig, accelerator, dataset: Dataset, record: dict, files: RunLayout,
              donor: RunLayout | None, live_tracker: bool) -> _Run:
    """θ_pre and the record that makes `files` a run (written once, by the main process, for a new run), then the
    model on its device, the encoded examples, the schedule, the evaluation sets and the recorders. A new run whose
    texts do not fit the model (or a fork whose θ_pre is not its donor's) is refused and removed."""
    new = not files.config.is_file()
    if new and accelerator.is_main_process:
        write_base(cfg.model, dataset, cfg.seed, files.base)
        write_json(files.config, record)
    accelerator.wait_for_everyone()
    model, tokenizer = load_model(files.base)
    model.to(accelerator.device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    sharded = cfg.distributed == "fsdp" and accelerator.num_processes > 1
    if sharded:
        _shard(model)
    examples = {"bio": [encode_bio(tokenizer, b) for b in dataset.bios],
                "qa": [encode_qa(tokenizer, q, cfg.qa_loss == "answer_eos") for q in dataset.qa_split("id")]}
    try:
        _check_lengths(examples, model.config, dataset)
        if new and donor:  # a fork's θ_pre, as written above, must be its donor's
            check_same_base(files.base, donor)
    except UserError:
        if new and accelerator.is_main_process:
            discard_new_run(files.root)
        raise
    params = dict(model.named_parameters())
    traced = {name: params[name] for name in tracked_parameter_names(model, cfg.trace_include)}
    phases = build_phases(cfg, len(examples["bio"]), len(examples["qa"]))
    return _Run(cfg, accelerator, dataset, files, model, tokenizer, pad_id(tokenizer), examples, phases,
                periodic_sets=eval_sets(tokenizer, dataset, cfg.eval_people), full_sets=eval_sets(tokenizer, dataset),
                trace=TraceRecorder(traced, cfg.trace_mode, sharded) if cfg.trace else None,
                consistency=GradientConsistency(traced, cfg.grad_consistency) if cfg.grad_consistency else None,
                live=live_tracker, steps_run={p.name: len(p.steps) for p in phases})


@dataclass(frozen=True)
class _Start:
    """Where a run starts: phase and step, and the run (or kept BIO phase) whose checkpoint holds that state."""
    phase: int = 0
    step: int = 0
    source: RunLayout | None = None


def _start(run: _Run, donor: RunLayout | None) -> _Start:
    """The position of the run's checkpoint (or, for a fork, of its donor's kept BIO phase, whose log it copies),
    else the start with the global RNG seeded; metrics.jsonl is cut back to that position on every rank."""
    files, accelerator = run.files, run.accelerator
    source = resume_point(files, donor)
    if not source:  # the global RNG (dropout's, if any) starts from the seed, also in an attempt started over
        torch.manual_seed(run.cfg.seed)
        truncate_log(files.metrics, 0, accelerator.is_main_process)  # a killed attempt's rows, without a checkpoint
        return _Start()
    state = checkpoint_position(source.checkpoint.root)
    start = _Start(state["phase"], state["step"], source)
    if start.phase >= len(run.phases) or start.step > len(run.phases[start.phase].steps):
        raise UserError(f"checkpoint {source.checkpoint.root} stands at phase {start.phase} step {start.step}, "
                        f"outside this run's schedule; rerun with --force to start over")
    run.phase_evals, run.global_step = state["phase_evals"], state["global_step"]
    if source.metrics != files.metrics and accelerator.is_main_process:  # a kept BIO phase: its log up to there
        shutil.copyfile(source.metrics, files.metrics)
    accelerator.wait_for_everyone()
    truncate_log(files.metrics, state["metrics_bytes"], accelerator.is_main_process)  # rows logged after it
    return start


def _train_phase(run: _Run, index: int, start: _Start | None) -> None:
    """Phase `index` from its start, or from `start` (a checkpoint inside it, or at its start), with a fresh AdamW
    (a LoRA phase: over its adapters); evaluations between steps and at its end; a checkpoint now and then and,
    before the next phase, at the boundary."""
    cfg, accelerator, phase = run.cfg, run.accelerator, run.phases[index]
    trace_state = None
    if start and start.step == 0:  # a phase's start: the weights only (each phase starts a fresh AdamW)
        trace_state = load_checkpoint(start.source.checkpoint.root, run.model, None)
    if phase.lora_rank:  # from here on the model computes with W + (α/r)·B·A (training/lora.py)
        run.model = lora.add_adapters(run.model, phase.lora_rank, cfg.seed)
    optimizer = _optimizer(run.model, cfg, phase.weight_decay)
    if run.sharded:  # FSDP2 is applied by `_shard`; Accelerate still launches, places and autocasts
        prepared = run.model
    else:
        prepared, optimizer = accelerator.prepare(run.model, optimizer)
    if run.consistency:
        run.consistency.new_phase()
    if start and start.step > 0:  # inside the phase: adapters (if any) and AdamW as they were
        trace_state = load_checkpoint(start.source.checkpoint.root, run.model, optimizer)
    if start and run.trace:
        run.trace.load_state_dict(trace_state)
    # the trace of a step: hooks on each backward, or (mode "update", a LoRA phase) the step's change, read as
    # the model computes with it (`weights`; a LoRA phase: W + (α/r)·B·A)
    by_update = run.trace is not None and (cfg.trace_mode == "update" or bool(phase.lora_rank))
    weights = lora.merged_weights(run.model) if phase.lora_rank else None
    n_steps = len(phase.steps)
    bar = progress(range(start.step if start else 0, n_steps), desc=f"{cfg.strategy}:{phase.name}",
                   initial=start.step if start else 0, total=n_steps,
                   disable=not accelerator.is_local_main_process, leave=False)
    for step in bar:
        row = _step(run, phase, step, optimizer, prepared, by_update, weights)
        bar.set_postfix({t: f"{v:.3f}" for t, v in row["loss"].items()}, refresh=False)  # shown at the next draw
        if cfg.eval_every and run.global_step % cfg.eval_every == 0 and _evaluate_between_steps(run, phase, step):
            break  # Stage's QA phase reached `qa_stop_at`
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < n_steps:
            _checkpoint(run, index, step + 1, optimizer)
    bar.close()
    if accelerator.is_main_process or run.sharded:
        run.phase_evals[phase.name] = evaluate(lora.unwrapped(run.model), run.full_sets, run.pad)
    if accelerator.is_main_process:
        run.log({"event": "eval", "phase": phase.name, "global_step": run.global_step, "phase_end": True,
                 **_accuracies(run.phase_evals[phase.name])})
    if index + 1 < len(run.phases):
        _checkpoint(run, index + 1, 0, None)


def _step(run: _Run, phase: Phase, step: int, optimizer, prepared, by_update: bool,
          weights: Callable[[str], torch.Tensor] | None) -> dict:
    """One optimizer step: each single-task micro-batch forward and backward (attributed to its task by the
    trace's hooks, or first by its own backward under "example_sum"), clipping, the step (traced by its change
    when `by_update`, its weights read by `weights`, both the phase's); returns the step's metrics row, logged."""
    cfg, accelerator, trace = run.cfg, run.accelerator, run.trace
    t0 = time.perf_counter()
    n_steps = len(phase.steps)
    lr = lr_at(step, n_steps, phase.peak_lr, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    losses: dict[str, list[float]] = {}
    micro_batches = phase.steps[step]
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # FSDP2 reduce-scatters after every backward: the trace needs each micro-batch's gradient
        sync = contextlib.nullcontext() if last or run.sharded else accelerator.no_sync(prepared)
        attribute = (trace.attribute(mb.task, lr) if trace and not (run.per_example or by_update)
                     else contextlib.nullcontext())
        observe = (run.consistency.attribute(mb.task, run.global_step + 1) if run.consistency
                   else contextlib.nullcontext())
        with sync:  # DDP all-reduces only on a step's last micro-batch
            loss, example_loss = _micro_batch_loss(prepared, run.examples[mb.task], mb.rows, run.pad,
                                                   accelerator, cfg.precision == "bf16", run.per_example)
            if run.per_example:  # its own backward first: the training one frees the graph
                trace.record(mb.task, lr, example_loss)
            with attribute, observe:
                accelerator.backward(loss / len(micro_batches))
        losses.setdefault(mb.task, []).append(loss.item())
    grad_norm = accelerator.clip_grad_norm_(prepared.parameters(), cfg.clip) if cfg.clip else None
    if isinstance(grad_norm, DTensor):
        grad_norm = grad_norm.full_tensor()
    with trace.update(micro_batches[0].task, weights) if by_update else contextlib.nullcontext():
        optimizer.step()  # such a step holds one task (`TrainConfig.validate`)
    optimizer.zero_grad(set_to_none=True)
    if accelerator.device.type == "cuda":  # the step's seconds include its queued GPU work
        torch.cuda.synchronize()
    run.global_step += 1
    row = {"event": "step", "phase": phase.name, "step": step, "global_step": run.global_step, "lr": lr,
           "loss": {t: sum(v) / len(v) for t, v in losses.items()},
           "grad_norm": float(grad_norm) if grad_norm is not None else None,
           "seconds": time.perf_counter() - t0}
    cosines = run.consistency.report(run.global_step) if run.consistency else None
    if cosines:
        row["grad_cosine"] = cosines
    if accelerator.is_main_process:
        run.log(row)
    return row


def _evaluate_between_steps(run: _Run, phase: Phase, step: int) -> bool:
    """The periodic evaluation on `eval_people` people per split (every rank when sharded), logged; whether the
    phase stops here (`Phase.stop_at` reached: logged as an early stop)."""
    accelerator, reached = run.accelerator, False
    if accelerator.is_main_process or run.sharded:
        periodic = _accuracies(evaluate(lora.unwrapped(run.model), run.periodic_sets, run.pad))
        reached = bool(phase.stop_at) and periodic["qa_id"]["accuracy"] >= phase.stop_at
        if accelerator.is_main_process:
            run.log({"event": "eval", "phase": phase.name, "global_step": run.global_step,
                     "subset_people": run.cfg.eval_people, **periodic})
    if not (phase.stop_at and _on_every_rank(reached, accelerator)):
        return False
    run.steps_run[phase.name] = step + 1
    if accelerator.is_main_process:
        run.log({"event": "early_stop", "phase": phase.name, "global_step": run.global_step, "steps_run": step + 1,
                 "steps_planned": len(phase.steps), "qa_stop_at": phase.stop_at})
    return True


def _checkpoint(run: _Run, phase_index: int, step: int, optimizer) -> None:
    """Called by every rank; `optimizer` is None at a phase's start (each phase starts a fresh AdamW).
    Saves the trace reduced over ranks: on resume each rank adds its new local sums to it, and the mean
    at the end is still the single-process trace. Stage's phase boundary (step 0) is kept as bio_phase/ (one
    atomic directory) with the log so far, its rows without their wall-clock `seconds` so that it is the same
    bytes in every run with these BIO settings; the older checkpoint/ goes."""
    accelerator, files = run.accelerator, run.files
    trace_state = run.trace.reduced(accelerator) if run.trace else {}
    params = full_parameters(run.model, accelerator.is_main_process)
    optimizer_tensors, groups = (full_optimizer_state(optimizer, accelerator.is_main_process) if optimizer
                                 else ({}, []))
    if accelerator.is_main_process:
        position = {"phase": phase_index, "step": step, "phase_evals": run.phase_evals,
                    "global_step": run.global_step}
        if step == 0:
            with atomic_directory(files.bio_phase.root) as tmp:
                kept = RunLayout(tmp)
                write_jsonl(kept.metrics, [{k: v for k, v in row.items() if k != "seconds"}
                                           for row in read_jsonl(files.metrics)])
                save_checkpoint(kept.checkpoint.root, params, optimizer_tensors, groups, trace_state,
                                {**position, "metrics_bytes": kept.metrics.stat().st_size})
            shutil.rmtree(files.checkpoint.root, ignore_errors=True)
        else:
            save_checkpoint(files.checkpoint.root, params, optimizer_tensors, groups, trace_state,
                            {**position, "metrics_bytes": files.metrics.stat().st_size if files.metrics.exists()
                             else 0})
    accelerator.wait_for_everyone()


def _write_results(run: _Run) -> None:
    """The trace (reduced over ranks), the model (a LoRA run's merged), eval.json; the checkpoint goes."""
    cfg, accelerator, files, trace = run.cfg, run.accelerator, run.files, run.trace
    trace_state = trace.reduced(accelerator) if trace else None  # a collective: every rank takes part
    params = full_parameters(run.model, accelerator.is_main_process) if run.sharded else {}  # a collective too
    if trace:
        trace.close()
    if run.consistency:
        run.consistency.close()
    model = lora.merge(run.model) if lora.is_wrapped(run.model) else run.model  # model/: a plain model
    if not accelerator.is_main_process:
        return
    if trace_state is not None:
        save_trace(files.trace, trace_state, metadata={
            "model": cfg.model, "strategy": cfg.strategy, "mode": cfg.trace_mode,
            "dataset_hash": run.dataset.content_hash,
            "steps": json.dumps(run.steps_run),
            **({"qa_phase": f"LoRA rank {cfg.qa_phase_lora_rank}: its merged update"}
               if cfg.strategy == "stage" and cfg.qa_phase_lora_rank else {}),
            **({"normalization": cfg.trace_normalization} if run.per_example else {})})
    with atomic_directory(files.model) as tmp:
        _save_pretrained(model, params, tmp)
        run.tokenizer.save_pretrained(tmp)
    write_json(files.eval, {**run.phase_evals[run.phases[-1].name], "phases": run.phase_evals})
    shutil.rmtree(files.checkpoint.root, ignore_errors=True)


def _check_lengths(examples: dict[str, list[Encoded]], config, dataset: Dataset) -> None:
    """Refuse, before the first step, a text longer than the model's positions (it could not be trained)."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    tokens, task = max((len(e.input_ids), task) for task, encoded in examples.items() for e in encoded)
    if positions and tokens > positions:
        raise UserError(f"a {task.upper()} text of {dataset.path} is {tokens} tokens long, beyond the model's "
                        f"{positions} positions; shorten the texts (e.g. fewer bios' sentences) or use a model "
                        f"with more positions")


def _save_pretrained(model, params: dict[str, torch.Tensor], directory: Path) -> None:
    """Save the model as an HF directory; a sharded one from its gathered `params` (`full_parameters`)."""
    if not params:
        model.save_pretrained(directory)
        return
    with torch.device("meta"):
        plain = type(model)(model.config)
    plain.load_state_dict(params, strict=False, assign=True)
    plain.tie_weights()
    plain.save_pretrained(directory)


def _on_every_rank(flag: bool, accelerator) -> bool:
    """The main process's `flag` on every rank (a collective under several processes)."""
    return broadcast_object_list([flag])[0] if accelerator.num_processes > 1 else flag


def _accuracies(evaluation: dict) -> dict:
    return {name: {"accuracy": r["accuracy"], "first_token_accuracy": r["first_token_accuracy"]}
            for name, r in evaluation.items()}
