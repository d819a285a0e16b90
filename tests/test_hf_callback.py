"""TraceCallback inside a real `transformers.Trainer` (CPU, tiny Llama) against an independent replay:
the batches the Trainer drew, each micro-batch's gradient from torch.autograd.grad, times the lr of
the step that used it (the linear schedule, computed here, and checked against the Trainer's log)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from factrecall.analysis.run import load_trace
from factrecall.analysis.selection import select
from factrecall.analysis.shared import analyze_run
from factrecall.errors import UserError
from factrecall.models.adapters import tracked_parameter_names
from factrecall.training.hf_callback import TraceCallback, batch_task

VOCAB, LENGTH, ROWS = 48, 8, 2
TASK_ORDER = ["bio", "qa", "qa", "bio", "bio", "qa", "bio", "qa"]  # one micro-batch each, shuffled per epoch
LR, EPOCHS, ACCUM, CLIP = 5e-3, 2, 2, 1.0


def _model() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _micro_batches() -> list[dict]:
    """Whole micro-batches, one task each: BIO trains every token after the first, QA only the last two."""
    g = torch.Generator().manual_seed(1)
    out = []
    for task in TASK_ORDER:
        ids = torch.randint(3, VOCAB, (ROWS, LENGTH), generator=g)
        labels = ids.clone()
        labels[:, 0] = -100  # never trained, so the Trainer's token count is the same shifted or not
        if task == "qa":
            labels[:, :LENGTH - 2] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "task": task})
    return out


def _args(out, **overrides) -> TrainingArguments:
    settings = {"output_dir": str(out), "per_device_train_batch_size": 1, "gradient_accumulation_steps": ACCUM,
                "num_train_epochs": EPOCHS, "learning_rate": LR, "lr_scheduler_type": "linear", "warmup_steps": 0,
                "weight_decay": 0.0, "max_grad_norm": CLIP, "optim": "adamw_torch", "logging_steps": 1,
                "save_strategy": "no", "report_to": "none", "use_cpu": True, "remove_unused_columns": False,
                "seed": 0, "disable_tqdm": True, "dataloader_pin_memory": False}
    return TrainingArguments(**{**settings, **overrides})


def _replay(drawn: list[dict], lrs: list[float]):
    """Σ lr·g per task and tensor from per-micro-batch autograd.grad, and the model after the same updates."""
    model = _model()
    model.train()
    names, params = zip(*model.named_parameters())
    tracked = set(tracked_parameter_names(model))
    expected = {f"{t}/{n}": torch.zeros_like(p) for t in ("bio", "qa") for n, p in zip(names, params) if n in tracked}
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    for step, lr in enumerate(lrs):
        batches = drawn[step * ACCUM:(step + 1) * ACCUM]
        items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)  # label tokens of the whole step
        total = [torch.zeros_like(p) for p in params]
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != "task"}
            grads = torch.autograd.grad(model(**inputs, num_items_in_batch=items).loss, params)
            for n, g, acc in zip(names, grads, total):
                acc += g
                if n in tracked:
                    expected[f"{b['task']}/{n}"] += lr * g
        for p, g in zip(params, total):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return expected, model


def test_trainer_trace_equals_replay_with_accumulation_and_a_task_mix(tmp_path):
    drawn = []

    def collate(items):  # each dataset item is one micro-batch; record the order the Trainer drew them in
        drawn.append(items[0])
        return items[0]

    run = tmp_path / "run"
    model = _model()
    trainer = Trainer(model=model, args=_args(tmp_path / "hf"), train_dataset=_micro_batches(),
                      data_collator=collate, callbacks=[TraceCallback(run)])
    trainer.train()

    steps = EPOCHS * len(TASK_ORDER) // ACCUM
    assert trainer.state.global_step == steps and len(drawn) == EPOCHS * len(TASK_ORDER)
    lrs = [LR * (1 - s / steps) for s in range(steps)]  # linear decay, no warmup: the lr step s uses
    logged = [row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row]
    assert logged == pytest.approx(lrs, rel=1e-6)

    recorded = load_file(str(run / "trace.safetensors"))
    expected, replayed = _replay(drawn, lrs)
    assert set(recorded) == set(expected)
    for key, want in expected.items():
        got = recorded[key]
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert want.abs().max() > 0, key
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()), msg=key)
    for (name, p), (_, q) in zip(model.named_parameters(), replayed.named_parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-6, msg=name)  # same training

    with safe_open(str(run / "trace.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["mode"] == "signed" and json.loads(meta["micro_batches"]) == {"bio": 8, "qa": 8}
    assert json.loads(meta["steps"]) == {"train": steps}

    # the directory is a run every trace analysis reads: shared parameters from the file the callback wrote
    trace = load_trace(run)
    selection = select(trace, k=5.0)
    assert 0 < selection.shared.size() <= selection.top_bio.size()
    shared = analyze_run(run, k=5.0, sweep=(5.0,))
    assert shared["tracked"] == trace.entries and shared["shared"] == selection.shared.size()

    # evaluation after training runs on the same task-carrying batches (the hook only takes the task out)
    assert "eval_loss" in trainer.evaluate(eval_dataset=_micro_batches()[:2])
    # a second run into the same directory is refused before any step
    again = Trainer(model=_model(), args=_args(tmp_path / "hf2"), train_dataset=_micro_batches(),
                    data_collator=lambda items: items[0], callbacks=[TraceCallback(run)])
    with pytest.raises(UserError, match="already exists"):
        again.train()


def test_a_batch_without_its_task_is_refused(tmp_path):
    """With remove_unused_columns on, the Trainer drops the task from dict items: the error says so."""
    trainer = Trainer(model=_model(), args=_args(tmp_path / "hf", remove_unused_columns=True, max_steps=1),
                      train_dataset=_micro_batches(), data_collator=lambda items: items[0],
                      callbacks=[TraceCallback(tmp_path / "run")])
    with pytest.raises(UserError, match="remove_unused_columns=False"):
        trainer.train()
    assert not (tmp_path / "run" / "trace.safetensors").exists()


def test_the_callback_traces_gradients_only(tmp_path):
    with pytest.raises(UserError, match=r"^trace mode 'update' is not one of signed, abs \(the callback traces"):
        TraceCallback(tmp_path / "run", mode="update")


def test_batch_task():
    assert batch_task("qa") == "qa" and batch_task(["bio", "bio"]) == "bio"
    for bad in (["bio", "qa"], "answer", [], 3):
        with pytest.raises(UserError, match="one task"):
            batch_task(bad)


def test_factrecall_train_after_a_trainer_in_the_same_process_is_unchanged(train_smoke, tmp_path):
    """Accelerate's gradient state is per process: a Trainer with accumulation stopped mid-step (here by a batch
    without its task) left it dividing every loss by 2 and skipping every optimizer step of the next
    `factrecall train` (found by this suite; the loop now sets both)."""
    before = train_smoke("before-trainer", max_steps=3)
    trainer = Trainer(model=_model(), args=_args(tmp_path / "hf", remove_unused_columns=True),
                      train_dataset=_micro_batches(), data_collator=lambda items: items[0],
                      callbacks=[TraceCallback(tmp_path / "run")])
    with pytest.raises(UserError):
        trainer.train()
    after = train_smoke("after-trainer", max_steps=3)
    for name in ("model/model.safetensors", "trace.safetensors"):
        assert (before / name).read_bytes() == (after / name).read_bytes(), name
