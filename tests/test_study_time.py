"""benchmarks/study_time.py: one JSON object with the study's and each step's wall and CPU seconds (the numbers
are not judged: tests never assert wall-clock times)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "study_time.py"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=1200)


def test_a_smoke_study_timed_step_by_step(tmp_path):
    done = _run("--preset", "smoke", "--out", str(tmp_path / "study"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((tmp_path / "study" / "manifest.json").read_text())
    assert [s["name"] for s in result["steps"]] == list(manifest)
    assert {"train/mix", "train/stage", "graft/mix", "consistency/stage"} <= set(manifest)
    for step in result["steps"]:
        assert step["wall_seconds"] >= 0 and step["cpu_seconds"] >= 0
    assert result["wall_seconds"] >= result["steps_wall_seconds"] > 0 and result["cpu_seconds"] > 0
    assert result["cores"] == os.cpu_count() and result["torch_threads"] >= 1 and len(result["load_before"]) == 3
    assert (tmp_path / "study" / "report" / "index.html").is_file()
    again = _run("--preset", "smoke", "--out", str(tmp_path / "study"))  # a timing starts from nothing
    assert again.returncode != 0 and "exists" in again.stderr
