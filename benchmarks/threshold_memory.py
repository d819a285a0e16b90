"""Top-k threshold over 10^9 float32 scores streamed in chunks: peak extra memory and time.

The scores are synthetic (seeded chunks generated on the fly, as a trace would be read tensor by
tensor), so they never exist in memory at once; the reported peak is the growth of the process's
peak RSS during the selection, relative to the 4 GB the scores would occupy.
Prints one JSON object: {"scores", "seconds", "peak_extra_bytes", "peak_extra_fraction", "threshold"}.
"""

import json
import resource
import sys
import time

import torch

from factrecall.analysis.threshold import kth_largest, top_count

N = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10**9
CHUNK = 1 << 24
K_PERCENT = 1.0


def scores():
    for i, start in enumerate(range(0, N, CHUNK)):
        gen = torch.Generator().manual_seed(i)
        yield torch.rand(min(CHUNK, N - start), generator=gen).pow_(3)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


for _ in scores():  # warm up the generator's own chunk buffers so they count as baseline
    break
baseline = peak_rss()
t0 = time.perf_counter()
value = kth_largest(scores, top_count(K_PERCENT, N))
seconds = time.perf_counter() - t0
extra = max(0, peak_rss() - baseline)
print(json.dumps({"scores": N, "k_percent": K_PERCENT, "seconds": round(seconds, 1), "threshold": value,
                  "peak_extra_bytes": extra, "peak_extra_fraction": round(extra / (4 * N), 4)}))
