"""Resolved training configuration: every knob of a run, saved in the run's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from factrecall.artifacts import as_json
from factrecall.checks import checker, is_int, is_real
from factrecall.devices import DEVICES
from factrecall.errors import UserError
from factrecall.terms import STRATEGIES

TRACE_MODES = ("signed", "abs", "update")  # docs/method.md §4
GRADIENT_TRACE_MODES = ("signed", "abs")  # the modes traced from backward passes (hooks), as a Trainer callback can
TRACE_NORMALIZATIONS = ("token_mean", "example_sum")  # docs/method.md §4
QA_LOSSES = ("answer", "answer_eos")
PRECISIONS = ("fp32", "bf16")
DISTRIBUTED = ("ddp", "fsdp")
TRACE_INCLUDES = ("biases", "norms", "embeddings", "unembedding")  # as models/adapters.py's tracked_parameter_names
# the settings only Stage's QA phase reads (Mix ignores them): the Stage arms that start from one kept BIO phase
# (`train --start-from`) may differ in these and in nothing that touches the BIO phase
QA_PHASE_SETTINGS = ("qa_phase_lr", "qa_phase_weight_decay", "qa_epochs", "qa_stop_at", "qa_phase_lora_rank")


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
    qa_phase_weight_decay: float = -1.0  # Stage's QA-phase AdamW weight decay; -1 = weight_decay
    qa_stop_at: float = 0.0  # Stage's QA phase ends at the first periodic ID-QA accuracy ≥ this; 0 = off
    qa_phase_lora_rank: int = 0  # Stage's QA phase trains LoRA adapters of this rank only (training/lora.py); 0 = all
    warmup: float = 0.05  # fraction of a phase's steps with linear warmup
    min_lr_ratio: float = 0.1  # cosine decay ends at lr × this
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    clip: float = 1.0  # max gradient norm; 0 = off
    eval_every: int = 0  # optimizer steps between evaluations on a subset; 0 = at phase ends only
    eval_people: int = 100  # people per split in periodic evaluations (the final one uses all)
    checkpoint_every: int = 200  # optimizer steps between checkpoints; 0 = only at phase ends
    qa_loss: str = "answer"  # tokens a question trains: "answer", or "answer_eos" (also the EOS after it)
    trace: bool = True
    trace_mode: str = "signed"  # "signed": Σ lr·g; "abs": Σ lr·|g|; "update": Σ of the optimizer's steps θ_s+1 − θ_s
    # what each gradient in the trace is of: "token_mean": the micro-batch's loss as trained (its mean over the
    # trained tokens, / grad_accum); "example_sum": Σ_n of each example's own token-mean loss (one more backward)
    trace_normalization: str = "token_mean"
    trace_include: tuple[str, ...] = field(default=())  # extra tensors: biases, norms, embeddings, unembedding
    grad_consistency: int = 0  # steps between BIO–QA gradient cosines per layer in metrics.jsonl; 0 = off
    precision: str = "fp32"  # "bf16": autocast forward/backward; weights, optimizer and trace stay float32
    gradient_checkpointing: bool = False  # recompute each block's activations in the backward pass
    device: str = "auto"  # "auto": a GPU when there is one, else CPU; "cuda" refuses to run without one
    distributed: str = "ddp"  # several processes: "ddp" (full replicas) or "fsdp" (FSDP2, sharded per parameter)

    def validate(self) -> None:
        """Refuse any setting out of its range, NaN and infinity included, in one line starting `train.<key>`."""
        must = checker(self, "train")

        for name, allowed in (("strategy", STRATEGIES), ("qa_loss", QA_LOSSES), ("trace_mode", TRACE_MODES),
                              ("trace_normalization", TRACE_NORMALIZATIONS), ("precision", PRECISIONS),
                              ("device", DEVICES), ("distributed", DISTRIBUTED)):
            if getattr(self, name) not in allowed:
                raise UserError(f"train.{name}: unknown {name} {getattr(self, name)!r}; "
                                f"choose one of {', '.join(allowed)}")
        must(isinstance(self.model, str) and self.model.strip() != "", "model",
             "name a preset or a local model directory")
        must(is_int(self.seed) and 0 <= self.seed < 2**32, "seed", "be an integer in [0, 2**32)")
        for key in ("bio_batch_size", "qa_batch_size", "grad_accum"):
            must(is_int(getattr(self, key)) and getattr(self, key) >= 1, key, "be at least 1", "give an integer")
        for key in ("bio_epochs", "qa_epochs", "max_steps", "eval_every", "eval_people", "checkpoint_every",
                    "grad_consistency"):
            must(is_int(getattr(self, key)) and getattr(self, key) >= 0, key, "not be negative", "give an integer ≥ 0")
        # one task may have 0 epochs (a language base trains BIO only), a strategy compares both
        if self.bio_epochs + self.qa_epochs < 1 or (self.strategy == "stage" and min(self.bio_epochs, self.qa_epochs) < 1):
            raise UserError(f"train.bio_epochs and train.qa_epochs must be ≥ 0 with at least one positive, both ≥ 1 "
                            f"under stage (got {self.bio_epochs}, {self.qa_epochs})")
        must(is_real(self.lr) and self.lr > 0, "lr", "be positive", "give a finite number > 0")
        for key in ("qa_phase_lr", "weight_decay", "clip"):
            must(is_real(getattr(self, key)) and getattr(self, key) >= 0, key, "not be negative", "give a finite number ≥ 0")
        qa_decay = self.qa_phase_weight_decay
        must(is_real(qa_decay) and (qa_decay >= 0 or qa_decay == -1), "qa_phase_weight_decay",
             "be -1 (= weight_decay) or a number ≥ 0")
        must(is_int(self.qa_phase_lora_rank) and self.qa_phase_lora_rank >= 0, "qa_phase_lora_rank",
             "be an integer ≥ 0", "0 = the QA phase trains every weight")
        if self.strategy == "stage" and self.qa_phase_lora_rank:
            for key, ok, why in (
                    ("trace_mode", not self.trace or self.trace_mode != "abs",
                     "a LoRA phase is traced by its merged update: choose signed or update"),
                    ("trace_normalization", not self.trace or self.trace_normalization == "token_mean",
                     "a LoRA phase is traced by its merged update, which no normalisation weighs"),
                    ("distributed", self.distributed == "ddp", "LoRA phases run under ddp or on one process")):
                if not ok:
                    raise UserError(f"train.{key} {getattr(self, key)!r} cannot go with qa_phase_lora_rank "
                                    f"{self.qa_phase_lora_rank}: {why}")
        must(is_real(self.qa_stop_at) and 0 <= self.qa_stop_at <= 1, "qa_stop_at", "lie in [0, 1]", "0 = off")
        must(not self.qa_stop_at or self.eval_every > 0, "qa_stop_at", "be 0 without periodic evaluations",
             "set train.eval_every > 0, the steps between the evaluations it stops at")
        must(is_real(self.warmup) and 0 <= self.warmup < 1, "warmup", "lie in [0, 1)", "a fraction of each phase's steps")
        must(is_real(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "lie in [0, 1]")
        for key in ("beta1", "beta2"):
            must(is_real(getattr(self, key)) and 0 <= getattr(self, key) < 1, key, "lie in [0, 1)")
        for key in ("trace", "gradient_checkpointing"):
            must(isinstance(getattr(self, key), bool), key, "be true or false")
        if self.trace and self.trace_mode == "update" and self.strategy == "mix" and self.grad_accum > 1:
            raise UserError(f"train.trace_mode 'update' gives each optimizer step's update to the one task of the "
                            f"step, but Mix with grad_accum {self.grad_accum} mixes tasks in a step; "
                            f"set grad_accum to 1 or choose trace mode signed")
        must(not (self.trace and self.trace_mode == "update" and self.trace_normalization != "token_mean"),
             "trace_normalization", "be token_mean under trace mode 'update'",
             "the normalisation weighs gradients, and 'update' records the optimizer's steps")
        must(isinstance(self.trace_include, (tuple, list)) and all(i in TRACE_INCLUDES for i in self.trace_include),
             "trace_include", f"be a list of {', '.join(TRACE_INCLUDES)}")


# settings added after runs were recorded without them: a record leaves each out at its default, so those runs (and
# the study steps that trained them) still match a config that does not use it
LATER_SETTINGS = {"qa_phase_lora_rank": 0}


def train_record(cfg: TrainConfig) -> dict:
    """`cfg` as a run's config.json and a study step's cache key record it (JSON types; LATER_SETTINGS at their
    defaults left out)."""
    record = as_json(asdict(cfg))
    return {k: v for k, v in record.items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}

