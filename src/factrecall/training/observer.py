"""One base for the statistics training records from each micro-batch's gradients (trace, consistency).

A tensor hook on each tracked parameter sees every backward's contribution before autograd adds it
into `.grad`, so observing costs no extra backward pass. Inside `attribute(task, ...)` the gradients
count towards `task`; outside it, hooks do nothing. Subclasses implement `observe(name, grad)`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch

from factrecall.models.adapters import layer_of


class GradientObserver:
    def __init__(self, named_parameters: dict[str, torch.nn.Parameter]):
        self.params = named_parameters
        self._task: str | None = None
        self._handles = [self._register(name, p) for name, p in named_parameters.items()]

    def _register(self, name: str, p: torch.nn.Parameter):
        """Attach the hook that hands `p`'s gradients to `observe` and return its handle (a subclass may attach
        none: None); a tensor `observe` returns replaces the gradient autograd passes on."""
        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            return self.observe(name, grad) if self._task is not None else None
        return p.register_hook(hook)

    def observe(self, name: str, grad: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    @contextlib.contextmanager
    def attributed(self, task: str) -> Iterator[None]:
        """Backward passes inside this block observe gradients of `task`."""
        self._task = task
        try:
            yield
        finally:
            self._task = None

    def close(self) -> None:
        for h in self._handles:
            if h is not None:
                h.remove()
        self._handles = []


def cosine_sums(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]]) -> dict[str, list[float]]:
    """{layer: [x·y, x·x, y·y]} over (parameter name, x, y) pairs, each summed in float64 a tensor at a time."""
    sums: dict[str, list[float]] = {}
    for name, x, y in pairs:
        x, y = x.double(), y.double()
        acc = sums.setdefault(layer_of(name), [0.0, 0.0, 0.0])
        acc[0] += float((x * y).sum())
        acc[1] += float((x * x).sum())
        acc[2] += float((y * y).sum())
    return sums


def cosine(dot: float, xx: float, yy: float) -> float | None:
    """x·y / (‖x‖‖y‖) from `cosine_sums`' three numbers; None when either vector is zero."""
    return dot / math.sqrt(xx * yy) if xx > 0 and yy > 0 else None
