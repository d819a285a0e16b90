"""The trace recorded by the training loop against an independent replay with torch.autograd.grad, per
micro-batch (normalisation "token_mean", the default) and per example ("example_sum")."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from factrecall.config.presets import train_config
from factrecall.data.dataset import load_dataset
from factrecall.encode import collate, encode_bio, encode_qa
from factrecall.errors import UserError
from factrecall.models.adapters import tracked_parameter_names
from factrecall.models.base import write_base
from factrecall.models.loading import load_model
from factrecall.training.loop import _micro_batch_loss, train
from factrecall.training.schedule import build_phases, lr_at
from factrecall.training.trace import TraceRecorder


def _replay(cfg, data_dir, base_dir, updates: dict | None = None):
    """Σ lr·g per task from per-micro-batch autograd.grad, and the model after the same updates; under
    `trace_normalization = "example_sum"` g is Σ_n of each example's gradient, each taken on its own.
    `updates`, if given, is filled with Σ θ_s+1 − θ_s per task of the traced tensors (one-task steps)."""
    model, tok = load_model(base_dir)
    model.train()
    ds = load_dataset(data_dir)
    examples = {"bio": [encode_bio(tok, b) for b in ds.bios], "qa": [encode_qa(tok, q, cfg.qa_loss == "answer_eos") for q in ds.qa_split("id")]}
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    tracked = set(tracked_parameter_names(model))
    expected = {f"{t}/{n}": torch.zeros_like(p) for t in ("bio", "qa") for n, p in zip(names, params) if n in tracked}
    for phase in build_phases(cfg, len(examples["bio"]), len(examples["qa"])):
        decay = [p for p in params if p.dim() >= 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                       {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                      lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        for i, step in enumerate(phase.steps):
            lr = lr_at(i, len(phase.steps), phase.peak_lr, cfg)
            total = [torch.zeros_like(p) for p in params]
            for mb in step:
                loss = model(**collate([examples[mb.task][r] for r in mb.rows], tok.pad_token_id)).loss
                grads = torch.autograd.grad(loss / len(step), params)
                for n, g, acc in zip(names, grads, total):
                    acc += g
                    if n in tracked and cfg.trace_normalization == "token_mean":
                        expected[f"{mb.task}/{n}"] += lr * g
                for r in mb.rows if cfg.trace_normalization == "example_sum" else ():
                    alone = model(**collate([examples[mb.task][r]], tok.pad_token_id)).loss  # ℓ_n: its token mean
                    for n, g in zip(names, torch.autograd.grad(alone, params)):
                        if n in tracked:
                            expected[f"{mb.task}/{n}"] += lr * g
            for p, g in zip(params, total):
                p.grad = g
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            for group in optimizer.param_groups:
                group["lr"] = lr
            before = [p.detach().clone() for p in params]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if updates is not None:
                (task,) = {mb.task for mb in step}
                for n, p, b in zip(names, params, before):
                    if n in tracked:
                        updates.setdefault(f"{task}/{n}", torch.zeros_like(p)).add_(p.detach() - b)
    return expected, model


@pytest.mark.parametrize("strategy, qa_loss", [("stage", "answer"), ("mix", "answer"), ("mix", "answer_eos")])
def test_trace_equals_autograd_per_micro_batch(small_data, tmp_path, strategy, qa_loss):
    cfg = train_config("smoke", strategy=strategy, grad_accum=2, max_steps=4, clip=0.5, eval_people=2,
                       checkpoint_every=0, qa_phase_lr=5e-4, qa_loss=qa_loss)
    train(cfg, small_data, tmp_path / "run")
    recorded = load_file(str(tmp_path / "run" / "trace.safetensors"))
    expected, replayed = _replay(cfg, small_data, tmp_path / "run" / "base")
    assert set(recorded) == set(expected)
    for key, want in expected.items():
        got = recorded[key]
        assert got.dtype == torch.float32
        if want.norm() == 0:
            assert got.norm() == 0, key
        else:
            assert (got - want).norm() / want.norm() <= 1e-5, key
    if strategy == "stage":  # Stage's BIO phase sees no QA: every QA trace entry moved only in phase 2
        assert all(recorded[k].abs().sum() > 0 for k in recorded if k.startswith("qa/"))
    trained, _ = load_model(tmp_path / "run" / "model")
    for (name, a), b in zip(trained.named_parameters(), replayed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("strategy", ["stage", "mix"])
def test_update_trace_equals_the_replayed_steps_and_sums_to_the_change(small_data, tmp_path, strategy):
    """Mode "update": each optimizer step's change of the traced weights, given to its task (Stage with
    grad_accum 2 too); the two tasks' sums add up to θ_ft − θ_pre, and Stage's Δ_BIO is its BIO phase's change."""
    cfg = train_config("smoke", strategy=strategy, grad_accum=2 if strategy == "stage" else 1, max_steps=4,
                       clip=0.5, eval_people=2, checkpoint_every=0, qa_phase_lr=5e-4, trace_mode="update")
    run = tmp_path / "run"
    train(cfg, small_data, run)
    recorded = load_file(str(run / "trace.safetensors"))
    with safe_open(str(run / "trace.safetensors"), "pt") as f:
        assert f.metadata()["mode"] == "update"
    updates: dict = {}
    _replay(cfg, small_data, run / "base", updates)
    assert set(recorded) == {f"{t}/{n}" for t in ("bio", "qa") for n in {k.split("/", 1)[1] for k in updates}}
    for key, got in recorded.items():
        want = updates.get(key, torch.zeros_like(got))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7, msg=key)
    pre, _ = load_model(run / "base")
    ft, _ = load_model(run / "model")
    pre, ft = dict(pre.named_parameters()), dict(ft.named_parameters())
    for name in {k.split("/", 1)[1] for k in recorded}:
        torch.testing.assert_close(recorded[f"bio/{name}"] + recorded[f"qa/{name}"], (ft[name] - pre[name]).detach(),
                                   rtol=0, atol=1e-6, msg=name)
    if strategy == "stage":
        kept = load_file(str(run / "bio_phase" / "checkpoint" / "model.safetensors"))
        for name in {k.split("/", 1)[1] for k in recorded}:
            torch.testing.assert_close(recorded[f"bio/{name}"], kept[name] - pre[name].detach(), rtol=0, atol=1e-6)


