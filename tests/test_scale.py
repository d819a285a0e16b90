"""Scale options on CPU, through the code paths GPUs use: FSDP2, bf16 autocast, gradient checkpointing.

FSDP2 (`fully_shard`) runs on CPU with gloo in torch 2.13, so two processes are compared with one,
as `test_ddp.py` does for DDP. Tolerances, and why:

* trace: 1e-4 relative per tensor. Each rank accumulates its shard of the reduce-scattered
  gradient as (sum after the backward − sum before): besides summation order, that difference
  rounds at float32 precision of the step's summed gradient (measured up to 1.3e-5; a lost or
  doubled micro-batch is an error of order 1);
* weights: as in `test_ddp.py`, at most 0.1 % of entries differ by more than 1e-5 (Adam's g/√v
  turns summation noise in a near-zero gradient into up to one step's size);
* gradient checkpointing recomputes the same forward: 1e-6 relative (trace) and 1e-6 (weights);
* bf16 autocast changes every gradient at bf16 precision (8 bits of mantissa): cosine ≥ 0.99 per
  trace tensor against fp32, and not equal to it (so autocast was on).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from factrecall.cli import main
from factrecall.config.presets import train_config
from factrecall.training import loop

COMMON = ["--strategy", "mix", "--preset", "smoke", "--grad-accum", "2"]


def _free_port() -> str:
    with socket.socket() as probe:  # a free port, so parallel test workers never collide
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def _torchrun(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port(),
           "-m", "factrecall", "train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "it/s" not in line)[-6000:]


def _tensors(run, name):
    return load_file(str(run / name))


def _assert_same_run(a, b, trace_tol=1e-4, weight_tol=1e-5, weight_share=1e-3):
    ta, tb = _tensors(a, "trace.safetensors"), _tensors(b, "trace.safetensors")
    assert ta.keys() == tb.keys()
    for k in tb:
        assert ta[k].dtype == torch.float32
        assert (ta[k] - tb[k]).norm() / tb[k].norm() <= trace_tol, k
    wa, wb = _tensors(a, "model/model.safetensors"), _tensors(b, "model/model.safetensors")
    assert wa.keys() == wb.keys()
    max_step = 2 * train_config("smoke").lr * 4
    for k in wb:
        diff = (wa[k] - wb[k]).abs()
        assert (diff > weight_tol).float().mean() <= weight_share and diff.max() <= max_step, k


@pytest.mark.parametrize("model, mode", [("tiny-llama-gqa", "signed"), ("tiny-neox", "signed"),
                                         ("tiny-neox", "abs")])
def test_two_process_fsdp_equals_single_process(model, mode, small_data, tmp_path):
    # a checkpoint after step 2 gathers the sharded model, AdamW state and trace mid-run
    _torchrun("--data", str(small_data), "--out", str(tmp_path / "fsdp"), "--model", model, *COMMON,
              "--max-steps", "3", "--checkpoint-every", "2", "--distributed", "fsdp", "--trace-mode", mode)
    loop.train(train_config("smoke", strategy="mix", model=model, max_steps=3, grad_accum=2, checkpoint_every=0,
                            trace_mode=mode), small_data, tmp_path / "single")
    _assert_same_run(tmp_path / "fsdp", tmp_path / "single")
    config = json.loads((tmp_path / "fsdp" / "model" / "config.json").read_text())
    assert config["model_type"] == ("llama" if "llama" in model else "gpt_neox")


class Interrupt(Exception):
    pass


def test_fsdp_resumes_a_checkpoint_written_by_one_process(small_data, tmp_path, monkeypatch):
    """One process (unsharded) stops after its step-2 checkpoint; two FSDP processes finish the run."""
    cfg = train_config("smoke", strategy="mix", model="tiny-llama-gqa", max_steps=4, grad_accum=2,
                       checkpoint_every=2, distributed="fsdp")
    loop.train(cfg, small_data, tmp_path / "whole")
    real_append = loop.append_jsonl

    def append_then_die(path, row):
        real_append(path, row)
        if row.get("global_step") == 3:
            raise Interrupt()

    monkeypatch.setattr(loop, "append_jsonl", append_then_die)
    with pytest.raises(Interrupt):
        loop.train(cfg, small_data, tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoint").is_dir()
    _torchrun("--data", str(small_data), "--out", str(tmp_path / "cut"), "--model", "tiny-llama-gqa", *COMMON,
              "--max-steps", "4", "--checkpoint-every", "2", "--distributed", "fsdp", "--resume")
    _assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert not (tmp_path / "cut" / "checkpoint").exists()


def test_gradient_checkpointing_gives_the_same_run(small_data, tmp_path):
    for name, on in (("plain", False), ("recompute", True)):
        loop.train(train_config("smoke", strategy="mix", max_steps=3, grad_accum=2, checkpoint_every=0,
                                gradient_checkpointing=on), small_data, tmp_path / name)
    _assert_same_run(tmp_path / "recompute", tmp_path / "plain", trace_tol=1e-6, weight_tol=1e-6, weight_share=0)


def test_bf16_autocast_keeps_float32_weights_and_trace(small_data, tmp_path):
    for name, precision in (("fp32", "fp32"), ("bf16", "bf16")):
        loop.train(train_config("smoke", strategy="mix", max_steps=3, checkpoint_every=0, precision=precision),
                   small_data, tmp_path / name)
    t32, t16 = _tensors(tmp_path / "fp32", "trace.safetensors"), _tensors(tmp_path / "bf16", "trace.safetensors")
    assert any(not torch.equal(t32[k], t16[k]) for k in t32)  # autocast really ran in bf16
    for k in t32:
        assert t16[k].dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(t16[k].flatten(), t32[k].flatten(), dim=0) >= 0.99, k
    weights = _tensors(tmp_path / "bf16", "model/model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["factrecall", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--model", "tiny-gpt2", "--distributed", "fsdp"],
     "distributed 'fsdp' does not support the 'gpt2' family of tiny-gpt2; supported: llama, gpt_neox"),
    (["--distributed", "zero3"], "unknown distributed 'zero3'; choose one of ddp, fsdp"),
    (["--distributed", "fsdp", "--grad-consistency", "2"], "grad_consistency needs each rank's full gradients"),
    (["--precision", "fp16"], "unknown precision 'fp16'; choose one of fp32, bf16"),
    pytest.param(["--device", "cuda"], "device 'cuda' asks for a GPU but torch sees none",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_scale_settings_refused_in_one_line(extra, message, small_data, tmp_path, monkeypatch, capsys):
    code, err = _cli(monkeypatch, capsys, "train", "--data", str(small_data), "--out", str(tmp_path / "run"),
                     *COMMON, *extra)
    assert code == 2 and err.startswith("factrecall: error: ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "15"], "bio_batch_size 15 is not divisible by the 2 processes; "
                             "choose a multiple of 2 or launch a number of processes that divides it"),
    (["--trace-mode", "abs"], "trace mode 'abs' under DDP would sum each rank's |g| instead of |g| of the averaged "
                              "gradient; use --distributed fsdp (it sees the averaged gradient) or one process"),
])
def test_two_process_settings_refused_on_every_rank(extra, message, small_data, tmp_path):
    """Two ranks started by hand (what torchrun does), so each rank's own exit code is visible."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "factrecall", "train", "--data", str(small_data), "--out", str(tmp_path / "run"),
             *COMMON, *extra], env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2, err[-2000:]
        lines = [line for line in err.splitlines() if "factrecall: error:" in line]
        assert lines == [f"factrecall: error: {message}"], err[-2000:]
        assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
