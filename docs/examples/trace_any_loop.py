"""The cross-task trace on a plain PyTorch loop: a tiny Llama learns toy facts on a CPU in well under a minute.

    python docs/examples/trace_any_loop.py [--out DIR] [--steps N]

Facts: each person has a value for each of three attributes. A BIO sample lists them all
(`person attr₀ value₀ attr₁ value₁ attr₂ value₂`, attributes in random order, every token after the
person trained); a QA sample asks for one (`? person attr value`, only the value trained) and is
trained for half the people (ID), the other half held out (OOD). Each optimizer step accumulates one
BIO and one QA micro-batch (the paper's Mix). factrecall's `TraceRecorder` adds lr × gradient of every
backward into Δ_BIO or Δ_QA; the script saves the trace and the model as a run directory and prints
its shared parameters (docs/method.md §5) by layer. Only factrecall's public names are used.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import factrecall

PEOPLE, ATTRIBUTES, VALUES = 32, 3, 8  # people, attributes per person, values per attribute
PERSON, ATTRIBUTE = 0, PEOPLE  # token ids: people, then attributes, then values, then the question mark
VALUE = ATTRIBUTE + ATTRIBUTES
QUESTION = VALUE + ATTRIBUTES * VALUES
BATCH, ACCUM, LR = 16, 2, 3e-3


def facts(seed: int) -> torch.Tensor:
    """[people, attributes] value token of each person's attribute."""
    g = torch.Generator().manual_seed(seed)
    return VALUE + torch.arange(ATTRIBUTES) * VALUES + torch.randint(0, VALUES, (PEOPLE, ATTRIBUTES), generator=g)


def bio_batch(truth: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """BATCH bios of random people: [BATCH, 1 + 2·ATTRIBUTES] tokens; labels -100 where not trained."""
    people = torch.randint(0, PEOPLE, (BATCH,), generator=g)
    rows = []
    for p in people.tolist():
        order = torch.randperm(ATTRIBUTES, generator=g).tolist()
        rows.append([PERSON + p] + [t for a in order for t in (ATTRIBUTE + a, int(truth[p, a]))])
    ids = torch.tensor(rows)
    labels = ids.clone()
    labels[:, 0] = -100
    return {"input_ids": ids, "labels": labels}


def qa_batch(truth: torch.Tensor, people: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """BATCH questions about `people`: [BATCH, 4] tokens, only the answer (last token) trained."""
    who = people[torch.randint(0, len(people), (BATCH,), generator=g)]
    attr = torch.randint(0, ATTRIBUTES, (BATCH,), generator=g)
    ids = torch.stack([torch.full_like(who, QUESTION), PERSON + who, ATTRIBUTE + attr, truth[who, attr]], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    return {"input_ids": ids, "labels": labels}


@torch.no_grad()
def qa_accuracy(model, truth: torch.Tensor, people: torch.Tensor) -> float:
    """Exact match of the answer token over every (person, attribute) question of `people`."""
    who = people.repeat_interleave(ATTRIBUTES)
    attr = torch.arange(ATTRIBUTES).repeat(len(people))
    prompt = torch.stack([torch.full_like(who, QUESTION), PERSON + who, ATTRIBUTE + attr], dim=1)
    model.eval()
    guess = model(input_ids=prompt).logits[:, -1].argmax(-1)
    model.train()
    return float((guess == truth[who, attr]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run directory to write (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--k", type=float, default=1.0, help="top-k percent of traced entries per task")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="factrecall-example-")) / "run"

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other (and on a busy machine)
    truth = facts(seed=0)
    id_people, ood_people = torch.arange(PEOPLE // 2), torch.arange(PEOPLE // 2, PEOPLE)
    config = LlamaConfig(vocab_size=QUESTION + 1, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # cosine decay to 10 % of LR
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    g = torch.Generator().manual_seed(0)

    start = time.perf_counter()
    with factrecall.TraceRecorder(model) as trace:  # hooks on every block's attention and MLP weights
        for _ in range(args.steps):
            lr = schedule.get_last_lr()[0]  # the lr this step's optimizer.step() will use
            for task, batch in (("bio", bio_batch(truth, g)), ("qa", qa_batch(truth, id_people, g))):
                loss = model(**batch).loss / ACCUM
                with trace.task(task, lr):  # this backward's gradient, times lr, goes to Δ_task
                    loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        # a run directory, as `factrecall train` writes it: the trace beside the model
        trace.save(out / "trace.safetensors", {"source": "docs/examples/trace_any_loop.py"})
    model.save_pretrained(out / "model")
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} steps (Mix: one BIO and one QA micro-batch per step) in {seconds:.1f} s; "
          f"QA accuracy ID {qa_accuracy(model, truth, id_people):.2f}, OOD {qa_accuracy(model, truth, ood_people):.2f}")

    shared = factrecall.analyze_run(out, k=args.k, sweep=(args.k,))
    print(f"trace: {out / 'trace.safetensors'} ({len(factrecall.load_trace(out).names)} tensors, "
          f"{shared['tracked']:,} entries per task)")
    print(f"shared parameters at k = {args.k:g}% (global threshold): {shared['shared']:,} "
          f"(Top_BIO {shared['top_bio']:,}, Top_QA {shared['top_qa']:,}; chance {shared['chance']:.1f}, "
          f"enrichment {shared['enrichment']:.1f}x)")
    print("shared parameters by layer:")
    for layer, count in sorted(shared["by_layer"].items(), key=lambda item: (not item[0].isdigit(), item[0].zfill(4))):
        print(f"  layer {layer}: {count}")


if __name__ == "__main__":
    main()
