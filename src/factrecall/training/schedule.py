"""Strategies as schedules of phases; phases as lists of optimizer steps of single-task micro-batches.

* Stage: phase "bio" (all bios, `bio_epochs` passes), then phase "qa" (ID questions, `qa_epochs`), with
         its own peak lr, weight decay, early stop and LoRA rank (`config.QA_PHASE_SETTINGS`).
* Mix:   one phase "mix" with the same micro-batches of both tasks, randomly interleaved.

So both strategies see exactly the same example-passes; only their order differs. Every
micro-batch holds one task only, so every gradient is attributable to BIO or QA. The whole
schedule is a pure function of the config and the dataset sizes, which makes a run resumable
from its step index alone. The BIO batches are drawn from the order's random stream before the QA
batches, so Stage's BIO phase is the same whatever the QA-phase settings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from factrecall.training.config import TrainConfig


@dataclass(frozen=True)
class MicroBatch:
    task: str  # "bio" | "qa"
    rows: tuple[int, ...]  # indices into the task's example list


@dataclass(frozen=True)
class Phase:
    name: str
    peak_lr: float
    weight_decay: float  # AdamW's, on tensors with ≥ 2 dimensions
    steps: tuple[tuple[MicroBatch, ...], ...]  # optimizer steps, each `grad_accum` micro-batches
    stop_at: float = 0.0  # ends at the first periodic evaluation with ID-QA accuracy ≥ this; 0 = never
    lora_rank: int = 0  # trains LoRA adapters of this rank only (training/lora.py); 0 = every weight


def _task_batches(task: str, n: int, epochs: int, batch_size: int, rng: random.Random) -> list[MicroBatch]:
    batches = []
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        batches += [MicroBatch(task, tuple(order[i:i + batch_size])) for i in range(0, n, batch_size)]
    return batches


def _steps(batches: list[MicroBatch], cfg: TrainConfig) -> tuple[tuple[MicroBatch, ...], ...]:
    steps = tuple(tuple(batches[i:i + cfg.grad_accum]) for i in range(0, len(batches), cfg.grad_accum))
    return steps[: cfg.max_steps] if cfg.max_steps else steps


def build_phases(cfg: TrainConfig, n_bio: int, n_qa: int) -> list[Phase]:
    rng = random.Random(f"factrecall:{cfg.seed}:order")
    bio = _task_batches("bio", n_bio, cfg.bio_epochs, cfg.bio_batch_size, rng)
    qa = _task_batches("qa", n_qa, cfg.qa_epochs, cfg.qa_batch_size, rng)
    if cfg.strategy == "stage":
        qa_decay = cfg.weight_decay if cfg.qa_phase_weight_decay == -1 else cfg.qa_phase_weight_decay
        return [Phase("bio", cfg.lr, cfg.weight_decay, _steps(bio, cfg)),
                Phase("qa", cfg.qa_phase_lr or cfg.lr, qa_decay, _steps(qa, cfg), cfg.qa_stop_at,
                      cfg.qa_phase_lora_rank)]
    # Mix: a random interleaving that keeps each task's own order (its epochs stay in sequence)
    labels = ["bio"] * len(bio) + ["qa"] * len(qa)
    rng.shuffle(labels)
    queues = {"bio": iter(bio), "qa": iter(qa)}
    return [Phase("mix", cfg.lr, cfg.weight_decay, _steps([next(queues[t]) for t in labels], cfg))]


def lr_at(step: int, n_steps: int, peak: float, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup`·n_steps, then cosine from `peak` to `peak`·min_lr_ratio."""
    warmup = max(1, round(cfg.warmup * n_steps)) if cfg.warmup > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, n_steps - warmup)
    floor = peak * cfg.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
