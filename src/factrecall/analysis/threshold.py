"""Exact top-k thresholds over billions of scores in bounded memory (no sort, no concatenation).

Non-negative float32 values order like their int32 bit patterns, so the k-th largest score can be
found by a two-level radix select: one streaming pass histograms the high 16 bits of every score
(65,536 bins), which names the bin holding the k-th largest; a second pass histograms the low 16
bits of the scores inside that bin. Extra memory: two histograms plus one chunk's bit patterns.
`kth_largest_many` answers several k from the same two passes (one low histogram per k).

Ties: `kth_largest` returns the value v of the k-th largest score; a top set is every score ≥ v,
so when several scores equal v the set holds more than k entries (all tied entries, never an
arbitrary subset). Without ties at v it is exactly the k entries `torch.topk` picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch

from factrecall.errors import UserError

CHUNK = 1 << 22  # scores per streamed chunk (16 MiB of float32)
_BINS = 1 << 16

Scores = Callable[[], Iterable[torch.Tensor]]  # yields non-negative score tensors; called once per pass


def top_count(k_percent: float, total: int) -> int:
    """Number of entries in the top k percent of `total` (at least one)."""
    if not 0 < k_percent <= 100:
        raise UserError(f"k must lie in (0, 100] percent (got {k_percent})")
    return max(1, math.ceil(k_percent / 100 * total))


def fraction_count(fraction: float, total: int) -> int:
    """Number of entries in a `fraction` of `total` entries (at least one)."""
    if not 0 < fraction <= 1:
        raise UserError(f"a set size must lie in (0, 1], a fraction of the tracked entries (got {fraction})")
    return max(1, math.ceil(fraction * total))


def _chunks(scores: Scores) -> Iterator[torch.Tensor]:
    for tensor in scores():
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), CHUNK):
            yield flat[start:start + CHUNK].float()


def _bits(chunk: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(chunk).all() or (chunk < 0).any():
        raise UserError("scores contain NaN, Inf or negative values; the trace is damaged, retrain the run")
    return chunk.contiguous().view(torch.int32)


def kth_largest(scores: Scores, k: int) -> float:
    """The value of the k-th largest score (1-based), streaming twice over `scores`."""
    return kth_largest_many(scores, [k])[0]


def kth_largest_many(scores: Scores, ks: list[int]) -> list[float]:
    """The k-th largest score for every k in `ks`, from the same two streaming passes over `scores`."""
    high = torch.zeros(_BINS, dtype=torch.int64)
    total = 0
    for chunk in _chunks(scores):
        high += torch.bincount(_bits(chunk) >> 16, minlength=_BINS)
        total += chunk.numel()
    for k in ks:
        if not 1 <= k <= total:
            raise ValueError(f"k={k} outside 1..{total}")
    above = high.flip(0).cumsum(0)  # above[i] = scores in bins ≥ BINS-1-i
    targets = []  # (high bin, rank inside it) per k
    for k in ks:
        i = int(torch.searchsorted(above, torch.tensor(k)))
        targets.append((_BINS - 1 - i, k - (int(above[i - 1]) if i > 0 else 0)))
    low = {bin_high: torch.zeros(_BINS, dtype=torch.int64) for bin_high, _ in targets}
    for chunk in _chunks(scores):
        bits = _bits(chunk)
        for bin_high, histogram in low.items():
            histogram += torch.bincount(bits[(bits >> 16) == bin_high] & 0xFFFF, minlength=_BINS)
    values = []
    for bin_high, k_in_bin in targets:
        above_low = low[bin_high].flip(0).cumsum(0)
        j = int(torch.searchsorted(above_low, torch.tensor(k_in_bin)))
        bits = torch.tensor([(bin_high << 16) | (_BINS - 1 - j)], dtype=torch.int32)
        values.append(float(bits.view(torch.float32)))
    return values
