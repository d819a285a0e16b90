"""What a model family declares (pyvene's one table per architecture): where its modules are (`Adapter`), its
tiny presets, the activation constants of the memory plan and the distributed modes it is tested under.
Each family is one module of `models/families/`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Adapter:
    family: str
    layers: str  # module path of the block list
    attention: dict[str, str]  # module (relative to a block) -> role: q, k, v, qkv_interleaved, qkv_thirds, out
    mlp: dict[str, str]  # module (relative to a block) -> role: in (up/gate), out (down)
    transposed: bool  # Conv1D weights stored [in, out]
    norms: tuple[str, ...]  # norms inside a block
    final_norm: str
    embeddings: tuple[str, ...]  # input embeddings (token, position)
    unembedding: str

    @property
    def attn_out(self) -> str:
        """The output projection; its *input* features, in `head_dim` chunks, are the heads."""
        return next(m for m, role in self.attention.items() if role == "out")


@dataclass(frozen=True)
class Activations:
    """Per-token activation elements of the memory plan (`plan/training.py` explains each), counted on the
    family's tiny models with saved-tensor hooks and checked against measured peaks (`tests/test_plan.py`)."""
    block: tuple[int, int]  # (MLP-width, hidden) elements autograd keeps per token and block
    final_norm: float  # hidden elements per token kept by the final norm
    norm_fp32: int  # bf16 only: extra 2-byte units per hidden element for a block's float32 norm tensors
    nograd_mlp: int  # MLP-width elements per token alive at once in a forward without gradients
    eager_scores: int = 2  # sequence-wide elements per token and head alive at once in eager attention


@dataclass(frozen=True)
class Family:
    """One architecture family: the HF `model_type`s it covers and everything factrecall knows about it."""
    adapter: Adapter
    model_types: tuple[str, ...]
    tiny: dict[str, tuple[type, dict]]  # tiny presets: name -> (HF config class, its keyword arguments)
    activations: Activations
    fsdp: bool  # whether its FSDP2 path is tested (tests/test_scale.py); DDP runs every family

    @property
    def name(self) -> str:
        return self.adapter.family