def test_update_mode_refuses_what_it_cannot_attribute(small_data, tmp_path):
    with pytest.raises(UserError, match=r"^train\.trace_mode 'update' .* grad_accum 2 mixes tasks"):
        train_config("smoke", strategy="mix", grad_accum=2, trace_mode="update").validate()
    with pytest.raises(UserError, match=r"^train\.trace_normalization must be token_mean under trace mode 'update'"):
        train_config("smoke", trace_mode="update", trace_normalization="example_sum").validate()
    train_config("smoke", strategy="mix", grad_accum=2, trace_mode="update", trace=False).validate()  # no trace


def test_abs_mode_is_nonnegative_and_bounds_signed(small_data, tmp_path):
    for mode in ("signed", "abs"):
        cfg = train_config("smoke", strategy="mix", max_steps=3, trace_mode=mode, eval_people=2, checkpoint_every=0)
        train(cfg, small_data, tmp_path / mode)
    signed = load_file(str(tmp_path / "signed" / "trace.safetensors"))
    absolute = load_file(str(tmp_path / "abs" / "trace.safetensors"))
    for k in signed:
        assert (absolute[k] >= 0).all()
        assert (signed[k].abs() <= absolute[k] + 1e-7).all()


def test_example_sum_trace_equals_autograd_per_example(small_data, tmp_path):
    """Each example's own token-mean gradient, summed; a short last QA micro-batch (120 questions in
    micro-batches of 48) adds 24 examples' worth. Training is untouched: the same model as by default."""
    settings = dict(strategy="stage", grad_accum=2, max_steps=3, qa_batch_size=48, clip=0.5, eval_people=2,
                    checkpoint_every=0, qa_phase_lr=5e-4)
    cfg = train_config("smoke", trace_normalization="example_sum", **settings)
    dataset = load_dataset(small_data)
    qa_phase = build_phases(cfg, len(dataset.bios), len(dataset.qa_split("id")))[1]
    assert 24 in {len(mb.rows) for step in qa_phase.steps[:3] for mb in step}
    train(cfg, small_data, tmp_path / "run")
    recorded = load_file(str(tmp_path / "run" / "trace.safetensors"))
    expected, _ = _replay(cfg, small_data, tmp_path / "run" / "base")
    assert set(recorded) == set(expected)
    for key, want in expected.items():
        assert (recorded[key] - want).norm() / want.norm() <= 1e-5, key
    train(train_config("smoke", **settings), small_data, tmp_path / "default")
    trained, default = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("run", "default"))
    assert all(torch.equal(trained[k], default[k]) for k in default)
    losses = [[(row.get("loss"), row.get("grad_norm")) for row in map(json.loads, (tmp_path / run / "metrics.jsonl")
              .read_text().splitlines())] for run in ("run", "default")]
    assert losses[0] == losses[1]
    default_trace = load_file(str(tmp_path / "default" / "trace.safetensors"))
    assert all(not torch.equal(default_trace[k], recorded[k]) for k in default_trace)


