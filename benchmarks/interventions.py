"""Time of ablate, graft and heads (with neurons) for both strategies of a study, default settings.

Usage: python benchmarks/interventions.py [STUDY_DIR]   (default: studies/default, from `make study`)
Prints one JSON object: {"seconds", "ablate", "graft", "heads", "neurons"} with per-strategy times.
"""

import json
import sys
import time
from pathlib import Path

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.circuit import circuit_curves
from factrecall.analysis.graft import graft_run

study = Path(sys.argv[1] if len(sys.argv) > 1 else "studies/default")
if not (study / "runs" / "mix" / "model").is_dir():
    sys.exit(f"{study} holds no trained runs: run `make study` first or pass a study directory")
steps = {"ablate": lambda run: ablate_run(run),
         "graft": lambda run: graft_run(run),
         "heads": lambda run: circuit_curves(run, "head"),
         "neurons": lambda run: circuit_curves(run, "neuron")}
times: dict[str, dict[str, float]] = {}
for name, step in steps.items():
    for strategy in ("stage", "mix"):
        t0 = time.perf_counter()
        step(study / "runs" / strategy)
        times.setdefault(name, {})[strategy] = round(time.perf_counter() - t0, 1)
total = sum(sum(v.values()) for v in times.values())
print(json.dumps({"seconds": round(total, 1), **times}))
