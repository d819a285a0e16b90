"""The cross-task gradient trace (docs/method.md §4).

For every tracked parameter entry i and task T ∈ {bio, qa}::

    Δ_T,i = Σ over micro-batches b of task T:  lr(b) · g_b,i        (mode "signed")
    Δ_T,i = Σ over micro-batches b of task T:  lr(b) · |g_b,i|      (mode "abs")
    Δ_T,i = Σ over optimizer steps s of task T:  θ_s+1,i − θ_s,i       (mode "update")

g_b is micro-batch b's gradient as it enters the optimizer (its loss already divided by the
number of micro-batches of the step, before clipping) and lr(b) the learning rate of the step
that uses it. A tensor hook on each tracked parameter sees each backward's contribution before
autograd adds it into `.grad`, so the trace costs no extra backward pass: one in-place add
per tensor per micro-batch into a float32 accumulator.

Mode "update" records the optimizer's realised update instead (AdamW's moments, clipping and weight decay
included): no gradient hooks; `update(task)` wraps the optimizer step, holding a float32 copy of the traced
weights during it. Every step must be of one task (the loop refuses Mix with grad_accum > 1), and then
Δ_BIO + Δ_QA = θ_ft − θ_pre on the traced tensors, up to float32 rounding of the sum.

Normalisation "example_sum" (`record`) replaces g_b by ∇ Σ_{n∈b} ℓ_n, ℓ_n example n's own mean token
loss. The training loss weighs a trained token by 1 / (micro-batch's trained tokens × grad_accum), this
sum by 1 / (its example's trained tokens): no rescaling of g_b gives one from the other, so `record` takes
a second backward of the same forward graph (`torch.autograd.grad` to the tracked tensors) and the
training backward is not attributed (the hooks pass over it).

Under DDP the hooks see the rank's local gradient (before the all-reduce); `reduced()` averages
the accumulators across ranks at save time, which equals the single-process trace because the
sum is linear. Saved as safetensors keyed `bio/<name>` and `qa/<name>` (`save_trace`: byte-reproducible,
metadata keys sorted).

Under FSDP2 (`sharded=True`) a parameter is a DTensor holding this rank's rows, and the unsharded
gradient is reduce-scattered into `.grad` after every backward, so no hook ever sees a micro-batch's
full gradient. Each rank instead accumulates its own shard of the *reduced* gradient (already the
average over ranks): a post-accumulate-grad hook fires once `.grad` holds the new sum, and the
micro-batch's part is that sum minus what `.grad` held before the backward (subtracted on entry
to `attribute` in "signed" mode; kept as a copy of the shard for "abs"). Accumulators are 1/W of
the full size per rank; `reduced()` all-gathers them one tensor at a time at save time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from factrecall.artifacts import save_tensors
from factrecall.terms import TASKS
from factrecall.training.observer import GradientObserver


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2), or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


class TraceRecorder(GradientObserver):
    def __init__(self, named_parameters: dict[str, torch.nn.Parameter], mode: str = "signed", sharded: bool = False):
        self.mode, self.sharded = mode, sharded
        self.accumulators = {
            task: {name: torch.zeros_like(_local(p), dtype=torch.float32) for name, p in named_parameters.items()}
            for task in TASKS
        }
        self._lr = 0.0
        self._before: dict[str, torch.Tensor] = {}  # sharded "abs": each shard's .grad before the backward
        self._recording = False  # inside `record`'s backward
        super().__init__(named_parameters)

    def _register(self, name: str, p: torch.nn.Parameter):
        if self.mode == "update":  # `update` reads the weights around the step: no gradient hooks
            return None
        if not self.sharded:
            return super()._register(name, p)

        def add(param: torch.Tensor) -> None:  # FSDP2: `.grad` holds the reduced shard's new sum
            if self._task is None:
                return
            grad = _local(param.grad)
            if self.mode == "signed":  # the pre-backward sum was subtracted on entry
                self.accumulators[self._task][name].add_(grad.to(torch.float32), alpha=self._lr)
            else:
                before = self._before.pop(name, None)
                self.observe(name, grad if before is None else grad - before)
        return p.register_post_accumulate_grad_hook(add)

    def observe(self, name: str, grad: torch.Tensor) -> torch.Tensor | None:
        self.accumulators[self._task][name].add_((grad.abs() if self.mode == "abs" else grad).to(torch.float32),
                                                 alpha=self._lr)
        # `record`: what autograd.grad returns is never used; a zero without storage frees the gradient now
        return grad.new_zeros(()).expand_as(grad) if self._recording else None

    @contextlib.contextmanager
    def attribute(self, task: str, lr: float) -> Iterator[None]:
        """Gradients of backward passes inside this block count towards `task` with weight `lr`.

        Sharded: every tracked parameter must take part in the backward (true of block weights),
        since the sum its `.grad` held before is subtracted here and added back by its hook."""
        self._lr = lr
        for name, p in self.params.items():
            if not self.sharded or p.grad is None:
                continue
            if self.mode == "signed":
                self.accumulators[task][name].add_(_local(p.grad).to(torch.float32), alpha=-lr)
            else:
                self._before[name] = _local(p.grad).clone()
        try:
            with self.attributed(task):
                yield
        finally:
            self._before.clear()

    @contextlib.contextmanager
    def update(self, task: str, weights: Callable[[str], torch.Tensor] | None = None) -> Iterator[None]:
        """Mode "update" (and a LoRA phase): what the optimizer step inside this block changes in the traced
        weights (θ after − θ before, float32; each rank its own shard under FSDP2) counts towards `task`.
        `weights`: name → the weight as the model computes with it (a LoRA phase: `lora.merged_weights`)."""
        def now(name: str, copy: bool) -> torch.Tensor:
            with torch.no_grad():
                return _local(weights(name) if weights else self.params[name].detach()).to(torch.float32, copy=copy)
        before = {name: now(name, copy=True) for name in self.params}
        yield
        for name in self.params:
            self.accumulators[task][name].add_(now(name, copy=False) - before.pop(name))

    def record(self, task: str, lr: float, loss: torch.Tensor) -> None:
        """Add lr·∇loss (lr·|∇loss| in "abs") of the tracked tensors to `task` by a backward of its own that keeps
        the graph for the training backward and leaves `.grad` alone (trace normalisation "example_sum": `loss`
        is Σ_n ℓ_n). It is `torch.autograd.grad`, whose every tracked gradient the hook adds and replaces by a
        zero without storage, so they are never all held at once. Unsharded only: FSDP2's parameters are not
        the graph's leaves."""
        self._lr, self._recording = lr, True
        try:
            with self.attributed(task):
                torch.autograd.grad(loss, list(self.params.values()), retain_graph=True, allow_unused=True)
        finally:
            self._recording = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{task}/{name}": t for task, acc in self.accumulators.items() for name, t in acc.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load a full (saved) trace; under FSDP2 each rank keeps its shard of every tensor."""
        for task, acc in self.accumulators.items():
            for name, t in acc.items():
                full = tensors[f"{task}/{name}"]
                if self.sharded:
                    p = self.params[name]
                    full = distribute_tensor(full.to(t.device), p.device_mesh, p.placements, src_data_rank=None)
                t.copy_(_local(full))

    def reduced(self, accelerator) -> dict[str, torch.Tensor]:
        """The full trace of every rank's micro-batches (a collective: every rank calls it).

        DDP: accumulators averaged over ranks, like DDP averages gradients. FSDP2: each shard
        all-gathered, one tensor at a time; only the main process keeps the full tensors (on CPU).
        """
        state = self.state_dict()
        if accelerator.num_processes == 1:
            return state
        if not self.sharded:
            return {k: accelerator.reduce(v.clone(), reduction="mean") for k, v in state.items()}
        out = {}
        for key, shard in state.items():
            p = self.params[key.split("/", 1)[1]]
            full = DTensor.from_local(shard, p.device_mesh, p.placements, shape=p.shape,
                                      stride=p.stride()).full_tensor()
            if accelerator.is_main_process:
                out[key] = full.cpu()
        return out


def save_trace(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the trace ({"bio/<name>": Δ, "qa/<name>": Δ}, float32) atomically and byte-reproducibly
    (`artifacts.save_tensors`)."""
    save_tensors(path, tensors, metadata)