def test_normalizations_weigh_a_micro_batch_as_documented(small_data, tmp_path):
    """One QA micro-batch of a birth_date question (most answer tokens) and a birth_city one (fewest):
    "token_mean" weighs example n's gradient by N_n / ΣN (its share of the trained tokens), "example_sum"
    by 1 each, so the two traces point in different directions."""
    dataset = load_dataset(small_data)
    write_base("tiny-llama", dataset, 0, tmp_path / "base")
    model, tok = load_model(tmp_path / "base")
    questions = dataset.qa_split("id")
    rows = [next(i for i, q in enumerate(questions) if q["attribute"] == a) for a in ("birth_date", "birth_city")]
    examples = [encode_qa(tok, q) for q in questions]
    n = [examples[r].n_trained for r in rows]
    assert n[0] > n[1]
    params = dict(model.named_parameters())
    tracked = {name: params[name] for name in tracked_parameter_names(model)}
    alone = [torch.autograd.grad(model(**collate([examples[r]], tok.pad_token_id)).loss, list(tracked.values()))
             for r in rows]
    one_process = SimpleNamespace(num_processes=1, process_index=0, device=torch.device("cpu"))
    traces = {}
    for normalization in ("token_mean", "example_sum"):
        model.zero_grad(set_to_none=True)
        recorder = TraceRecorder(tracked)
        loss, example_loss = _micro_batch_loss(model, examples, tuple(rows), tok.pad_token_id, one_process,
                                               example_sum=normalization == "example_sum")
        if example_loss is None:
            with recorder.attribute("qa", 0.5):
                loss.backward()
        else:
            recorder.record("qa", 0.5, example_loss)
            assert all(p.grad is None for p in tracked.values())  # the trace's backward leaves .grad alone
        recorder.close()
        traces[normalization] = recorder.accumulators["qa"]
    cosines = []
    for i, name in enumerate(tracked):
        weighted = 0.5 * (n[0] * alone[0][i] + n[1] * alone[1][i]) / sum(n)
        torch.testing.assert_close(traces["token_mean"][name], weighted, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(traces["example_sum"][name], 0.5 * (alone[0][i] + alone[1][i]), rtol=1e-4, atol=1e-7)
        a, b = traces["token_mean"][name].flatten(), traces["example_sum"][name].flatten()
        cosines.append(float(a @ b / (a.norm() * b.norm())))
    assert min(cosines) < 0.999


def test_trace_normalization_is_validated():
    with pytest.raises(UserError, match=r"^train\.trace_normalization: unknown .*token_mean, example_sum"):
        train_config("smoke", trace_normalization="per_example").validate()
