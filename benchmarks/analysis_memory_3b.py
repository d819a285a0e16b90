"""The real analysis functions at the scale of Llama-3.2-3B in bounded memory, simulated on CPU.

No 3 B checkpoint fits this machine's purpose, so every tensor is synthetic, with the exact shapes
of Llama-3.2-3B (built on the meta device from the shipped config): a seeded slice of a fixed
random pool, scaled per tensor, handed out a whole tensor at a time exactly as `Trace.delta` and
`TensorFiles[name]` read one tensor from a safetensors file. The embedding alone is 394 M entries
(1.6 GB); nothing ever holds two model-sized tensors. What runs is the package's own code:

1. shared parameters: `scan` over the 2.82 B traced entries at every point `factrecall shared`
   reports (k = 1 % in both modes and the six-value sweep in both modes), keeping Top_BIO, Top_QA
   and Shared at k = 1 % as index masks, written with `save_masks`;
2. ablation sets: `random_like` (matched per tensor) and `sample_from` (Top_BIO∖S), index masks;
3. grafting's base patch over all 3.21 B parameters: `base_patch` (the top-1 % of |θ_ft − θ_pre|,
   streamed twice, as index masks).

The reset / graft writes themselves go a tensor at a time into the model, the one copy a run
needs (`benchmarks/analysis_memory.py` measures the real commands end to end in model copies).
Reported: seconds per step and the growth of peak RSS over the baseline (pool + interpreter),
next to the 12.85 GB of one float32 copy of the model. Prints one JSON object as its last line.
"""

import json
import math
import resource
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from factrecall.analysis.graft import base_patch
from factrecall.analysis.masks import random_like, sample_from, save_masks
from factrecall.analysis.selection import scan
from factrecall.analysis.shared import SWEEP, run_points
from factrecall.models.spec import spec_config
from factrecall.plan.training import model_shapes

K_PERCENT = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
GRAFT_SPARSITY = 0.01
POOL = torch.randn(1 << 24, generator=torch.Generator().manual_seed(0))  # 64 MiB of float32

config = spec_config("meta-llama/Llama-3.2-3B")
llama = model_shapes(config)


def synthetic(kind: str, name: str) -> torch.Tensor:
    """Tensor `name` of a kind (pre, ft, bio, qa): the pool from a seeded offset, wrapped, scaled.

    Written into one new tensor of the tensor's size (no temporaries beyond it)."""
    seed = zlib.crc32(f"{kind}/{name}".encode())
    out = torch.empty(math.prod(llama.tensors[name]))
    filled, offset = 0, seed % POOL.numel()
    while filled < out.numel():
        take = min(out.numel() - filled, POOL.numel() - offset)
        out[filled:filled + take] = POOL[offset:offset + take]
        filled, offset = filled + take, 0
    return out.mul_(1 + seed % 7).view(llama.tensors[name])


class SyntheticTrace:
    """The interface of `analysis.run.Trace` over synthetic Δ_BIO / Δ_QA."""
    shapes = {n: llama.tensors[n] for n in llama.traced}
    names = list(llama.traced)
    entries = llama.traced_entries

    def delta(self, task: str, name: str) -> torch.Tensor:
        return synthetic(task, name)

    def scores(self, task: str):
        return (self.delta(task, name).abs_() for name in self.names)


class SyntheticWeights(Mapping):
    """θ_pre or θ_ft, one new tensor per lookup, like `analysis.run.TensorFiles`."""

    def __init__(self, kind: str):
        self.kind = kind

    def __getitem__(self, name: str) -> torch.Tensor:
        return synthetic(self.kind, name)

    def __iter__(self):
        return iter(llama.tensors)

    def __len__(self) -> int:
        return len(llama.tensors)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


synthetic("bio", llama.traced[0]).abs_()  # warm up the allocator and kernels so they count as baseline
baseline = peak_rss()
seconds, extra = {}, {}


def measure(step: str, start: float) -> None:
    seconds[step] = round(time.perf_counter() - start, 1)
    extra[step] = max(0, peak_rss() - baseline)


t0 = time.perf_counter()
points = run_points(K_PERCENT, SWEEP)
summaries, selection = scan(SyntheticTrace(), config, points, keep=(K_PERCENT, "global"))
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "mask.safetensors"
    save_masks(path, {"shared": selection.shared, "top_bio": selection.top_bio, "top_qa": selection.top_qa}, {})
    mask_file_bytes = path.stat().st_size
measure("shared_scan", t0)

t0 = time.perf_counter()
shared = selection.shared
random_set = random_like(shared, 0)
bio_only = sample_from(selection.top_bio - shared, shared.size(), 0)
measure("ablation_sets", t0)

t0 = time.perf_counter()
patch = base_patch(llama.tensors, SyntheticWeights("ft"), SyntheticWeights("pre"), GRAFT_SPARSITY)
measure("graft_base_patch", t0)

model_copy = 4 * llama.params
headline = summaries[(K_PERCENT, "global")]
print(json.dumps({
    "model": "Llama-3.2-3B (synthetic tensors)", "parameters": llama.params, "traced": llama.traced_entries,
    "k_percent": K_PERCENT, "points": len(points),
    "top_bio": headline["top_bio"], "top_qa": headline["top_qa"], "shared": headline["shared"],
    "mask_file_bytes": mask_file_bytes, "dense_bool_masks_bytes": 3 * llama.traced_entries,
    "random_set": random_set.size(), "top_bio_only_set": bio_only.size(),
    "graft_sparsity": GRAFT_SPARSITY, "base_patch": patch.size(),
    "seconds": seconds, "seconds_total": round(sum(seconds.values()), 1),
    "peak_extra_bytes": extra, "one_fp32_model_copy_bytes": model_copy,
    "peak_extra_fraction_of_model_copy": round(max(extra.values()) / model_copy, 4),
}))
