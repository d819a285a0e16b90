"""Batched teacher-forced exact match vs a per-question `model.generate` loop, same model and questions.

Usage: python benchmarks/eval_throughput.py [RUN_DIR]   (default: studies/default/runs/mix, from `make study`;
a trained model, so that "same answers" compares real, mostly correct answers)
Prints one JSON object: {"questions", "batched_per_s", "generate_per_s", "speedup", "same_answers"}.
"""

import json
import sys
import time
from pathlib import Path

import torch

from factrecall.analysis.run import run_dataset
from factrecall.encode import encode_qa, pad_id
from factrecall.evaluation.exact_match import span_hits
from factrecall.models.loading import load_model

N = 600
run = Path(sys.argv[1] if len(sys.argv) > 1 else "studies/default/runs/mix")
if not (run / "model").is_dir():
    sys.exit(f"{run} has no trained model: run `make study` first or pass a run directory")
model, tok = load_model(run / "model")
dataset = run_dataset(run)
model.eval()
rows = dataset.qa[:N]
examples = [encode_qa(tok, q) for q in rows]

t0 = time.perf_counter()
batched = [h[0][0] for h in span_hits(model, examples, pad_id(tok))]
batched_s = time.perf_counter() - t0

t0 = time.perf_counter()
generated = []
with torch.no_grad():
    for e in examples:
        (start, end), = e.spans
        prompt = torch.tensor([e.input_ids[:start]])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=end - start,
                             do_sample=False, pad_token_id=pad_id(tok), eos_token_id=None)
        generated.append(out[0, start:].tolist() == list(e.input_ids[start:end]))
generate_s = time.perf_counter() - t0

print(json.dumps({"questions": len(rows), "batched_per_s": round(len(rows) / batched_s, 1),
                  "generate_per_s": round(len(rows) / generate_s, 1), "speedup": round(generate_s / batched_s, 1),
                  "same_answers": batched == generated, "exact_match": sum(batched) / len(batched)}))
