"""Sets of model entries (Top_T, Shared, ablation sets, graft masks) as sorted flat indices per tensor.

A dense boolean mask costs one byte per model entry (3.2 GB at 3 B parameters, per set); the
sets of the paper are sparse (≈ k % of the entries), so an `IndexMask` keeps, per tensor, the
sorted int64 positions of its selected entries in the flattened tensor (8 B per selected entry)
together with every tensor's shape. Files store the same indices (int32 where they fit) with the
shapes in the metadata: `<kind>/<name>` keys, several kinds per file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from factrecall.artifacts import load_tensors, save_tensors
from factrecall.errors import UserError

SMALL = 1 << 22  # below this many candidates a seeded randperm draws samples (as it always did)


@dataclass(frozen=True)
class IndexMask:
    """{tensor name: sorted int64 flat indices} over tensors of the given shapes (a name per shape)."""
    shapes: dict[str, tuple[int, ...]]
    index: dict[str, torch.Tensor]

    @classmethod
    def from_dense(cls, masks: dict[str, torch.Tensor]) -> IndexMask:
        return cls({n: tuple(m.shape) for n, m in masks.items()},
                   {n: m.flatten().nonzero().squeeze(1) for n, m in masks.items()})

    def dense(self, name: str) -> torch.Tensor:
        """The bool mask of one tensor, [its shape]."""
        flat = torch.zeros(math.prod(self.shapes[name]), dtype=torch.bool)
        flat[self.index[name]] = True
        return flat.view(self.shapes[name])

    def count(self, name: str) -> int:
        return self.index[name].numel()

    def size(self) -> int:
        return sum(i.numel() for i in self.index.values())

    def total(self) -> int:
        """Entries of all its tensors (selected or not)."""
        return sum(math.prod(s) for s in self.shapes.values())

    def __and__(self, other: IndexMask) -> IndexMask:
        return IndexMask(self.shapes, {n: i[torch.isin(i, other.index[n])] for n, i in self.index.items()})

    def __sub__(self, other: IndexMask) -> IndexMask:
        return IndexMask(self.shapes, {n: i[~torch.isin(i, other.index[n])] for n, i in self.index.items()})

    def restrict(self, names) -> IndexMask:
        return IndexMask({n: self.shapes[n] for n in names}, {n: self.index[n] for n in names})


def draw(population: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` distinct positions in [0, population), uniformly at random, in memory O(count).

    Small populations take the first `count` of a seeded permutation; large ones draw with
    replacement until `count` distinct positions are in hand and keep a random `count` of them
    (every `count`-subset equally likely, by symmetry). Returns int64, unsorted.
    """
    if population <= SMALL:
        return torch.randperm(population, generator=gen)[:count]
    if 2 * count > population:  # mostly everything: draw what is left out instead
        out = torch.ones(population, dtype=torch.bool)
        out[draw(population, population - count, gen)] = False
        return out.nonzero().squeeze(1)
    have = torch.empty(0, dtype=torch.int64)
    while have.numel() < count:
        extra = torch.randint(population, (count - have.numel() + 1024,), generator=gen)
        have = torch.unique(torch.cat([have, extra]))
    return have[torch.randperm(have.numel(), generator=gen)[:count]]


def random_like(mask: IndexMask, seed: int) -> IndexMask:
    """As many entries per tensor as `mask`, at random positions."""
    gen = torch.Generator().manual_seed(seed)
    return IndexMask(mask.shapes, {n: draw(math.prod(mask.shapes[n]), i.numel(), gen).sort().values
                                   for n, i in mask.index.items()})


def _split(chosen: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Positions in the concatenation of blocks of `sizes` entries, as sorted positions inside each block."""
    out, start = [], 0
    for size in sizes:
        out.append((chosen[(chosen >= start) & (chosen < start + size)] - start).sort().values)
        start += size
    return out


def sample_from(candidates: IndexMask, count: int, seed: int) -> IndexMask:
    """`count` entries drawn uniformly from all entries of `candidates` (across tensors)."""
    names = list(candidates.index)
    sizes = [candidates.count(n) for n in names]
    chosen = draw(sum(sizes), min(count, sum(sizes)), torch.Generator().manual_seed(seed))
    return IndexMask(candidates.shapes, {n: candidates.index[n][local].sort().values
                                         for n, local in zip(names, _split(chosen, sizes))})


def save_masks(path: Path, kinds: dict[str, IndexMask], metadata: dict[str, str]) -> None:
    """Several masks in one file, keyed `<kind>/<name>`, shapes in the metadata."""
    tensors, shapes = {}, {}
    for kind, mask in kinds.items():
        for name, index in mask.index.items():
            small = math.prod(mask.shapes[name]) < 2**31
            tensors[f"{kind}/{name}"] = index.to(torch.int32 if small else torch.int64)
            shapes[name] = list(mask.shapes[name])
    save_tensors(path, tensors, metadata={**metadata, "shapes": json.dumps(shapes)})


def load_mask(path: Path, kind: str = "shared", model_shapes: dict[str, tuple[int, ...]] | None = None) -> IndexMask:
    """One kind (shared, top_bio, top_qa, graft) from `save_masks`' file.

    With `model_shapes` ({parameter name: shape} of the model the mask is for), a mask naming a
    parameter the model lacks or of another shape is refused as belonging to another model.
    """
    tensors = load_tensors(path, "mask")
    with safe_open(str(path), framework="pt") as st:
        metadata = st.metadata() or {}
    if "shapes" not in metadata:
        raise UserError(f"{path} is not a factrecall mask file (no 'shapes' metadata); recompute it")
    try:
        shapes = {n: tuple(int(d) for d in s) for n, s in json.loads(metadata["shapes"]).items()}
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{path}: its 'shapes' metadata is damaged (not a JSON object of shapes); recompute it") from None
    index = {}
    for key, positions in tensors.items():
        k, _, name = key.partition("/")
        if k != kind:
            continue
        shape = shapes.get(name, ())
        if model_shapes is not None and model_shapes.get(name) != shape:
            raise UserError(f"{path} belongs to another model: its {kind} mask for {name} has shape {shape}, "
                            f"the model's is {model_shapes.get(name, 'missing')}; recompute it for this run")
        positions = positions.long()
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= math.prod(shape)
                                  or not bool((positions[1:] > positions[:-1]).all())):
            raise UserError(f"{path}: {key} is not a sorted index list inside its shape {shape}; "
                            f"the file is damaged, recompute it")
        index[name] = positions
    return IndexMask({n: shapes[n] for n in index}, index)
