"""BIO–QA gradient consistency during training (docs/method.md §10), measured without extra backward passes.

Like the trace, a tensor hook on each tracked parameter sees every micro-batch's gradient before
autograd sums it into `.grad`. The recorder keeps, per task, that task's gradient of its most
recent optimizer step (the sum of the step's micro-batches of that task) and the step it came
from. Every `every` optimizer steps, when both tasks have a gradient in the current phase, it
reports per layer

    cos(g_BIO, g_QA) = Σ_i g_BIO,i · g_QA,i / (‖g_BIO‖ ‖g_QA‖)     over the layer's tracked entries

and over all tracked entries, with `lag` = steps between the two gradients (0: the same step,
which needs `grad_accum` > 1; under Mix with one micro-batch per step the other task's latest
step is usually a few steps back). A new phase starts empty, so Stage, whose phases hold one
task each, reports nothing. Under DDP each rank sees its local gradients; rank 0's are logged.
Costs, only when on: one copy per tracked tensor and micro-batch, two gradient copies of memory.
The buffers are not part of a checkpoint: after a resume they refill before the next report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from factrecall.terms import TASKS
from factrecall.training.observer import GradientObserver, cosine, cosine_sums


class GradientConsistency(GradientObserver):
    def __init__(self, named_parameters: dict[str, torch.nn.Parameter], every: int):
        self.every = every
        self.latest = {task: {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named_parameters.items()}
                       for task in TASKS}
        self.step_of: dict[str, int] = {}  # task -> step its buffer holds (absent: nothing this phase)
        self._step = -1
        self._fresh: set[tuple[str, str]] = set()  # (task, name) buffers already restarted this step
        super().__init__(named_parameters)

    def observe(self, name: str, grad: torch.Tensor) -> None:
        buffer = self.latest[self._task][name]
        if (self._task, name) in self._fresh:
            buffer.add_(grad.to(torch.float32))
        else:  # the task's first micro-batch of this step replaces its older gradient
            buffer.copy_(grad)
            self._fresh.add((self._task, name))

    def new_phase(self) -> None:
        self.step_of.clear()

    @contextlib.contextmanager
    def attribute(self, task: str, step: int) -> Iterator[None]:
        """Gradients of backward passes inside this block belong to `task` at (global) optimizer step `step`."""
        if step != self._step:
            self._step, self._fresh = step, set()
        try:
            with self.attributed(task):
                yield
        finally:
            self.step_of[task] = step

    def report(self, global_step: int) -> dict | None:
        """{lag, by_layer: {layer: cos}, all: cos} every `every` steps when both tasks have a gradient, else None."""
        if global_step % self.every or len(self.step_of) < len(TASKS):
            return None
        bio, qa = self.latest["bio"], self.latest["qa"]
        sums = cosine_sums((name, bio[name], qa[name]) for name in self.params)
        total = [sum(v[i] for v in sums.values()) for i in range(3)]
        return {"lag": abs(self.step_of["bio"] - self.step_of["qa"]),
                "by_layer": {k: cosine(*v) for k, v in sums.items()}, "all": cosine(*total)}
