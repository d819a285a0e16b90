"""Stage's QA phase with LoRA (`qa_phase_lora_rank` > 0), by peft (docs/method.md §3).

Physics of LMs 3.1 gives its two-stage models a LoRA arm beside full fine-tuning. Here the QA phase of such
a run trains rank-r adapters on every block's attention and MLP matrices (the tensors the trace follows by
default) and nothing else: W stays as the BIO phase left it and the layer computes x·(W + (α/r)·B·A)ᵀ, with
A (r × in) Kaiming-uniform, B (out × r) zero, α = 2r, no dropout. The adapters' initial values come from the
run's seed (not from the global RNG), so a run forked from a kept BIO phase draws the same ones.

The trace of such a phase is its merged update: each optimizer step's change of W + (α/r)·B·A, given to QA
(`TraceRecorder.update` with `merged_weights`), as in trace mode "update"; the frozen W takes no gradient of
its own to sum. At the end the adapters are merged (`merge`), so model/ is a plain model of its family and
every analysis reads a LoRA run like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from factrecall.models.adapters import adapter_for, tracked_parameter_names

ALPHA_PER_RANK = 2  # α = 2r: the adapters' scale α/r is 2 whatever the rank
ADAPTER = "default"  # peft's name of the one adapter


def add_adapters(model, rank: int, seed: int):
    """`model` wrapped by peft with rank-`rank` LoRA adapters on every traced block matrix, all else frozen."""
    from peft import LoraConfig, get_peft_model

    targets = [name.rsplit(".", 1)[0] for name in tracked_parameter_names(model)]
    config = LoraConfig(r=rank, lora_alpha=ALPHA_PER_RANK * rank, lora_dropout=0.0, target_modules=targets,
                        fan_in_fan_out=adapter_for(model.config).transposed)  # GPT-2's Conv1D is stored [in, out]
    device = next(model.parameters()).device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the global RNG (CPU, and the model's GPU) as it was
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def merged_weights(wrapped) -> Callable[[str], torch.Tensor]:
    """name (of the unwrapped model) → W + (α/r)·B·A now, for an adapted matrix; the parameter itself otherwise."""
    inner = wrapped.get_base_model()

    def weight(name: str) -> torch.Tensor:
        path, leaf = name.rsplit(".", 1)
        module = inner.get_submodule(path)
        if not hasattr(module, "get_delta_weight"):  # not adapted: a norm, an embedding
            return getattr(module, leaf)
        value = getattr(module.get_base_layer(), leaf)
        return value + module.get_delta_weight(ADAPTER) if leaf == "weight" else value
    return weight


def merge(wrapped):
    """The plain model with the adapters added into its weights (peft's merge_and_unload)."""
    return wrapped.merge_and_unload()


def is_wrapped(model) -> bool:
    return hasattr(model, "merge_and_unload")


def unwrapped(model):
    """The model of its family (with the adapters inside its layers, if any): what evaluation hooks expect."""
    return model.get_base_model() if is_wrapped(model) else model
