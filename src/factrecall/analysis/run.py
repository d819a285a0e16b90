"""Reading a trained run directory for analysis, with checks that its parts belong together."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig

from factrecall.artifacts import load_tensors, read_json
from factrecall.data.dataset import Dataset, load_dataset
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for
from factrecall.models.loading import load_model


def model_config(run: Path, which: str = "model"):
    """The HF config of `run/<which>` (model = θ_ft, base = θ_pre)."""
    path = Path(run) / which
    if not (path / "config.json").is_file():
        raise UserError(f"{run} has no trained {which}/ directory; run 'factrecall train --out {run}' first "
                        f"(or --resume it if it was interrupted)")
    config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    adapter_for(config)
    return config


def parameter_shapes(run: Path, which: str = "model") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the weights in `run/<which>/model.safetensors`, read from the header only."""
    shapes = {}
    for f in sorted((Path(run) / which).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                shapes[key] = tuple(st.get_slice(key).get_shape())
    return shapes


def load_trace(run: Path) -> dict[str, torch.Tensor]:
    """The run's trace, checked against its model: every traced tensor exists with the same shape."""
    run = Path(run)
    path = run / "trace.safetensors"
    if not path.is_file():
        raise UserError(f"{run} has no trace.safetensors; train it with the trace on "
                        f"(the default of 'factrecall train', i.e. without --no-trace)")
    trace = load_tensors(path, "trace")
    shapes = parameter_shapes(run)
    for key, tensor in trace.items():
        task, _, name = key.partition("/")
        if task not in ("bio", "qa"):
            raise UserError(f"{path}: unexpected key {key!r}; a trace holds bio/<name> and qa/<name>")
        if name not in shapes:
            raise UserError(f"{path} belongs to another model: {name} is not a parameter of {run / 'model'}")
        if tuple(tensor.shape) != shapes[name]:
            raise UserError(f"{path} belongs to another model: {name} has shape {tuple(tensor.shape)} "
                            f"in the trace but {shapes[name]} in {run / 'model'}")
        if not torch.isfinite(tensor).all():
            raise UserError(f"{path}: {key} contains NaN or Inf; the run diverged or the file is damaged")
    return trace


def run_dataset(run: Path, data: Path | None = None) -> Dataset:
    """The dataset a run was trained on (or `data`), checked by content hash."""
    record = read_json(Path(run) / "config.json", "run config")
    dataset = load_dataset(Path(data) if data else Path(record["data"]["path"]))
    if dataset.content_hash != record["data"]["content_hash"]:
        raise UserError(f"dataset {dataset.path} is not the one {run} was trained on (content hash differs); "
                        f"pass the run's dataset with --data")
    return dataset


def load_pair(run: Path, purpose: str):
    """(θ_ft model, its tokenizer, θ_pre parameters {name: tensor}) of a run, checked to match.

    `purpose` completes the error message when base/ is missing ("ablation resets entries to it").
    """
    run = Path(run)
    model_config(run)  # a trained model/ of a supported family
    if not (run / "base" / "config.json").is_file():
        raise UserError(f"{run} has no base/ (θ_pre); {purpose}, so retrain the run")
    model, tokenizer = load_model(run / "model")
    base, _ = load_model(run / "base")
    pre = {n: p.detach() for n, p in base.named_parameters()}
    ft = dict(model.named_parameters())
    if ft.keys() != pre.keys() or any(ft[n].shape != pre[n].shape for n in ft):
        raise UserError(f"{run}/base and {run}/model are different architectures; retrain the run")
    return model, tokenizer, pre
