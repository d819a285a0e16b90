"""Cost of the cross-task gradient trace on training steps of the default preset.

Two identical models (same weights, same batches) take interleaved optimizer steps, one with the
trace recorder attached; the ratio of median step times is the overhead. Memory: the recorder owns
exactly two float32 accumulators of the tracked tensors' size.
Prints one JSON object: {"overhead_ratio", "median_on_s", "median_off_s", "steps", "accumulator_bytes", ...}.
"""

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from factrecall.config.presets import data_config, train_config
from factrecall.data.dataset import load_dataset
from factrecall.data.generate import generate_dataset
from factrecall.encode import collate, encode_bio, encode_qa
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.tiny import build_tiny_model
from factrecall.models.tokenizer import word_tokenizer
from factrecall.training.trace import TraceRecorder

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 60
cfg = train_config("default")
with tempfile.TemporaryDirectory() as tmp:
    generate_dataset(data_config("default", people=200), Path(tmp) / "d")
    ds = load_dataset(Path(tmp) / "d")
    tok = word_tokenizer(ds.vocabulary_fragments())
bio = [encode_bio(tok, b) for b in ds.bios]
qa = [encode_qa(tok, q) for q in ds.qa_split("id")]
batches = [collate(bio[i:i + cfg.bio_batch_size], tok.pad_token_id) if i % 2 == 0 else
           collate(qa[i:i + cfg.qa_batch_size], tok.pad_token_id) for i in range(STEPS)]

off = build_tiny_model(cfg.model, tok, seed=0)
on = copy.deepcopy(off)
params = dict(on.named_parameters())
recorder = TraceRecorder({n: params[n] for n in tracked_parameter_names(on)})
opts = {m: torch.optim.AdamW(m.parameters(), lr=cfg.lr) for m in (off, on)}
times = {"on": [], "off": []}
for i, batch in enumerate(batches):
    for name, model in (("off", off), ("on", on)) if i % 2 else (("on", on), ("off", off)):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        if name == "on":
            with recorder.attribute("bio" if i % 2 == 0 else "qa", cfg.lr):
                loss.backward()
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opts[model].step()
        opts[model].zero_grad(set_to_none=True)
        times[name].append(time.perf_counter() - t0)
on_s, off_s = statistics.median(times["on"][5:]), statistics.median(times["off"][5:])
accumulator_bytes = sum(t.numel() * t.element_size() for acc in recorder.accumulators.values() for t in acc.values())
tracked = sum(params[n].numel() for n in tracked_parameter_names(on))
print(json.dumps({"steps": STEPS, "median_on_s": round(on_s, 5), "median_off_s": round(off_s, 5),
                  "overhead_ratio": round(on_s / off_s, 4), "tracked_entries": tracked,
                  "accumulator_bytes": accumulator_bytes, "expected_accumulator_bytes": 2 * 4 * tracked,
                  "torch_threads": torch.get_num_threads()}))
