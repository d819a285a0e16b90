"""Where a study's shared parameters sit, per strategy: the share of Shared(k) (the `shared` analysis's mask, the
global threshold at the study's k) in each block's module, and in layer 0's value and output projections.

    python docs/examples/shared_placement.py STUDY [STUDY ...]

A study's runs from a random θ_pre put nearly all of both strategies' shared head entries into layer 0's
`v_proj`/`o_proj`; this prints that share for any study (a sweep's point directories included), as JSON, so two
settings (e.g. bases) can be compared. Reads `runs/*/shared/mask.safetensors` only; computes nothing again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from factrecall.analysis.masks import load_mask
from factrecall.layout import StudyLayout
from factrecall.models.adapters import layer_of, module_of

LAYER0_VALUE_OUTPUT = ("self_attn.v_proj.weight", "self_attn.o_proj.weight")  # a Llama block's names


def placement(mask_file: Path) -> dict:
    shared = load_mask(mask_file, "shared")
    cells: dict[str, int] = {}
    for name in shared.index:
        cell = f"{layer_of(name)}.{module_of(name)}"
        cells[cell] = cells.get(cell, 0) + shared.count(name)
    total = sum(cells.values())
    attention = sum(n for cell, n in cells.items() if ".self_attn." in cell)
    layer0_vo = sum(cells.get(f"0.{m}", 0) for m in LAYER0_VALUE_OUTPUT)
    return {"shared": total, "layer0_v_o_share": layer0_vo / total if total else None,
            "layer0_v_o_share_of_attention": layer0_vo / attention if attention else None,
            "cells": {c: round(n / total, 4) for c, n in sorted(cells.items(), key=lambda kv: -kv[1])}}


if __name__ == "__main__":
    out = {}
    for study in map(Path, sys.argv[1:]):
        files = StudyLayout(study)
        out[str(study)] = {s: placement(files.analysed(s).shared_mask) for s in ("mix", "stage")}
    print(json.dumps(out, indent=1))
