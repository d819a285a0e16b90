"""The memory plan of a training run, per GPU, from the model's config alone (no weights needed); with
`plan_analyses.py` (the analyses' GPU memory) and `plan_disk.py` it makes the plan of a preset's study
(`plan.py`, what `factrecall plan` prints).

The model is built on the `meta` device (shapes without storage), so the plan of Llama-3.2-3B
costs nothing here. Bytes, with P = parameters (a tied tensor once), Q = traced entries, t =
parameter tensors, N = GPUs:

State — exact (`tests/test_plan.py` compares it with the tensors of a real run on CPU)
    weights      4·P          float32 master weights (bf16 autocast keeps them float32)
    gradients    4·P
    AdamW        8·P + 4·t    two float32 moments per entry and a float32 `step` per tensor
    trace        8·Q          Δ_BIO and Δ_QA accumulators, float32
DDP: every GPU holds all of it, plus DDP's gradient buckets (4·P, when N > 1). FSDP2: every
tensor is split by rows, a GPU holds ⌈rows/N⌉·cols of each, plus a working set of unsharded
tensors: the root's (embeddings, final norm, unembedding) and two blocks (the current one and the
prefetched one), each with weights and gradients (8 B per entry). Not counted: the trace mode
"abs" under FSDP2 with grad_accum > 1 keeps one more shard of the traced gradients (4·Q/N), and the
mode "update" a copy of the traced weights' shards during each optimizer step (4·Q/N).

Activations — an estimate, within 25 % of the peak measured on CPU (`tests/test_plan.py`)
    per token and block, elements autograd keeps for the backward pass (counted on tiny models
    with saved-tensor hooks at two depths; the T term is the padding mask's row, H the
    attention's log-sum-exp):
        Llama (SwiGLU MLP, RMSNorm)          4·i + 10·h + T + H
        GPT-NeoX (GELU MLP, parallel)        3·i +  4·h + T + H
        GPT-2 (tanh GELU as tensor ops)      5·i + 10·h + T + H
    (each family's numbers are declared in its module, `models/families/`: `Activations`)
    once per token: the log-probabilities (V, float32), the mask row (T) and the final norm
    (2.5·h RMSNorm, 1.5·h LayerNorm); on top, the larger of two transients: the two float32
    [tokens, V] gradients at the start of the backward pass, or a gradient as wide as the MLP
    (i) inside a block's backward.
    Element size 4 B in fp32; under bf16 autocast 2 B for block activations (matmul outputs),
    plus 4·h (Llama) or 2·h (NeoX) more 2-byte units per block for the norms, which run in float32,
    and float32 for the loss (the logits are upcast). With gradient checkpointing a block keeps only
    its input (h per token, float32: the residual stream) and one block is recomputed at a time
    (its activations and the i-wide gradient on top of the kept inputs). bf16 autocast also
    keeps, for the backward pass, the bf16 copy of every weight it multiplied:
    2·P (with checkpointing: of the root and one block). Under FSDP2 those copies are unsharded,
    so they do not shrink with N (FSDP2's own MixedPrecisionPolicy would avoid them; not used here).
A micro-batch's tokens are its rows / N times its padded length: bios (`seq_len`) and questions
(`qa_seq_len`) are planned separately and the larger counts.

Evaluation (exact match between steps, and in every analysis) is a forward pass without gradients
in float32 over 256 rows (`evaluation/exact_match.py`) that takes logits only at the positions
predicting a scored token (an answer and EOS; a bio scores six answers). In float32 elements
(exact on tiny models, `tests/test_plan_analyses.py`; S = scored positions of the batch, at most
`answer_len` per question and 6·answer_len per bio; no K/V cache is kept):
        max(tokens·(4·h + m·i),             a block's MLP (m = 3 SwiGLU, 2 GELU, 4 GPT-2)
            tokens·h + S·(h + V))           the last hidden state, and the gathered states and logits
Between training steps the gradients are freed (set to None) but weights, AdamW, trace and DDP's
buckets stay: that plus the evaluation forward is the "evaluation" row of each layout.

Saving gathers full tensors on CPU in the main process: host memory of 4·P + 8·P + 8·Q during a
checkpoint under FSDP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from factrecall.data.generate import DataConfig, vocabulary_fragments
from factrecall.data.pools import ATTRIBUTES, load_pools
from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for, tensor_units, tracked_parameter_names
from factrecall.models.families import BY_NAME

GIB = 2**30
EVAL_ROWS = 256  # rows per evaluation batch (`evaluation.exact_match.evaluate`)


@dataclass(frozen=True)
class Shapes:
    """What the plan needs of a model: counts and the shapes of its parameter tensors."""
    family: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    tensors: dict[str, tuple[int, ...]]  # parameter name -> shape (a tied tensor once)
    traced: tuple[str, ...]
    root: tuple[str, ...]  # parameters outside the blocks (FSDP's root unit)
    block: tuple[str, ...]  # the parameters of block 0 (every block has the same shapes)
    units: dict[str, tuple[str, ...]]  # "head" | "neuron" -> the parameters whose entries belong to such units

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.tensors.values())

    @property
    def traced_entries(self) -> int:
        return sum(math.prod(self.tensors[n]) for n in self.traced)

    def entries(self, names) -> int:
        return sum(math.prod(self.tensors[n]) for n in names)

    def largest(self, names=None) -> int:
        """Entries of the largest of `names` (default: every parameter)."""
        return max(math.prod(self.tensors[n]) for n in (self.tensors if names is None else names))


def data_vocabulary(data: DataConfig) -> list[str]:
    """The text fragments a dataset drawn with `data` can contain (its `vocabulary.txt`)."""
    return vocabulary_fragments(load_pools(Path(data.pools) if data.pools else None), data)


def model_shapes(config, trace_include: tuple[str, ...] = ()) -> Shapes:
    """Shapes of the model of `config`, built on the meta device (no memory, no weights)."""
    a = adapter_for(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tensors = {n: tuple(p.shape) for n, p in model.named_parameters()}
    prefix = a.layers + "."
    block0 = a.layers + ".0."
    intermediate = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
                    or 4 * config.hidden_size)
    layouts = {n: tensor_units(config, n) for n in tensors}
    return Shapes(family=a.family, layers=config.num_hidden_layers, hidden=config.hidden_size,
                  intermediate=intermediate, heads=config.num_attention_heads,
                  vocab=config.vocab_size, tensors=tensors, traced=tuple(tracked_parameter_names(model, trace_include)),
                  root=tuple(n for n in tensors if not n.startswith(prefix)),
                  block=tuple(n for n in tensors if n.startswith(block0)),
                  units={kind: tuple(n for n, u in layouts.items() if u is not None and u.kind == kind)
                         for kind in ("head", "neuron")})


def state_bytes(shapes: Shapes, gpus: int = 1) -> dict[str, int]:
    """Weights, gradients, AdamW state and trace accumulators held by one of `gpus` FSDP ranks (1: all)."""
    def entries(names) -> int:
        return sum(math.ceil(shapes.tensors[n][0] / gpus) * math.prod(shapes.tensors[n][1:]) for n in names)
    p = entries(shapes.tensors)
    return {"weights": 4 * p, "gradients": 4 * p, "optimizer": 8 * p + 4 * len(shapes.tensors),
            "trace": 8 * entries(shapes.traced)}


def activation_bytes(shapes: Shapes, tokens: int, seq_len: int, precision: str = "fp32",
                     checkpointing: bool = False) -> int:
    """Estimated peak activation memory of one forward + backward over `tokens` tokens padded to `seq_len`."""
    counts = BY_NAME[shapes.family].activations
    mlp, hidden = counts.block
    block = mlp * shapes.intermediate + hidden * shapes.hidden + seq_len + shapes.heads  # elements per token
    element = 2 if precision == "bf16" else 4
    if precision == "bf16":  # norms run in float32 under autocast: their kept tensors stay 4 B
        block += counts.norm_fp32 * shapes.hidden
    head = 4 * (shapes.vocab + seq_len + counts.final_norm * shapes.hidden)
    loss_peak = 2 * 4 * shapes.vocab  # two float32 [tokens, V] gradients at the start of the backward
    block_peak = element * shapes.intermediate  # inside a block's backward: a gradient as wide as the MLP
    if checkpointing:  # block inputs kept (float32 residual stream); one block recomputed at a time
        kept = 4 * shapes.hidden * shapes.layers + head
        return round(tokens * (kept + max(loss_peak, element * block + block_peak)))
    return round(tokens * (element * block * shapes.layers + head + max(loss_peak, block_peak)))


def autocast_copy_bytes(shapes: Shapes, precision: str, checkpointing: bool) -> int:
    """bf16 copies of the weights that autocast keeps for the backward pass: every weight, or with
    checkpointing those of the root and of the one block being recomputed; 0 in fp32."""
    if precision != "bf16":
        return 0
    cast = (*shapes.root, *shapes.block) if checkpointing else shapes.tensors
    return 2 * sum(math.prod(shapes.tensors[n]) for n in cast)


def forward_elements(shapes: Shapes, eager_seq_len: int = 0) -> tuple[int, int]:
    """float32 elements per token of a forward pass without gradients and without a K/V cache: (inside a
    block, logits and final hidden state); its peak is the larger. Eager attention over `eager_seq_len` tokens
    materialises one layer's scores and their softmax (2·H·T; GPT-2 3·H·T) in a block, instead of the MLP if
    larger."""
    counts = BY_NAME[shapes.family].activations
    block = 4 * shapes.hidden + max(counts.nograd_mlp * shapes.intermediate,
                                    counts.eager_scores * shapes.heads * eager_seq_len)
    return block, shapes.hidden + shapes.vocab


def evaluation_bytes(shapes: Shapes, rows: int, seq_len: int, scored: int) -> int:
    """Peak memory of an exact-match batch: `rows` texts of `seq_len` tokens, `scored` positions scored per row."""
    block, _ = forward_elements(shapes)
    tokens = rows * seq_len
    return 4 * max(tokens * block, tokens * shapes.hidden + rows * scored * (shapes.hidden + shapes.vocab))


@dataclass(frozen=True)
class PlanSettings:
    """The run being planned: micro-batches, lengths, precision, checkpointing, GPUs."""
    bio_rows: int
    qa_rows: int
    seq_len: int = 128  # tokens of the longest bio in a micro-batch (bios are ≤ ~330 characters)
    qa_seq_len: int = 32  # tokens of the longest question + answer
    precision: str = "bf16"
    gpus: int = 1
    gpu_memory_gib: float = 80.0
    answer_len: int = 8  # tokens of the longest answer + EOS (assumed): scored per question, six per bio


def _check(s: PlanSettings) -> None:
    if s.gpus < 1 or s.gpu_memory_gib <= 0:
        raise UserError(f"--gpus must be at least 1 and --gpu-memory positive (got {s.gpus}, {s.gpu_memory_gib})")
    for rows, task in ((s.bio_rows, "bio"), (s.qa_rows, "qa")):
        if rows % s.gpus:
            raise UserError(f"{task}_batch_size {rows} is not divisible by --gpus {s.gpus}; "
                            f"choose a GPU count that divides both micro-batch sizes")


def _layout(shapes: Shapes, s: PlanSettings, layout: str, gpus: int) -> dict:
    """One GPU's bytes under `layout` ("ddp" | "fsdp") on `gpus` GPUs, plain and with checkpointing."""
    state = state_bytes(shapes, gpus if layout == "fsdp" else 1)
    if layout == "ddp":
        state["ddp_buckets"] = 4 * shapes.params if gpus > 1 else 0
    else:
        gathered = (*shapes.root, *shapes.block, *shapes.block)
        state["unsharded_working_set"] = 8 * sum(math.prod(shapes.tensors[n]) for n in gathered) if gpus > 1 else 0
    out = {"state": state}
    for mode, checkpointing in (("plain", False), ("checkpointing", True)):
        act = max(activation_bytes(shapes, s.bio_rows // gpus * s.seq_len, s.seq_len, s.precision, checkpointing),
                  activation_bytes(shapes, s.qa_rows // gpus * s.qa_seq_len, s.qa_seq_len, s.precision,
                                   checkpointing))
        copies = autocast_copy_bytes(shapes, s.precision, checkpointing)
        total = sum(state.values()) + act + copies
        out[mode] = {"activations": act, "autocast_weight_copies": copies, "total": total,
                     "fits": total <= s.gpu_memory_gib * GIB}
    # between steps the gradients are freed; every rank evaluates whole batches (FSDP: a sharded forward)
    evaluation = sum(state.values()) - state["gradients"] + max(
        evaluation_bytes(shapes, EVAL_ROWS, s.qa_seq_len, s.answer_len),
        evaluation_bytes(shapes, EVAL_ROWS, s.seq_len, len(ATTRIBUTES) * s.answer_len))
    out["evaluation"] = {"total": evaluation, "fits": evaluation <= s.gpu_memory_gib * GIB}
    return out


def plan(shapes: Shapes, s: PlanSettings) -> dict:
    """Per-GPU memory of training under DDP and FSDP2, plain and with gradient checkpointing (both are always
    shown), and evaluating between steps; whether it fits, the fewest FSDP2 GPUs that fit, host memory."""
    _check(s)
    p, q = shapes.params, shapes.traced_entries
    usable = [n for n in range(1, 65) if s.bio_rows % n == 0 and s.qa_rows % n == 0]
    needed = {mode: next((n for n in usable if _layout(shapes, s, "fsdp", n)[mode]["fits"]), None)
              for mode in ("plain", "checkpointing")}
    return {
        "model": {"family": shapes.family, "parameters": p, "traced": q, "tensors": len(shapes.tensors),
                  "layers": shapes.layers, "hidden": shapes.hidden, "intermediate": shapes.intermediate,
                  "heads": shapes.heads, "vocab": shapes.vocab},
        "settings": asdict(s),
        "tokens_per_gpu": {"bio": s.bio_rows // s.gpus * s.seq_len, "qa": s.qa_rows // s.gpus * s.qa_seq_len},
        "per_gpu": {layout: _layout(shapes, s, layout, s.gpus) for layout in ("ddp", "fsdp")},
        "fsdp_gpus_needed": needed,  # the fewest GPUs (dividing both batch sizes, ≤ 64) on which FSDP2 fits
        "fsdp_supported": BY_NAME[shapes.family].fsdp,  # whether `train --distributed fsdp` runs this family
        "host_memory_at_save": 4 * p + 8 * p + 8 * q,
    }
