"""Load a local Hugging Face model directory: safetensors only, never remote code."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for


def check_model_dir(path: Path) -> None:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist; give a preset name or a local HF model directory")
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {path} has no config.json; it must be a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"model directory {path} has no .safetensors weights (pickle formats are never loaded); "
                        f"convert it with save_pretrained(safe_serialization=True)")


def load_model(path: Path, attn_implementation: str | None = None):
    """(model, tokenizer) from a local directory. `attn_implementation="eager"` for attention analysis."""
    check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except (ValueError, OSError) as e:
        raise UserError(f"model directory {path}: config.json is not loadable ({str(e).splitlines()[0]})") from None
    adapter_for(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, local_files_only=True,
            attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except SafetensorError as e:
        raise UserError(f"model directory {path}: its .safetensors weights are damaged or truncated ({e}); "
                        f"copy or save the model again") from None
    except (ValueError, OSError, RuntimeError) as e:
        raise UserError(f"model directory {path} is not loadable ({str(e).splitlines()[0]}); "
                        f"check that its weights, config and tokenizer belong together") from None
    return model, tokenizer
