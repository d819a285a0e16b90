"""Peak memory of the real analysis commands on a ~110 M-parameter Llama, in model copies.

`analysis_memory_3b.py` runs the streaming functions at the shapes of Llama-3.2-3B on synthetic
tensors; this one measures what the package's commands (`factrecall shared`, `ablate`, `graft`,
`heads`) hold end to end. It builds a real run
directory without real training: a 20-person population (`factrecall data generate`), a randomly
initialised Llama (hidden 1536, 4 layers, intermediate 4096, 8 heads with 2 K/V heads (GQA), untied
embeddings over the project's word-level tokenizer: 109.6 M parameters, 439 MB in float32) saved
as an HF directory, then `factrecall train --model THAT_DIR --max-steps 2`, so `base/`, `model/`,
`trace.safetensors`, `config.json` and the data are exactly what the commands expect (the trace
of two steps is small but not degenerate). Few, wide layers keep the head count at 32: `heads`
evaluates every n of every metric, so 128 heads would take four times as long.

Each command then runs alone in its own process (`python -m factrecall`, with this process's
environment, so PYTHONPATH selects the code under test), and its peak RSS is read with
`os.wait4` (ru_maxrss, KiB on Linux; it includes the pages of the memory-mapped safetensors files
the process touched). The baseline is `factrecall eval` on the run's model and data (imports, one
model loaded, one evaluation over the whole 20-person population). Reported per command: seconds,
peak RSS and (peak − baseline peak) / (4 × parameters) as "extra_model_copies": the number of
float32 copies of the model a command holds beyond what loading one model costs. A command that
works tensor by tensor stays near 0 (θ_pre and the trace are read a tensor at a time); grafting
needs two copies by its method (the mask scores S and the parameters' gradients); one that
materialises full-size masks, deltas, scores and their gradients climbs well above that.

Evaluation sizes are small (5 people per split; ablate 1 seed; graft 2 steps; heads the
delta_norm metric only) so the whole benchmark takes about 8 minutes on 2 cores; every subprocess
runs with OMP_NUM_THREADS=1 so it leaves the other core to other jobs. No timing is asserted.

    PYTHONPATH=SRC python benchmarks/analysis_memory.py [--workdir DIR]

Prints one JSON object as its last line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import factrecall
from factrecall.data.dataset import load_dataset
from factrecall.models.tokenizer import word_tokenizer

ARCH = {"hidden_size": 1536, "num_hidden_layers": 4, "intermediate_size": 4096, "num_attention_heads": 8,
        "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False}
EVAL_PEOPLE = "5"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(args: list[str], log: Path) -> dict:
    """`python -m factrecall ARGS` in its own process: seconds and peak RSS (bytes)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "factrecall", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"factrecall {' '.join(args)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return {"argv": " ".join(args), "seconds": round(seconds, 1), "peak_rss_bytes": usage.ru_maxrss * 1024}


def build_run(work: Path) -> tuple[Path, Path, int, int]:
    """A 20-person dataset and a real run directory on a random ~110 M Llama: (data, run, parameters, vocabulary)."""
    data, init, run_dir = work / "data", work / "init", work / "run"
    run(["data", "generate", "--out", str(data), "--preset", "smoke", "--people", "20",
         "--bios-per-person", "1"], work / "generate.log")
    tokenizer = word_tokenizer(load_dataset(data).vocabulary_fragments())  # what the tiny presets use
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **ARCH)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(init)  # safetensors
    tokenizer.save_pretrained(init)
    del model
    run(["train", "--data", str(data), "--out", str(run_dir), "--strategy", "mix", "--preset", "smoke",
         "--model", str(init), "--max-steps", "2", "--epochs", "1", "--batch-size", "8", "--qa-batch-size", "16"],
        work / "train.log")
    return data, run_dir, parameters, len(tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Keep the run here (must be empty); default: a temporary one.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="analysis-memory-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            sys.exit(f"--workdir {work} is not empty")
        t0 = time.perf_counter()
        data, run_dir, parameters, vocabulary = build_run(work)
        setup = time.perf_counter() - t0
        copy = 4 * parameters
        baseline = run(["eval", "--model", str(run_dir / "model"), "--data", str(data)], work / "eval.log")
        commands = {
            "shared": ["shared", "--run", str(run_dir)],
            "ablate": ["ablate", "--run", str(run_dir), "--k", "1", "--seeds", "1", "--eval-people", EVAL_PEOPLE],
            "graft": ["graft", "--run", str(run_dir), "--steps", "2", "--eval-people", EVAL_PEOPLE],
            "heads": ["heads", "--run", str(run_dir), "--metrics", "delta_norm", "--eval-people", EVAL_PEOPLE],
        }
        results = {}
        for name, argv in commands.items():  # in study order: graft reads shared's masks if present
            r = run(argv, work / f"{name}.log")
            extra = r["peak_rss_bytes"] - baseline["peak_rss_bytes"]
            results[name] = {**r, "extra_bytes": extra, "extra_model_copies": round(extra / copy, 2)}
            print(f"{name:<7} {r['seconds']:7.1f} s  peak {r['peak_rss_bytes'] / 1e9:.2f} GB  "
                  f"extra {extra / copy:+.2f} model copies", flush=True)
        print(json.dumps({
            "package": str(Path(factrecall.__file__).parent),
            "architecture": {"family": "llama", "vocab_size": vocabulary, **ARCH},
            "parameters": parameters, "model_copy_bytes": copy,
            "trace_bytes": (run_dir / "trace.safetensors").stat().st_size,
            "setup_seconds": round(setup, 1), "baseline_eval": baseline, "commands": results,
            "max_extra_model_copies": max(r["extra_model_copies"] for r in results.values()),
        }))


if __name__ == "__main__":
    main()
