"""Stage's QA phase with LoRA adapters (issue 25's LoRA arm, `training/lora.py`): what it trains, its trace (the
merged update), forks from a kept BIO phase and resumes byte for byte, and the analyses read its run."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from factrecall.analysis.shared import analyze_run
from factrecall.config.presets import train_config
from factrecall.errors import UserError
from factrecall.training import lora, loop

RANK = 2


def _stage(**overrides):
    return train_config("smoke", **{"strategy": "stage", **overrides})


@pytest.fixture(scope="module")
def donor(small_data, tmp_path_factory):
    """A full fine-tuning Stage run (its QA phase at the preset's settings) whose bio_phase/ the LoRA arm forks."""
    out = tmp_path_factory.mktemp("full") / "run"
    loop.train(_stage(), small_data, out)
    return out


@pytest.fixture(scope="module")
def scratch(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    loop.train(_stage(qa_phase_lora_rank=RANK), small_data, out)
    return out


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _same_run(a: Path, b: Path) -> None:
    """Every file of a LoRA arm's run alike (byte for byte; metrics.jsonl without wall-clock seconds)."""
    names = [n for n in _files(a) if not n.startswith("bio_phase/")]
    assert names == [n for n in _files(b) if not n.startswith("bio_phase/")]
    for name in names:
        if name == "metrics.jsonl":
            assert _rows(a / name) == _rows(b / name)
        elif name != "config.json":  # a fork records where it started
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_lora_phase_trains_low_rank_changes_of_the_block_matrices_only(scratch):
    kept = load_file(str(scratch / "bio_phase" / "checkpoint" / "model.safetensors"))
    final = load_file(str(scratch / "model" / "model.safetensors"))
    trace = load_file(str(scratch / "trace.safetensors"))
    adapted = {k.split("/", 1)[1] for k in trace}
    assert adapted and all(".layers." in n for n in adapted)
    moved = 0
    for name, before in kept.items():
        after = final.get(name, final.get(name.replace("lm_head", "model.embed_tokens")))
        if name not in adapted:  # embeddings, norms, unembedding: as the BIO phase left them
            assert torch.equal(after, before), name
            continue
        rank = torch.linalg.matrix_rank((after - before).double(), rtol=1e-6)
        assert rank <= RANK, name
        moved += rank > 0
    assert moved == len(adapted)  # every adapted matrix learned something


def test_the_trace_of_a_lora_phase_is_its_merged_update(scratch):
    """Δ_QA = θ_ft − θ at the end of the BIO phase (the QA phase's whole change, step by step), Δ_BIO as kept."""
    trace = load_file(str(scratch / "trace.safetensors"))
    kept = load_file(str(scratch / "bio_phase" / "checkpoint" / "model.safetensors"))
    kept_trace = load_file(str(scratch / "bio_phase" / "checkpoint" / "trace.safetensors"))
    final = load_file(str(scratch / "model" / "model.safetensors"))
    for key, value in trace.items():
        task, name = key.split("/", 1)
        if task == "qa":
            torch.testing.assert_close(value, final[name] - kept[name], rtol=0, atol=1e-6, msg=key)
        else:
            assert torch.equal(value, kept_trace[key]), key
    with safe_open(str(scratch / "trace.safetensors"), "pt") as f:
        assert f.metadata()["qa_phase"] == f"LoRA rank {RANK}: its merged update"


@pytest.mark.parametrize("kill_after", [None, 6])  # a fork as it is; one killed after its first checkpoint (4)
def test_a_lora_arm_forked_from_a_full_run_writes_what_it_writes_from_scratch(donor, scratch, small_data,
                                                                            tmp_path, stop_after_qa_step, kill_after):
    out = tmp_path / "run"
    if kill_after:
        stop_after_qa_step(kill_after)
        with pytest.raises(KeyboardInterrupt):
            loop.train(_stage(qa_phase_lora_rank=RANK), small_data, out, start_from=donor)
        assert (out / "checkpoint").is_dir() and not (out / "eval.json").exists()
        stop_after_qa_step(None)
    loop.train(_stage(qa_phase_lora_rank=RANK), small_data, out, resume=bool(kill_after), start_from=donor)
    _same_run(scratch, out)
    assert (donor / "model/model.safetensors").read_bytes() != (out / "model/model.safetensors").read_bytes()


def test_the_analyses_read_a_lora_run(scratch, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(scratch, run)
    shared = analyze_run(run, k=5.0, sweep=(5.0,))
    assert shared["shared"] > 0 and sum(shared["by_layer"].values()) == shared["shared"]


@pytest.mark.parametrize("settings, key", [
    ({"trace_mode": "abs"}, "trace_mode"),
    ({"trace_normalization": "example_sum"}, "trace_normalization"),
    ({"distributed": "fsdp"}, "distributed"),
])
def test_settings_a_lora_phase_cannot_have_are_refused(settings, key):
    with pytest.raises(UserError, match=rf"^train\.{key} .* cannot go with qa_phase_lora_rank 2"):
        _stage(qa_phase_lora_rank=2, **settings).validate()
    with pytest.raises(UserError, match=r"^train\.qa_phase_lora_rank must be an integer ≥ 0"):
        _stage(qa_phase_lora_rank=-1).validate()
    _stage(qa_phase_lora_rank=2, trace=False, trace_mode="abs").validate()  # nothing traced, nothing refused


def test_merged_weights_on_gpt2s_transposed_conv1d():
    """GPT-2 stores its matrices [in, out] (Conv1D): the merged weight must be laid out the same way."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16,
                                       bos_token_id=0, eos_token_id=0)).eval()  # no dropout
    wrapped = lora.add_adapters(model, 2, seed=1)
    for name, p in wrapped.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    merged_now = lora.merged_weights(wrapped)
    names = ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.ln_1.weight"]
    expected = {n: merged_now(n).detach().clone() for n in names}
    ids = torch.randint(0, 32, (1, 5))
    logits = wrapped(input_ids=ids).logits
    plain = lora.merge(wrapped)
    torch.testing.assert_close(plain(input_ids=ids).logits, logits, rtol=1e-5, atol=1e-5)
    for n in names:
        torch.testing.assert_close(plain.get_parameter(n).detach(), expected[n])
