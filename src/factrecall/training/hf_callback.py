"""The cross-task trace (docs/method.md §4) recorded inside a Hugging Face `transformers.Trainer`.

    trainer = Trainer(model, args, train_dataset=batches, data_collator=lambda items: items[0],
                      callbacks=[TraceCallback("runs/mine")])
    trainer.train()   # writes runs/mine/trace.safetensors (as `factrecall train` does) and runs/mine/model/

Every training batch names its task under `batch["task"]`: "bio" or "qa", or a list of the same one per
row. A micro-batch's gradient is attributed whole, so one batch holds one task (a dataset whose items are
whole micro-batches, with `per_device_train_batch_size=1` and a collator that returns the item, is the
simplest way); set `TrainingArguments(remove_unused_columns=False)` when items are dicts, or the Trainer
drops the key before collating.

How the Trainer's own loop is traced, with no change to it:

* `on_train_begin` puts a `TraceRecorder` on the model's traced tensors (`tracked_parameter_names`:
  its tensor hooks see each backward's contribution before autograd adds it to `.grad`) and a forward
  pre-hook on the model.
* The pre-hook takes the task out of the forward's keyword arguments (the model never sees it) and opens
  `attribute(task, lr)` with lr = the optimizer's first parameter group's `lr`. The Trainer steps its
  scheduler after `optimizer.step()`, so during a step's micro-batches the group holds the lr that step
  will use: lr(b) of §4. The block stays open through the micro-batch's backward and closes at the next
  forward (or at the end of training); evaluation forwards close it. After training the hook stays on the
  model and only takes the task out, so `trainer.evaluate()` runs on the same batches.
* Gradient accumulation needs nothing more: the Trainer scales each micro-batch's loss (by the step's
  label-token count, or by `gradient_accumulation_steps`) before its backward, and the hooks see the
  gradient as it enters `.grad`, before clipping: the optimizer's share of micro-batch b, g_b of §4.
* `on_train_end` writes `trace.safetensors` (`save_trace`: keys `bio/<name>`, `qa/<name>`, float32)
  and, unless `save_model=False`, the trained model (and tokenizer) as `model/`, so the directory is
  a run that `factrecall shared --run` and `factrecall.analyze_run` read.

One process only (no DDP, DataParallel or DeepSpeed), no fp16 loss scaling (bf16 is fine: the trace stays
float32), and no resuming from a Trainer checkpoint (it does not hold the trace): each is refused in
`on_train_begin`, before any step, as is an `out` that is a file or that another writer holds the lock of
(`factrecall.locks`); `on_train_end` writes under that lock.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from transformers import TrainerCallback

from factrecall.artifacts import atomic_directory
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.locks import directory_lock
from factrecall.models.adapters import tracked_parameter_names
from factrecall.terms import TASKS
from factrecall.training.config import GRADIENT_TRACE_MODES
from factrecall.training.trace import TraceRecorder, save_trace


_WRITER = "TraceCallback"  # how the lock file names this writer to a refused one


def batch_task(value, key: str = "task") -> str:
    """The one task of a batch from its `key` entry: "bio", "qa", or a list/tuple of one of them per row."""
    tasks = {value} if isinstance(value, str) else set(value) if isinstance(value, (list, tuple)) else None
    if tasks is None or len(tasks) != 1 or not tasks <= set(TASKS):
        shown = sorted(map(str, tasks)) if tasks else repr(value)
        raise UserError(f"batch[{key!r}] must name one task, {' or '.join(TASKS)}, for the whole batch "
                        f"(got {shown}); a micro-batch's gradient is attributed whole, so batch each task apart")
    return tasks.pop()


class TraceCallback(TrainerCallback):
    """Records Δ_BIO and Δ_QA during `Trainer.train()` and writes them to `out/trace.safetensors`.

    out:        the run directory to write (`trace.safetensors`, and `model/` unless save_model=False).
    mode:       "signed" (Σ lr·g, the default) or "abs" (Σ lr·|g|).
    include:    extra tensors to trace: "biases", "norms", "embeddings", "unembedding".
    key:        the batch entry that names the task.
    overwrite:  replace a trace (and model/) already in `out`; otherwise refused before training.
    metadata:   extra string entries for the file's metadata (beside mode, model, steps, micro_batches).
    """

    def __init__(self, out: str | Path, mode: str = "signed", include: tuple[str, ...] = (), key: str = "task",
                 save_model: bool = True, overwrite: bool = False, metadata: dict[str, str] | None = None):
        if mode not in GRADIENT_TRACE_MODES:
            raise UserError(f"trace mode {mode!r} is not one of {', '.join(GRADIENT_TRACE_MODES)} (the callback traces "
                            f"gradients; mode 'update' is factrecall train's and TraceRecorder.step's)")
        self.layout = RunLayout(Path(out))
        self.mode, self.include, self.key = mode, tuple(include), key
        self.save_model, self.overwrite, self.metadata = save_model, overwrite, dict(metadata or {})
        self.recorder: TraceRecorder | None = None
        self.micro_batches = dict.fromkeys(TASKS, 0)  # training forwards per task
        self._optimizer = None
        self._open = contextlib.ExitStack()  # the attribution block of the current micro-batch
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._refuse(args, state)
        names = tracked_parameter_names(model, self.include)
        params = dict(model.named_parameters())
        self.recorder = TraceRecorder({name: params[name] for name in names}, self.mode)
        self.micro_batches = dict.fromkeys(TASKS, 0)
        self._optimizer = optimizer
        if self._hook is not None:  # a second train() call
            self._hook.remove()
        self._hook = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def _refuse(self, args, state) -> None:
        """Settings under which the trace would be wrong or lost, refused before the first step."""
        if args.world_size > 1 or args.n_gpu > 1 or getattr(args, "deepspeed", None):
            raise UserError(f"TraceCallback records one process on one device (this Trainer runs "
                            f"{max(args.world_size, args.n_gpu)}{' under DeepSpeed' if args.deepspeed else ''}); "
                            f"train on one device, or use 'factrecall train', which traces DDP and FSDP")
        if args.fp16:
            raise UserError("TraceCallback cannot trace fp16 training: its loss scaling scales every gradient "
                            "the hooks see; use bf16=True (the trace stays float32) or fp32")
        if state.global_step > 0:
            raise UserError(f"TraceCallback cannot resume at step {state.global_step}: a Trainer checkpoint does "
                            f"not hold the trace of the steps before it; train from the start")
        if self.layout.root.exists() and not self.layout.root.is_dir():
            raise UserError(f"TraceCallback out {self.layout.root} is a file; give the run directory to write")
        with directory_lock(self.layout.root, _WRITER):  # another writer's lock: refused now, not after training
            pass
        taken = [p for p in (self.layout.trace, self.layout.model if self.save_model else None)
                 if p is not None and p.exists()]
        if taken and not self.overwrite:
            raise UserError(f"{taken[0]} already exists; choose another directory or pass overwrite=True")

    def _before_forward(self, module, args, kwargs):
        """Forward pre-hook: take the task out of the batch and attribute this micro-batch's backward to it."""
        self._open.close()
        value = kwargs.pop(self.key, None)
        if self.recorder is None or not (module.training and torch.is_grad_enabled()):
            return args, kwargs  # after training, or an evaluation forward: nothing to attribute
        if value is None:
            raise UserError(f"a training batch has no {self.key!r} entry naming its task ({' or '.join(TASKS)}); "
                            f"put it in every batch, and set TrainingArguments(remove_unused_columns=False) "
                            f"if the Trainer drops it")
        task = batch_task(value, self.key)
        self.micro_batches[task] += 1
        self._open.enter_context(self.recorder.attribute(task, float(self._optimizer.param_groups[0]["lr"])))
        return args, kwargs

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._open.close()  # the pre-hook stays, only taking the task out (`trainer.evaluate()` on task batches)
        if self.recorder is None:
            return
        self.recorder.close()
        metadata = {**self.metadata, "mode": self.mode,
                    "model": str(getattr(model.config, "_name_or_path", "") or type(model).__name__),
                    "steps": json.dumps({"train": state.global_step}),
                    "micro_batches": json.dumps(self.micro_batches), "source": "transformers.Trainer"}
        with directory_lock(self.layout.root, _WRITER):
            save_trace(self.layout.trace, self.recorder.state_dict(), metadata)
            self.recorder = None
            if self.save_model:
                with atomic_directory(self.layout.model) as tmp:
                    model.save_pretrained(tmp)
                    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
                        processing_class.save_pretrained(tmp)
