"""Time of one inspection, the aggregate attention statistics and the consistency analysis.

Usage: python benchmarks/inspection.py [RUN_DIR] [PEOPLE]   (default: studies/default/runs/mix, 500)
Writes the run's analysis/inspect/, analysis/attention.json and analysis/consistency.json.
Prints one JSON object: {"seconds_one", "seconds_aggregate", "seconds_consistency", "people"}.
Targets: one person ≤ 10 s, 500 people ≤ 60 s on 2 CPU cores (model loading included).
"""

import json
import sys
import time
from pathlib import Path

import torch

from factrecall.analysis.attention import attention_stats
from factrecall.analysis.consistency import consistency_run
from factrecall.analysis.inspect import inspect_run

run = Path(sys.argv[1] if len(sys.argv) > 1 else "studies/default/runs/mix")
people = int(sys.argv[2]) if len(sys.argv) > 2 else 500
if not (run / "model").is_dir():
    sys.exit(f"{run} holds no trained model: run `make study` first or pass a run directory")
torch.set_num_threads(2)
times = {}
for name, step in (("seconds_one", lambda: inspect_run(run)),
                   ("seconds_aggregate", lambda: attention_stats(run, people=people)),
                   ("seconds_consistency", lambda: consistency_run(run, people=people))):
    t0 = time.perf_counter()
    step()
    times[name] = round(time.perf_counter() - t0, 2)
print(json.dumps({**times, "people": people, "run": str(run)}))
