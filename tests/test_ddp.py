"""Two CPU processes (gloo, via torchrun) give the single-process model and trace.

Each rank takes every other row of each micro-batch and normalises its token loss by the whole
micro-batch's token count, so DDP's gradient average is the single-process gradient; the trace
accumulators are averaged at save time. Differences come only from float summation order:
tolerance 1e-5 relative (trace, per tensor). Weights: at most 0.1% of entries differ by more than
1e-5 (Adam's normalised step turns noise in a near-zero gradient into a visible difference).
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from factrecall.config.presets import train_config
from factrecall.training.loop import train

# a checkpoint after step 2 exercises the collective trace reduction at checkpoint time
ARGS = ["--strategy", "mix", "--preset", "smoke", "--max-steps", "3", "--grad-accum", "2",
        "--checkpoint-every", "2"]


@pytest.mark.parametrize("model", ["tiny-llama-gqa", "tiny-neox"])
def test_two_process_ddp_equals_single_process(model, small_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port, so parallel test workers never collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "factrecall", "train", "--data", str(small_data), "--out", str(tmp_path / "ddp"),
           "--model", model, *ARGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    train(train_config("smoke", strategy="mix", model=model, max_steps=3, grad_accum=2, checkpoint_every=0),
          small_data, tmp_path / "single")
    ddp, single = load_file(str(tmp_path / "ddp" / "trace.safetensors")), load_file(
        str(tmp_path / "single" / "trace.safetensors"))
    assert ddp.keys() == single.keys()
    for k in single:  # after Adam steps, float summation order moves later gradients by ~1e-5 relative; a wrong
        # reduction (a rank's trace unaveraged, a micro-batch missed) is off by 50-100 %
        assert (ddp[k] - single[k]).norm() / single[k].norm() <= 1e-4, k
    a = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    lr, steps = train_config("smoke").lr, 3
    for k in b:  # Adam's g/√v turns summation-order noise in a near-zero gradient into up to a step's size
        diff = (a[k] - b[k]).abs()
        assert (diff > 1e-5).float().mean() <= 1e-3 and diff.max() <= 2 * lr * steps, k
    assert (tmp_path / "ddp" / "eval.json").read_text() != ""
    assert torch.equal(load_file(str(tmp_path / "ddp" / "base" / "model.safetensors"))[next(iter(b))],
                       load_file(str(tmp_path / "single" / "base" / "model.safetensors"))[next(iter(b))])
