"""How close `factrecall plan`'s activation estimate comes to the measured peak, per model family.

For every tiny preset of every family (`models/families/`), over the grid `tests/test_plan.py` checks (vocabulary 3,432
or 64 words, 16 × 64 or 4 × 256 tokens, with and without gradient checkpointing, fp32 and bf16 autocast), one
training forward and backward runs under `torch.profiler` (CPU allocator); the estimate is
`activation_bytes` + `autocast_copy_bytes` of `plan/training.py`. Prints JSON: per preset its family, the worst
and the median relative error |estimate − measured| / measured, and every case. About two minutes on 2 cores.

    PYTHONPATH=src python benchmarks/plan_accuracy.py
"""

import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import test_plan  # noqa: E402  (its tiny models, batches and profiler peak: the test's own measurement)

from factrecall.models.families import FAMILIES  # noqa: E402
from factrecall.plan.training import activation_bytes, autocast_copy_bytes, model_shapes  # noqa: E402

GRID = list(itertools.product([test_plan.VOCAB, 64], [(16, 64), (4, 256)], [False, True], ["fp32", "bf16"]))


def case(preset: str, vocab: int, rows: int, seq_len: int, checkpointing: bool, precision: str) -> dict:
    config, model = test_plan._tiny(preset, vocab)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    forward = model.forward

    def autocast_forward(**batch):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return forward(**batch)
    model.forward = autocast_forward
    with tempfile.TemporaryDirectory() as tmp:
        measured = test_plan._measured_peak(model, test_plan._batch(rows, seq_len, vocab), Path(tmp) / "profile.json")
    shapes = model_shapes(config)
    estimate = (activation_bytes(shapes, rows * seq_len, seq_len, precision, checkpointing)
                + autocast_copy_bytes(shapes, precision, checkpointing))
    return {"vocab": vocab, "rows": rows, "seq_len": seq_len, "checkpointing": checkpointing, "precision": precision,
            "measured": measured, "estimate": estimate, "error": round(abs(estimate - measured) / measured, 4)}


out = {}
for family in FAMILIES:
    for preset in family.tiny:
        cases = [case(preset, vocab, rows, seq_len, ck, precision) for vocab, (rows, seq_len), ck, precision in GRID]
        errors = [c["error"] for c in cases]
        out[preset] = {"family": family.name, "worst": max(errors), "median": statistics.median(errors),
                       "cases": cases}
print(json.dumps(out, indent=1))
