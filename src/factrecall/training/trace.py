"""The cross-task gradient trace (SPEC §4).

For every tracked parameter entry i and task T ∈ {bio, qa}::

    Δ_T,i = Σ over micro-batches b of task T:  lr(b) · g_b,i        (mode "signed")
    Δ_T,i = Σ over micro-batches b of task T:  lr(b) · |g_b,i|      (mode "abs")

g_b is micro-batch b's gradient as it enters the optimizer (its loss already divided by the
number of micro-batches of the step, before clipping) and lr(b) the learning rate of the step
that uses it. A tensor hook on each tracked parameter sees each backward's contribution before
autograd adds it into `.grad`, so the trace costs no extra backward pass: one in-place add
per tensor per micro-batch into a float32 accumulator.

Under DDP the hooks see the rank's local gradient (before the all-reduce); `reduced()` averages
the accumulators across ranks at save time, which equals the single-process trace because the
sum is linear. Saved as safetensors keyed `bio/<name>` and `qa/<name>`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from factrecall.training.schedule import TASKS


class TraceRecorder:
    def __init__(self, named_parameters: dict[str, torch.nn.Parameter], mode: str = "signed"):
        self.mode = mode
        self.accumulators = {
            task: {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named_parameters.items()}
            for task in TASKS
        }
        self._task: str | None = None
        self._lr = 0.0
        self._handles = [p.register_hook(self._hook(name)) for name, p in named_parameters.items()]

    def _hook(self, name: str):
        def add(grad: torch.Tensor) -> None:
            if self._task is not None:
                g = grad.abs() if self.mode == "abs" else grad
                self.accumulators[self._task][name].add_(g.to(torch.float32), alpha=self._lr)
        return add

    @contextlib.contextmanager
    def attribute(self, task: str, lr: float) -> Iterator[None]:
        """Gradients of backward passes inside this block count towards `task` with weight `lr`."""
        self._task, self._lr = task, lr
        try:
            yield
        finally:
            self._task = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{task}/{name}": t for task, acc in self.accumulators.items() for name, t in acc.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for task, acc in self.accumulators.items():
            for name, t in acc.items():
                t.copy_(tensors[f"{task}/{name}"])

    def reduced(self, accelerator) -> dict[str, torch.Tensor]:
        """The trace summed over micro-batches of every rank (averaged like DDP averages gradients)."""
        state = self.state_dict()
        if accelerator.num_processes == 1:
            return state
        return {k: accelerator.reduce(v.clone(), reduction="mean") for k, v in state.items()}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
