"""The small wrappers behind `factrecall`'s public names (the rest are re-exported as they are).

`TraceRecorder` is the recorder of `factrecall train` (training/trace.py) made convenient for any PyTorch
loop: built from a model, `task(task, lr)` around each backward (or, in mode "update", `step(task)` around each
optimizer step), `save(path)` to the file every
analysis reads. This module sits on the top floor beside the CLI (tests/test_layers.py).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Self

import torch

from factrecall.errors import UserError
from factrecall.models.adapters import tracked_parameter_names
from factrecall.terms import TASKS
from factrecall.training.config import TRACE_MODES
from factrecall.training.trace import TraceRecorder as _Recorder
from factrecall.training.trace import save_trace


class TraceRecorder(_Recorder):
    """Δ_BIO and Δ_QA (docs/method.md §4) of a model trained by any PyTorch loop.

        trace = TraceRecorder(model)                  # hooks on the traced tensors
        for batch, task in batches:                   # task: "bio" or "qa"
            loss = model(**batch).loss / accumulation
            with trace.task(task, scheduler.get_last_lr()[0]):
                loss.backward()                       # Δ_task += lr · grad, per traced entry
            ...
        trace.save(run / "trace.safetensors")         # + model.save_pretrained(run / "model")
        trace.close()                                 # or use `with TraceRecorder(model) as trace:`

    model:   a model of a supported family (Llama, GPT-NeoX, GPT-2), or {name: parameter} of the tensors
             to trace. By default the weight matrices of every block's attention and MLP; `include`
             adds "biases", "norms", "embeddings", "unembedding".
    mode:    "signed" (Σ lr·g, the default), "abs" (Σ lr·|g|), or "update" (Σ of the optimizer's steps
             θ_after − θ_before: wrap each `optimizer.step()` in `with trace.step(task):` instead; every
             step must be of one task).

    `accumulators[task][name]` holds Δ_task of one tensor: float32, the parameter's shape, on its device,
    in units of lr × gradient (the gradient of the loss as backpropagated, e.g. already divided by the
    number of accumulated micro-batches). Only backward passes inside `task(...)` count.
    """

    def __init__(self, model: torch.nn.Module | dict[str, torch.nn.Parameter], mode: str = "signed",
                 include: tuple[str, ...] = ()):
        if mode not in TRACE_MODES:
            raise UserError(f"trace mode {mode!r} is not one of {', '.join(TRACE_MODES)}")
        if isinstance(model, torch.nn.Module):
            params = dict(model.named_parameters())
            named = {name: params[name] for name in tracked_parameter_names(model, tuple(include))}
        elif include:
            raise UserError("include selects tensors of a model; pass the model, or only the parameters to trace")
        else:
            named = dict(model)
        super().__init__(named, mode)

    def task(self, task: str, lr: float) -> AbstractContextManager[None]:
        """Backward passes inside this block add lr × their gradient (|gradient| in "abs" mode) to Δ_task.

        task: "bio" or "qa". lr: the learning rate of the optimizer step that will use these gradients
        (a finite number ≥ 0)."""
        _check_task(task)
        if self.mode == "update":
            raise UserError("trace mode 'update' records optimizer steps, not backward passes: wrap "
                            "optimizer.step() in trace.step(task) instead of the backward in trace.task(...)")
        if isinstance(lr, torch.Tensor):
            lr = lr.item()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise UserError(f"lr must be a finite number ≥ 0 (got {lr!r})")
        return self.attribute(task, float(lr))

    def step(self, task: str) -> AbstractContextManager[None]:
        """Mode "update": the change the optimizer step inside this block makes to the traced weights is added
        to Δ_task (task: "bio" or "qa", the one task of every micro-batch of the step)."""
        _check_task(task)
        if self.mode != "update":
            raise UserError(f"trace.step(task) records optimizer steps in mode 'update'; this recorder's mode is "
                            f"{self.mode!r}: wrap each backward in trace.task(task, lr)")
        return self.update(task)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the trace as `factrecall train` does: safetensors, float32, keys `bio/<name>` and `qa/<name>`,
        written atomically. Put it at `RUN/trace.safetensors` beside the model saved as `RUN/model/` and every
        analysis reads RUN. `metadata`: extra string entries (the mode is always recorded)."""
        path = Path(path)
        save_trace(path, self.state_dict(), {**{k: str(v) for k, v in (metadata or {}).items()}, "mode": self.mode})
        return path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_task(task) -> None:
    if task not in TASKS:
        raise UserError(f"task {task!r} is not one of {', '.join(TASKS)}")
