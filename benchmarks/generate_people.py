"""Time to generate a bioS-scale population (100,000 people, default preset settings).

Prints one JSON object: {"people", "seconds", "bios", "qa"}.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from factrecall.config.presets import data_config
from factrecall.data.generate import generate_dataset

people = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    meta = generate_dataset(data_config("default", people=people), Path(tmp) / "data")
    seconds = time.perf_counter() - t0
print(json.dumps({"people": people, "seconds": round(seconds, 2), "bios": meta["counts"]["bios"],
                  "qa": meta["counts"]["qa"]}))
