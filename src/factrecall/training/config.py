"""Resolved training configuration: every knob of a run, saved in the run's config.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from factrecall.devices import DEVICES
from factrecall.errors import UserError

STRATEGIES = ("stage", "mix")
TRACE_MODES = ("signed", "abs")
PRECISIONS = ("fp32", "bf16")
DISTRIBUTED = ("ddp", "fsdp")


@dataclass(frozen=True)
class TrainConfig:
    strategy: str = "mix"
    model: str = "tiny-llama"  # preset name or local HF model directory (θ_pre)
    seed: int = 0
    bio_epochs: int = 20  # example-passes over all bios, the same in both strategies
    qa_epochs: int = 20  # example-passes over the ID questions, the same in both strategies
    max_steps: int = 0  # cap on optimizer steps per phase; 0 = no cap
    bio_batch_size: int = 32  # bios per micro-batch
    qa_batch_size: int = 64  # questions per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (a step may mix tasks under Mix)
    lr: float = 2e-3  # peak learning rate
    qa_phase_lr: float = 0.0  # Stage's QA-phase peak learning rate; 0 = lr
    warmup: float = 0.05  # fraction of a phase's steps with linear warmup
    min_lr_ratio: float = 0.1  # cosine decay ends at lr × this
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    clip: float = 1.0  # max gradient norm; 0 = off
    eval_every: int = 0  # optimizer steps between evaluations on a subset; 0 = at phase ends only
    eval_people: int = 100  # people per split in periodic evaluations (the final one uses all)
    checkpoint_every: int = 200  # optimizer steps between checkpoints; 0 = only at phase ends
    trace: bool = True
    trace_mode: str = "signed"  # "signed": Σ lr·g; "abs": Σ lr·|g|
    trace_include: tuple[str, ...] = field(default=())  # extra tensors: biases, norms, embeddings, unembedding
    grad_consistency: int = 0  # steps between BIO–QA gradient cosines per layer in metrics.jsonl; 0 = off
    precision: str = "fp32"  # "bf16": autocast forward/backward; weights, optimizer and trace stay float32
    gradient_checkpointing: bool = False  # recompute each block's activations in the backward pass
    device: str = "auto"  # "auto": a GPU when there is one, else CPU; "cuda" refuses to run without one
    distributed: str = "ddp"  # several processes: "ddp" (full replicas) or "fsdp" (FSDP2, sharded per parameter)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        for name, allowed in (("trace_mode", TRACE_MODES), ("precision", PRECISIONS), ("device", DEVICES),
                              ("distributed", DISTRIBUTED)):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("bio_batch_size", "qa_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)})")
        # one task may have 0 epochs (a language base trains BIO only), a strategy compares both
        if min(self.bio_epochs, self.qa_epochs) < 0 or self.bio_epochs + self.qa_epochs < 1 or (
                self.strategy == "stage" and min(self.bio_epochs, self.qa_epochs) < 1):
            raise UserError(f"bio_epochs and qa_epochs must be ≥ 0 with at least one positive, both ≥ 1 under "
                            f"stage (got {self.bio_epochs}, {self.qa_epochs})")
        for name in ("max_steps", "eval_every", "checkpoint_every", "eval_people", "clip", "qa_phase_lr",
                     "weight_decay", "grad_consistency"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative (got {getattr(self, name)})")
        if not self.lr > 0:
            raise UserError(f"lr must be positive (got {self.lr})")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise UserError("warmup must lie in [0, 1) and min_lr_ratio in [0, 1]")
