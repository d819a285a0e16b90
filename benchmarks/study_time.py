"""Wall clock and CPU time of a whole study, and of each of its steps (issue 27): where docs/results.md's study
times come from.

Runs `factrecall study --out DIR [--preset P] [--config FILE]` in a child process (this process's
environment, so PYTHONPATH selects the code under test) into a new directory, and reads back
* the whole study's wall clock, its CPU time and peak RSS (`os.wait4` of the child: user + system seconds of
  every thread, KiB of ru_maxrss),
* each step's wall and CPU seconds from the study's `manifest.json` (`study/runner.py Manifest`: the child's
  `time.process_time()` over the step, so CPU ÷ wall is the cores the step kept busy),
* the machine: its cores, the torch threads a study process starts with, and the load average just before.

The study runs its steps one after another (concurrency 1), each with every torch thread; a sweep
(`seeds`, `[sweep]`, `points`) is refused here: time one point's config. No timing is asserted anywhere.

    PYTHONPATH=src python benchmarks/study_time.py --preset smoke --out /tmp/study-smoke
    PYTHONPATH=src python benchmarks/study_time.py --preset default --out studies/timed

Prints one JSON object as its last line.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a study directory that does not exist yet")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"--out {args.out} exists: a timing starts from nothing, give a new directory")
    command = [sys.executable, "-m", "factrecall", "study", "--out", str(args.out),
               *(["--preset", args.preset] if args.preset else []),
               *(["--config", str(args.config)] if args.config else [])]
    threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    load_before = os.getloadavg()
    start = time.perf_counter()
    log = args.out.parent / f"{args.out.name}.log"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"the study failed (exit code {code}); its output is in {log}")
    manifest = json.loads((args.out / "manifest.json").read_text())
    steps = [{"name": name, "wall_seconds": entry["seconds"], "cpu_seconds": entry.get("cpu_seconds")}
             for name, entry in manifest.items()]
    print(json.dumps({
        "command": command[2:], "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "concurrency": 1, "cores": os.cpu_count(), "torch_threads": int(threads),
        "load_before": [round(x, 2) for x in load_before],
        "steps_wall_seconds": round(sum(s["wall_seconds"] for s in steps), 1), "steps": steps,
        "log": str(log)}))


if __name__ == "__main__":
    main()
