"""Reading a trained run directory for analysis, with checks that its parts belong together.

At 3 B parameters one float32 copy of a model is 12.9 GB and its trace 21 GB, so the analyses hold
no second copy: θ_pre, θ_ft and the trace stay in their safetensors files and are read one tensor
at a time (`models/tensor_files.py`, `Trace`); only the model being evaluated is in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from factrecall.artifacts import read_json
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.errors import UserError
from factrecall.layout import RunLayout
from factrecall.models.loading import load_config, load_model
from factrecall.models.tensor_files import TensorFiles, model_weights
from factrecall.terms import TASKS


def model_config(run: Path, which: str = "model"):
    """The HF config of `run/<which>` (model = θ_ft, base = θ_pre)."""
    path = getattr(RunLayout(Path(run)), which)
    if not (path / "config.json").is_file():
        raise UserError(f"{run} has no trained {which}/ directory; run 'factrecall train --out {run}' first "
                        f"(or --resume it if it was interrupted)")
    return load_config(path)


def parameter_shapes(run: Path, which: str = "model") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters of `run/<which>` (headers and config only)."""
    model_config(run, which)
    return model_weights(getattr(RunLayout(Path(run)), which), "θ_ft" if which == "model" else "θ_pre").shapes




class Trace:
    """A run's trace (Δ_BIO and Δ_QA per traced tensor, keys `bio/<name>`, `qa/<name>`), read a tensor at a time.

    Opening checks the header against the model: only those two tasks, every traced tensor a
    parameter of the same shape. Each tensor is checked for NaN/Inf when it is read.
    """

    def __init__(self, run: Path):
        run = Path(run)
        self.path = RunLayout(run).trace
        if not self.path.is_file():
            raise UserError(f"{run} has no trace.safetensors; train it with the trace on "
                            f"(the default of 'factrecall train', i.e. without --no-trace)")
        self._file = TensorFiles(self.path, "trace")
        keys = self._file.shapes
        model_shapes = parameter_shapes(run)
        for key, shape in keys.items():
            task, _, name = key.partition("/")
            if task not in TASKS:
                raise UserError(f"{self.path}: unexpected key {key!r}; a trace holds bio/<name> and qa/<name>")
            if name not in model_shapes:
                raise UserError(f"{self.path} belongs to another model: {name} is not a parameter of {run / 'model'}")
            if shape != model_shapes[name]:
                raise UserError(f"{self.path} belongs to another model: {name} has shape {shape} "
                                f"in the trace but {model_shapes[name]} in {run / 'model'}")
        self.shapes = {key[4:]: shape for key, shape in keys.items() if key.startswith("bio/")}
        if set(self.shapes) != {key[3:] for key in keys if key.startswith("qa/")}:
            raise UserError(f"{self.path} does not trace the same tensors for bio and qa; retrain the run")

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def entries(self) -> int:
        """Traced entries per task."""
        return sum(math.prod(s) for s in self.shapes.values())

    def delta(self, task: str, name: str) -> torch.Tensor:
        """Δ_task of one traced tensor (float32, the parameter's shape)."""
        key = f"{task}/{name}"
        tensor = self._file[key]
        if not torch.isfinite(tensor).all():
            raise UserError(f"{self.path}: {key} contains NaN or Inf; the run diverged or the file is damaged")
        return tensor

    def scores(self, task: str) -> Iterator[torch.Tensor]:
        """|Δ_task| tensor by tensor, in file order."""
        return (self.delta(task, name).abs_() for name in self.names)


def load_trace(run: Path) -> Trace:
    """The run's trace, opened lazily and checked against its model."""
    return Trace(run)


def run_dataset(run: Path, data: Path | None = None) -> Dataset:
    """The dataset a run was trained on (or `data`), checked by content hash."""
    path = RunLayout(Path(run)).config
    record = read_json(path, "run config")
    recorded = record.get("data") if isinstance(record, dict) else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("path"), str) or "content_hash" not in recorded:
        raise UserError(f"{path} is damaged (no data path and content hash of a run record); retrain the run")
    dataset = load_dataset(Path(data) if data else Path(recorded["path"]))
    if dataset.content_hash != recorded["content_hash"]:
        raise UserError(f"dataset {dataset.path} is not the one {run} was trained on (content hash differs); "
                        f"pass the run's dataset with --data")
    return dataset


def load_pair(run: Path, purpose: str, device: str = "auto") -> tuple[torch.nn.Module, object, TensorFiles]:
    """(θ_ft model on `device`, its tokenizer, θ_pre read a tensor at a time from `run/base`), checked to match.

    `purpose` completes the error message when base/ is missing ("ablation resets entries to it").
    """
    run = Path(run)
    model_config(run)  # a trained model/ of a supported family
    files = RunLayout(run)
    if not files.base.is_dir():
        raise UserError(f"{run} has no base/ (θ_pre); {purpose}, so retrain the run")
    model, tokenizer = load_model(files.model, device=device)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    pre = model_weights(files.base, "θ_pre", shapes)
    if shapes != pre.shapes:
        raise UserError(f"{run}/base and {run}/model are different architectures; retrain the run")
    return model, tokenizer, pre
