"""benchmarks/gpu_paper_scale.py: it skips cleanly without a GPU, and its whole pipeline runs on the tiny
shapes on CPU (the GPU itself is measured on a GPU machine; these tests hide any GPU from the script)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_paper_scale.py"
SRC = Path(__file__).resolve().parents[1] / "src"
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
          "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
ANALYSES = {"eval", "graft", "consistency", "inspect", "shared", "attention", "ablate", "neurons", "heads"}
MODEL_KEYS = {"preset", "shapes", "parameters", "vocab_size", "tokenizer_size", "build_seconds", "init_dtype",
              "step_s_trace", "step_s_no_trace", "trace_ratio", "peak_gib", "peak_gib_incl_eval", "plan_gib",
              "peak_vs_plan", "plan_gib_incl_eval", "peak_incl_eval_vs_plan", "plan_mode", "plan_gib_at_128_32",
              "plan_analyses_keys", "sequence_lengths", "disk_needed_gib",
              "saved_dtype", "checkpoint_dtype", "train", "analyses", "seconds", "error"}
STEPS = 3


def run(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=NO_GPU, check=False,
                          timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}): {proc.stderr[-3000:]}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def test_without_a_gpu_it_says_so_and_exits_0():
    code, report, err = run()
    assert code == 0, err
    assert report["skipped"].startswith("no GPU")
    assert {"torch", "transformers", "accelerate"} <= set(report["versions"])


@pytest.fixture(scope="module")
def tiny():
    code, report, err = run("--tiny", "--people", "10", "--steps", str(STEPS), "--budget", "500")
    assert code == 0, err[-3000:]
    return report


def test_tiny_report_has_every_key(tiny):
    assert {"benchmark", "tiny", "device", "gpu", "gpu_memory_gib", "versions", "settings", "targets", "models",
            "seconds", "interrupted", "error"} <= set(tiny)
    assert tiny["tiny"] and tiny["device"] == "cpu" and tiny["gpu"] is None and not tiny["interrupted"]
    assert tiny["error"] is None
    assert {"torch", "transformers", "accelerate"} <= set(tiny["versions"])
    assert set(tiny["models"]) == {"llama", "pythia"}
    for key, model in tiny["models"].items():
        assert set(model) == MODEL_KEYS, key
        assert model["error"] is None, (key, model["error"])
        assert set(model["analyses"]) == ANALYSES, key
        for name, result in model["analyses"].items():  # every analysis ran (to its end or to an error)
            assert "seconds" in result and "skipped" not in result, (key, name, result)
            assert "arguments" in result and "plan_gib" in result, (key, name)


def test_tiny_training_measurements(tiny):
    for key, model in tiny["models"].items():
        for name in ("no_trace", "trace"):
            train = model["train"][name]
            assert "error" not in train, (key, name, train)
            assert len(train["step_seconds"]) == STEPS, (key, name)
        assert "--no-trace" in model["train"]["no_trace"]["command"]
        assert "--no-trace" not in model["train"]["trace"]["command"]
        assert model["step_s_trace"] > 0 and model["step_s_no_trace"] > 0
        assert model["trace_ratio"] > 0
        assert model["plan_gib"] > 0 and model["plan_gib_at_128_32"] >= model["plan_gib"]
        assert model["plan_mode"] == ("checkpointing" if key == "llama" else "plain")
        assert model["peak_gib"] is None and model["peak_vs_plan"] is None  # no GPU memory on CPU
        assert model["parameters"] > 0 and model["disk_needed_gib"] > 0


def test_tiny_dtypes_and_tokenizer(tiny):
    for key, model in tiny["models"].items():
        assert model["init_dtype"] == "bfloat16", key  # saved as hub checkpoints are
        assert model["saved_dtype"] == {"base": "float32", "model": "float32"}, key  # trained as float32
        assert model["checkpoint_dtype"] == "bfloat16", key
    # the tokenizer names every embedding row of Llama, all of Pythia's but 27 (as the hub's do)
    assert tiny["models"]["llama"]["vocab_size"] == tiny["models"]["llama"]["tokenizer_size"]
    assert tiny["models"]["pythia"]["vocab_size"] == tiny["models"]["pythia"]["tokenizer_size"] + 27


def test_tiny_analyses_succeed(tiny):
    for key, model in tiny["models"].items():
        analyses = model["analyses"]
        assert {name: r["error"] for name, r in analyses.items() if "error" in r} == {}, key
        assert analyses["heads"]["evaluations"] <= analyses["heads"]["evaluations_needed_max"], key
        assert all(r["device_passed"] for name, r in analyses.items() if name != "shared"), key
