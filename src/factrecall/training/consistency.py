"""BIO–QA gradient consistency during training (SPEC §10), measured without extra backward passes.

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
import math
from collections.abc import Iterator

import torch

from factrecall.analysis.shared import layer_of
from factrecall.training.schedule import TASKS


class GradientConsistency:
    def __init__(self, named_parameters: dict[str, torch.nn.Parameter], every: int):
        self.every = every
        self.names = list(named_parameters)
        self.latest = {task: {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named_parameters.items()}
                       for task in TASKS}
        self.step_of: dict[str, int] = {}  # task -> step its buffer holds (absent: nothing this phase)
        self._task: str | None = None
        self._step = -1
        self._fresh: set[tuple[str, str]] = set()  # (task, name) buffers already restarted this step
        self._handles = [p.register_hook(self._hook(name)) for name, p in named_parameters.items()]

    def _hook(self, name: str):
        def keep(grad: torch.Tensor) -> None:
            if self._task is None:
                return
            buffer = self.latest[self._task][name]
            if (self._task, name) in self._fresh:
                buffer.add_(grad.to(torch.float32))
            else:  # the task's first micro-batch of this step replaces its older gradient
                buffer.copy_(grad)
                self._fresh.add((self._task, name))
        return keep

    def new_phase(self) -> None:
        self.step_of.clear()

    @contextlib.contextmanager
    def attribute(self, task: str, step: int) -> Iterator[None]:
        """Gradients of backward passes inside this block belong to `task` at (global) optimizer step `step`."""
        if step != self._step:
            self._step, self._fresh = step, set()
        self._task = task
        try:
            yield
        finally:
            self._task = None
            self.step_of[task] = step

    def report(self, global_step: int) -> dict | None:
        """{lag, by_layer: {layer: cos}, all: cos} every `every` steps when both tasks have a gradient, else None."""
        if global_step % self.every or len(self.step_of) < len(TASKS):
            return None
        bio, qa = self.latest["bio"], self.latest["qa"]
        sums: dict[str, list[float]] = {}
        for name in self.names:
            acc = sums.setdefault(layer_of(name), [0.0, 0.0, 0.0])
            acc[0] += float((bio[name].double() * qa[name].double()).sum())
            acc[1] += float(bio[name].double().pow(2).sum())
            acc[2] += float(qa[name].double().pow(2).sum())
        total = [sum(v[i] for v in sums.values()) for i in range(3)]

        def cos(dot: float, nb: float, nq: float) -> float | None:
            return dot / math.sqrt(nb * nq) if nb > 0 and nq > 0 else None

        return {"lag": abs(self.step_of["bio"] - self.step_of["qa"]),
                "by_layer": {k: cos(*v) for k, v in sums.items()}, "all": cos(*total)}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
