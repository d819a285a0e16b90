"""Shared-parameter analyses at the scale of Llama-3.2-3B in bounded memory, simulated on CPU.

No 3B checkpoint fits this machine's purpose, so every tensor is synthetic, with the exact shapes
of Llama-3.2-3B (built on the meta device from the shipped config) and produced a block of rows
at a time (at most 2^24 entries), as a reader of a safetensors file does with
`safe_open(...).get_slice(name)[start:stop]`: a seeded slice of a fixed random pool, scaled per
tensor. The embedding alone is 394 M entries, so even one whole tensor would be 1.6 GB; no pass
holds more than a few blocks. The passes:

1. threshold: the global top-k % value of |Δ_BIO| and of |Δ_QA| over the 2.82 B traced entries
   (`kth_largest`: two streaming passes per task);
2. masks, stored compactly: per tensor, the sorted int32 indices of Top_BIO, Top_QA and their
   intersection (Shared), i.e. 4 B per selected entry instead of a dense mask per entry;
3. ablation, tensor by tensor: θ_ft with the shared entries reset to θ_pre (one tensor of each
   at a time; the real model would be edited in place and restored);
4. grafting's base patch over all 3.21 B parameters: the top-s fraction of |θ_ft − θ_pre|
   (threshold streamed again), then θ_pre + γ ⊙ (θ_ft − θ_pre) tensor by tensor.

Reported: seconds per pass and the growth of peak RSS over the baseline (the pool and the
interpreter), next to the 12.85 GB that one float32 copy of the model takes.
Prints one JSON object as its last line.
"""

import json
import math
import resource
import sys
import time
import zlib

import torch

from factrecall.analysis.threshold import kth_largest, top_count
from factrecall.plan import model_shapes, shipped_config

K_PERCENT = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
GRAFT_SPARSITY = 0.01
POOL = torch.randn(1 << 24, generator=torch.Generator().manual_seed(0))  # 64 MiB of float32

shapes = model_shapes(shipped_config("meta-llama/Llama-3.2-3B"))


BLOCK = 1 << 24  # entries per block of rows


def blocks(names) -> list[tuple[str, int, int]]:
    """(tensor, first row, end row) blocks of at most BLOCK entries, in model order."""
    out = []
    for name in names:
        rows, width = shapes.tensors[name][0], math.prod(shapes.tensors[name][1:])
        step = max(1, BLOCK // width)
        out += [(name, r, min(rows, r + step)) for r in range(0, rows, step)]
    return out


def synthetic(block: tuple[str, int, int], kind: str) -> torch.Tensor:
    """Rows [start, stop) of tensor `name`, flattened: the pool from a seeded offset (wrapped), scaled per tensor."""
    name, start, stop = block
    seed = zlib.crc32(f"{kind}/{name}".encode())
    width = math.prod(shapes.tensors[name][1:])
    n, offset = (stop - start) * width, (seed + start * width) % POOL.numel()
    out = torch.empty(n)
    filled = 0
    while filled < n:
        take = min(n - filled, POOL.numel() - offset)
        out[filled:filled + take] = POOL[offset:offset + take]
        filled, offset = filled + take, 0
    return out.mul_(1 + seed % 7)


def theta_ft(block) -> torch.Tensor:
    return synthetic(block, "pre").add_(synthetic(block, "delta"), alpha=1e-3)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def indices(mask: torch.Tensor, block: tuple[str, int, int]) -> torch.Tensor:
    """Sorted flat int32 indices into the whole tensor of the True entries of a block's mask."""
    offset = block[1] * math.prod(shapes.tensors[block[0]][1:])
    return (mask.nonzero().squeeze(1) + offset).to(torch.int32)  # nonzero() is sorted


traced_blocks, all_blocks = blocks(shapes.traced), blocks(shapes.tensors)
synthetic(traced_blocks[0], "bio")  # warm up the allocator and kernels so they count as baseline
baseline = peak_rss()
seconds = {}
traced_entries, params = shapes.traced_entries, shapes.params

t0 = time.perf_counter()
thresholds = {task: kth_largest(lambda task=task: (synthetic(b, task).abs_() for b in traced_blocks),
                                top_count(K_PERCENT, traced_entries)) for task in ("bio", "qa")}
seconds["threshold"] = time.perf_counter() - t0

t0 = time.perf_counter()
masks, mask_bytes = {}, 0  # masks: {name: sorted shared indices}; top sets counted, not kept
for block in traced_blocks:
    top = {task: indices(synthetic(block, task).abs_() >= thresholds[task], block) for task in ("bio", "qa")}
    shared = top["bio"][torch.isin(top["bio"], top["qa"])]
    masks[block[0]] = torch.cat([masks.get(block[0], torch.empty(0, dtype=torch.int32)), shared])
    mask_bytes += sum(t.numel() * 4 for t in (top["bio"], top["qa"], shared))
seconds["masks"] = time.perf_counter() - t0

t0 = time.perf_counter()
reset = 0
for block in traced_blocks:
    name, start, stop = block
    width = math.prod(shapes.tensors[name][1:])
    shared = masks[name]
    local = shared[(shared >= start * width) & (shared < stop * width)].long() - start * width
    ft, pre = theta_ft(block), synthetic(block, "pre")
    ft[local] = pre[local]  # θ_ablated for these rows; the real model is edited in place, then restored
    reset += local.numel()
seconds["ablation"] = time.perf_counter() - t0

t0 = time.perf_counter()
value = kth_largest(lambda: ((theta_ft(b) - synthetic(b, "pre")).abs_() for b in all_blocks),
                    max(1, round(GRAFT_SPARSITY * params)))
grafted = 0
for block in all_blocks:
    pre, ft = synthetic(block, "pre"), theta_ft(block)
    gamma = ((ft - pre).abs_() >= value).nonzero().squeeze(1)
    pre[gamma] = ft[gamma]  # θ_pre + γ ⊙ (θ_ft − θ_pre) with γ ∈ {0, 1}, for these rows
    grafted += gamma.numel()
seconds["graft_base_patch"] = time.perf_counter() - t0

extra = max(0, peak_rss() - baseline)
model_copy = 4 * params
print(json.dumps({
    "model": "Llama-3.2-3B (synthetic tensors)", "parameters": params, "traced": traced_entries,
    "k_percent": K_PERCENT, "top_bio_top_qa_shared_index_bytes": mask_bytes,
    "dense_bool_masks_bytes": 3 * traced_entries, "shared_entries_reset": reset,
    "graft_sparsity": GRAFT_SPARSITY, "graft_entries": grafted,
    "seconds": {k: round(v, 1) for k, v in seconds.items()}, "seconds_total": round(sum(seconds.values()), 1),
    "peak_extra_bytes": extra, "one_fp32_model_copy_bytes": model_copy,
    "peak_extra_fraction_of_model_copy": round(extra / model_copy, 4),
}))
