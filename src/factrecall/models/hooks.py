"""One context manager for temporary forward hooks (after TransformerLens's `hooks()` context).

Each hook is (module, kind, function) with kind "forward" (fn(module, args, output)), "pre"
(fn(module, args)) or "pre_kwargs" (fn(module, args, kwargs)); all are attached on entry and
removed on exit, also when the block raises, so a model never keeps an analysis's hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

Hook = tuple[torch.nn.Module, str, Callable]


@contextmanager
def temporary_hooks(hooks: Iterable[Hook]) -> Iterator[None]:
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind in ("pre", "pre_kwargs"):
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=kind == "pre_kwargs"))
            else:
                raise ValueError(f"unknown hook kind {kind!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()
