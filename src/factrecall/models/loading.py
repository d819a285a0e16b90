"""Load a local Hugging Face model directory: safetensors only, never remote code.

Every model is loaded as float32, whatever dtype its checkpoint was saved in (hub checkpoints
are bf16): the upcast is exact, so θ_pre keeps the checkpoint's values, and training, Δ = θ_ft − θ_pre
and every analysis work on float32 weights (AdamW updates of ~lr are below bf16's resolution).
bf16 enters only through autocast. `tensor_files.checkpoint_dtype` records what the files held.
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from factrecall import devices
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for


def _first_line(error: Exception) -> str:
    """The error's first line, with the next one when it only introduces it ("… for field 'x':")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


def check_model_dir(path: Path) -> None:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist; give a preset name or a local HF model directory")
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {path} has no config.json; it must be a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"model directory {path} has no .safetensors weights (pickle formats are never loaded); "
                        f"convert it with save_pretrained(safe_serialization=True)")


def load_config(path: Path):
    """The HF config of model directory `path`, of a supported family (else a UserError)."""
    check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError, AttributeError, StrictDataclassError) as e:  # vary by field
        raise UserError(f"model directory {path}: config.json is not loadable ({_first_line(e)})") from None
    adapter_for(config)
    return config


def parameter_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{parameter name: shape} of the model in directory `path` as transformers builds it (on the meta
    device, no weights read): the names analyses use, which the files may store under others."""
    config = load_config(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def load_model(path: Path, attn_implementation: str | None = None, device: str | torch.device = "cpu"):
    """(float32 model on `device`, tokenizer) from a local directory.

    `attn_implementation="eager"` for attention analysis; `device` a torch device or "auto"/"cpu"/"cuda".
    """
    load_config(path)
    device = devices.resolve_device(device) if isinstance(device, str) else device
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, local_files_only=True,
            attn_implementation=attn_implementation, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except SafetensorError as e:
        raise UserError(f"model directory {path}: its .safetensors weights are damaged or truncated ({e}); "
                        f"copy or save the model again") from None
    except (ValueError, OSError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"model directory {path} is not loadable ({_first_line(e)}); "
                        f"check that its weights, config and tokenizer belong together") from None
    return model.to(device), tokenizer
