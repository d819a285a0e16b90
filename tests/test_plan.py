"""`factrecall plan` against measurements of tiny models of the paper's families on CPU.

State (weights, gradients, AdamW, trace) must match the tensors of a real training step exactly.
Activations are an estimate: within 25 % of the peak measured by torch.profiler's memory events
("Total Allocated" of the CPU allocator, which counts from the start of profiling) over one
forward + backward, with the gradients allocated beforehand so that only activations and the
backward's temporaries are counted.
"""

import json
import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM

from factrecall.config.presets import train_config
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.spec import spec_config
from factrecall.models.tiny import TINY_MODELS
from factrecall.plan.study import preset_plan
from factrecall.plan.training import (
    activation_bytes,
    autocast_copy_bytes,
    evaluation_bytes,
    model_shapes,
    state_bytes,
)
from factrecall.training.loop import _optimizer
from factrecall.training.trace import TraceRecorder

VOCAB = 3432  # the default preset's word vocabulary


def _tiny(name: str, vocab: int = VOCAB):
    config_class, kwargs = TINY_MODELS[name]
    config = config_class(vocab_size=vocab, **kwargs)
    torch.manual_seed(0)
    return config, AutoModelForCausalLM.from_config(config)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _batch(rows: int, seq_len: int, vocab: int = VOCAB) -> dict:
    ids = torch.randint(0, vocab, (rows, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, seq_len // 2:] = 0  # padding, so the attention mask is materialised as in training
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@pytest.mark.parametrize("name, include", [("tiny-llama-gqa", ()), ("tiny-neox", ("biases", "norms")),
                                           ("tiny-gpt2", ())])
def test_state_matches_the_tensors_of_a_training_step(name, include):
    config, model = _tiny(name)
    tracked = {n: p for n, p in model.named_parameters() if n in set(tracked_parameter_names(model, include))}
    trace = TraceRecorder(tracked)
    optimizer = _optimizer(model, train_config("smoke"))
    with trace.attribute("bio", 1e-3):
        model(**_batch(2, 8)).loss.backward()
    optimizer.step()
    params = list(model.parameters())  # a tied tensor once
    measured = {"weights": _bytes(params), "gradients": _bytes(p.grad for p in params),
                "optimizer": _bytes(v for s in optimizer.state.values() for v in s.values()),
                "trace": _bytes(trace.state_dict().values())}
    assert state_bytes(model_shapes(config, include)) == measured


def test_fsdp_shards_are_rows_rounded_up():
    config, model = _tiny("tiny-neox")
    shapes = model_shapes(config)
    expected = sum(math.ceil(p.shape[0] / 3) * p[0].numel() for p in model.parameters())
    assert state_bytes(shapes, 3)["weights"] == 4 * expected < state_bytes(shapes, 1)["weights"]


def _measured_peak(model, batch, trace_file) -> int:
    """Peak bytes the CPU allocator held during one forward + backward (above what existed before)."""
    model.train()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def step():
        model(**batch).loss.backward()
    step()  # warm-up: lazily created buffers are not activations
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    prof.export_chrome_trace(str(trace_file))
    events = json.loads(trace_file.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


@pytest.mark.parametrize("name", ["tiny-llama-gqa", "tiny-neox", "tiny-gpt2"])
@pytest.mark.parametrize("vocab", [VOCAB, 64])  # the loss dominates at 3,432 words, the blocks at 64
@pytest.mark.parametrize("rows, seq_len", [(16, 64), (4, 256)])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_activation_estimate_within_25_percent_of_measured_peak(name, vocab, rows, seq_len, checkpointing, precision,
                                                                tmp_path):
    config, model = _tiny(name, vocab)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    forward = model.forward

    def autocast_forward(**batch):  # as the training loop's micro-batch loss does
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return forward(**batch)
    model.forward = autocast_forward
    measured = _measured_peak(model, _batch(rows, seq_len, vocab), tmp_path / "profile.json")
    shapes = model_shapes(config)
    estimate = (activation_bytes(shapes, rows * seq_len, seq_len, precision, checkpointing)
                + autocast_copy_bytes(shapes, precision, checkpointing))
    assert abs(estimate - measured) <= 0.25 * measured, (estimate, measured)


def test_paper_models_from_their_spec_configs():
    """Parameter counts of the published models (Llama-3.2-3B: 3.21 B, tied; Pythia-2.8B: 2,775,208,960)."""
    llama, pythia = preset_plan("paper-llama"), preset_plan("paper-pythia")
    assert llama["model"]["parameters"] == 3_212_749_824 and llama["model"]["vocab"] == 128_256
    assert pythia["model"]["parameters"] == 2_775_208_960 and pythia["model"]["layers"] == 32
    # every traced entry is a block matrix: Llama 28 × (2·3072² + 2·3072·1024 + 3·3072·8192)
    assert llama["model"]["traced"] == 28 * (2 * 3072**2 + 2 * 3072 * 1024 + 3 * 3072 * 8192)
    ddp = llama["per_gpu"]["ddp"]
    assert ddp["state"]["trace"] == 8 * llama["model"]["traced"]
    assert ddp["plain"]["total"] == sum(ddp["state"].values()) + ddp["plain"]["activations"] + \
        ddp["plain"]["autocast_weight_copies"]
    # between steps: everything but the gradients, and an evaluation batch of 256 bios (six answers of 8 tokens)
    shapes = model_shapes(spec_config("meta-llama/Llama-3.2-3B"))
    assert ddp["evaluation"]["total"] == sum(ddp["state"].values()) - ddp["state"]["gradients"] + \
        evaluation_bytes(shapes, 256, 128, 6 * 8)


def test_plan_cli_table_json_and_bad_input(monkeypatch, capsys):
    from factrecall.cli import main

    def run(*args):
        monkeypatch.setattr("sys.argv", ["factrecall", "plan", *args])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("--preset", "paper-pythia", "--gpus", "2", "--json")
    result = json.loads(out)
    assert code == 0 and result["settings"]["gpus"] == 2 and result["model"]["family"] == "gpt_neox"
    assert result["per_gpu"]["fsdp"]["state"]["weights"] < result["per_gpu"]["ddp"]["state"]["weights"]
    assert set(result["analyses"]) == {"eval", "ablate", "graft", "heads", "neurons", "attention", "consistency"}
    assert result["disk"]["study"]["peak"] > result["disk"]["run"]["peak"] > result["disk"]["run"]["kept"]
    code, out, _ = run("--preset", "default")
    assert code == 0 and "FSDP2 GPUs needed" in out and "trace" in out
    assert "evaluation between steps" in out and "  graft " in out and "disk (GiB), the study: peak" in out
    for args, message in ((("--preset", "paper-llama", "--gpus", "3"), "bio_batch_size 16 is not divisible by --gpus"),
                          (("--preset", "paper-llama", "--gpus", "0"), "--gpus must be at least 1"),
                          (("--preset", "nope"), "unknown preset 'nope'")):
        code, _, err = run(*args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
