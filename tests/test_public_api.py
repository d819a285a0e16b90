"""factrecall's public API: the names `factrecall` exports, used the way a library user would (this file
imports nothing else from factrecall), on a tiny run end to end."""

import re
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import factrecall
from factrecall import (
    DataConfig,
    TraceRecorder,
    TrainConfig,
    UserError,
    ablate_run,
    analyze_run,
    generate_dataset,
    load_dataset,
    load_trace,
    select,
    train,
)

PUBLIC = {"DataConfig", "generate_dataset", "Dataset", "load_dataset", "TrainConfig", "train", "TraceRecorder",
          "TraceCallback", "save_trace", "Trace", "load_trace", "AnalysisConfig", "analyze_run", "select",
          "Selection", "ablate_run", "graft_run", "circuit_curves", "inspect_run", "run_study", "run_sweep",
          "build_reports",
          "UserError"}


def test_the_public_names_are_exactly_these():
    assert set(factrecall.__all__) == PUBLIC and len(factrecall.__all__) == len(PUBLIC)
    assert set(factrecall._EXPORTS) == PUBLIC  # every public name knows its module
    for name in PUBLIC:
        assert getattr(factrecall, name) is not None and name in dir(factrecall)
        assert re.search(rf"\b{name}\b", factrecall.__doc__), f"factrecall's docstring does not describe {name}"
    with pytest.raises(AttributeError):
        factrecall.tracked_parameter_names  # noqa: B018  (internal: not re-exported)


def test_importing_factrecall_or_its_cli_help_loads_no_torch():
    script = ("import sys, factrecall\n"
              "assert 'torch' not in sys.modules, 'import factrecall loaded torch'\n"
              "from factrecall.cli import app\n"
              "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
              "assert 'torch' not in sys.modules, 'factrecall --help loaded torch'\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_small_analysis_end_to_end(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    meta = generate_dataset(DataConfig(people=12, seed=3, templates_per_attribute=2), data)
    dataset = load_dataset(data)
    assert dataset.content_hash == meta["content_hash"] and len(dataset.bios) == 12
    cfg = TrainConfig(strategy="mix", model="tiny-llama", max_steps=3, bio_epochs=1, qa_epochs=1, bio_batch_size=4,
                      qa_batch_size=4, eval_people=2, checkpoint_every=0, device="cpu")
    final = train(cfg, data, run)
    assert {"qa_id", "qa_ood", "bio"} <= set(final)

    trace = load_trace(run)  # Δ_BIO and Δ_QA of every traced tensor, float32, the parameter's shape
    shared = analyze_run(run, k=5.0, sweep=(5.0,))
    selection = select(trace, k=5.0)
    assert shared["tracked"] == trace.entries and shared["shared"] == selection.shared.size() > 0
    assert sum(shared["by_layer"].values()) == shared["shared"]

    ablation = ablate_run(run, k=5.0, seeds=1, eval_people=2, device="cpu")
    assert ablation["shared"]["size"] == shared["shared"]  # resets exactly Shared(5 %) to θ_pre
    assert set(ablation) >= {"unablated", "shared", "random", "top_bio_only", "top_qa_only"}


def test_trace_recorder_in_a_plain_loop(tmp_path):
    """`with trace.task(task, lr): loss.backward()` adds lr × the gradient to Δ_task, and nothing outside it."""
    from transformers import LlamaConfig, LlamaForCausalLM  # a user's own model

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 32, (2, 6))

    def gradient() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    with TraceRecorder(model) as trace:
        with trace.task("bio", 0.5):
            model(input_ids=ids, labels=ids).loss.backward()
        with trace.task("qa", 0.25):
            model(input_ids=ids, labels=ids).loss.backward()
        model(input_ids=ids, labels=ids).loss.backward()  # outside a task: not traced
        with pytest.raises(UserError, match="task"):
            trace.task("answer", 0.1)
        with pytest.raises(UserError, match="lr"):
            trace.task("bio", float("nan"))
        path = trace.save(tmp_path / "trace.safetensors", {"note": "test"})
    g = gradient()
    names = list(trace.params)
    assert names and all(".layers." in n for n in names)  # block weights only, by default
    for name in names:
        torch.testing.assert_close(trace.accumulators["bio"][name], 0.5 * g[name])
        torch.testing.assert_close(trace.accumulators["qa"][name], 0.25 * g[name])
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {f"{t}/{n}" for t in ("bio", "qa") for n in names}
        assert f.metadata() == {"mode": "signed", "note": "test"}


def test_trace_recorder_in_update_mode_records_the_optimizer_steps(tmp_path):
    """`with trace.step(task): optimizer.step()` adds what the step changed to Δ_task; the sum over tasks is the
    weights' whole change. Each mode refuses the other's block."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, 32, (2, 6))
    changes = {"bio": {}, "qa": {}}
    with TraceRecorder(model, mode="update") as trace:
        for task in ("bio", "qa", "bio"):
            model(input_ids=ids, labels=ids).loss.backward()
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            with trace.step(task):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for n, p in model.named_parameters():
                changes[task][n] = changes[task].get(n, 0) + (p.detach() - before[n])
        with pytest.raises(UserError, match=r"^trace mode 'update' records optimizer steps"):
            trace.task("bio", 0.1)
        path = trace.save(tmp_path / "trace.safetensors")
    names = list(trace.params)
    assert names
    params = dict(model.named_parameters())
    for name in names:
        for task in ("bio", "qa"):
            torch.testing.assert_close(trace.accumulators[task][name], changes[task][name])
        whole = trace.accumulators["bio"][name] + trace.accumulators["qa"][name]
        torch.testing.assert_close(whole, params[name].detach() - start[name], rtol=0, atol=1e-6)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"mode": "update"}
    with TraceRecorder(model) as signed, pytest.raises(UserError, match=r"^trace\.step\(task\) records .* 'signed'"):
        signed.step("bio")
