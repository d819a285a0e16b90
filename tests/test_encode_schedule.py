from collections import Counter

import pytest

from factrecall.config.presets import train_config
from factrecall.data.dataset import load_dataset
from factrecall.encode import IGNORE, collate, encode_bio, encode_qa
from factrecall.models.tokenizer import word_tokenizer
from factrecall.training.schedule import build_phases, lr_at


@pytest.fixture(scope="module")
def ds_tok(small_data):
    ds = load_dataset(small_data)
    return ds, word_tokenizer(ds.vocabulary_fragments())


@pytest.mark.parametrize("train_eos", [False, True])
def test_qa_loss_on_the_answer_and_the_eos_only_with_answer_eos(ds_tok, train_eos):
    """The answer is scored; it is trained by default, the EOS after it only with qa_loss = answer_eos."""
    ds, tok = ds_tok
    row = ds.qa[0]
    e = encode_qa(tok, row, train_eos)
    batch = collate([e, encode_qa(tok, ds.qa[7], train_eos)], tok.pad_token_id)
    labels = batch["labels"][0]
    trained = [i for i, lab in enumerate(labels.tolist()) if lab != IGNORE]
    (s, end), = e.spans
    assert trained == list(range(s, end + train_eos)) and len(trained) == e.n_trained
    assert tok.decode(list(e.input_ids[s:end])).replace(" ,", ",") == row["answer"]
    assert e.input_ids[-1] == tok.eos_token_id and len(e.input_ids) == end + 1
    prompt_ids = tok(row["prompt"])["input_ids"]
    assert list(e.input_ids[:s]) == prompt_ids


def test_bio_loss_on_whole_text_and_spans_per_attribute(ds_tok):
    ds, tok = ds_tok
    bio = ds.bios[0]
    e = encode_bio(tok, bio)
    labels = collate([e], tok.pad_token_id)["labels"][0].tolist()
    assert labels[0] == IGNORE and all(lab != IGNORE for lab in labels[1:])
    people = {p["person_id"]: p for p in ds.people}
    from factrecall.data.pools import ATTRIBUTES
    for a, (s, end) in zip(ATTRIBUTES, e.spans):
        assert tok.decode(list(e.input_ids[s:end])).replace(" ,", ",") == people[bio["person_id"]][a]


def test_padding_is_ignored(ds_tok):
    ds, tok = ds_tok
    short, long = sorted([encode_qa(tok, q) for q in ds.qa[:6]], key=lambda e: len(e.input_ids))[::5]
    batch = collate([short, long], tok.pad_token_id)
    n = len(short.input_ids)
    assert (batch["attention_mask"][0, n:] == 0).all() and (batch["labels"][0, n:] == IGNORE).all()


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_equal_budgets_and_stage_phases(grad_accum):
    counts = {}
    for strategy in ("stage", "mix"):
        cfg = train_config("smoke", strategy=strategy, grad_accum=grad_accum, bio_epochs=3, qa_epochs=2)
        phases = build_phases(cfg, n_bio=50, n_qa=30)
        passes = Counter()
        for phase in phases:
            for step in phase.steps:
                assert 1 <= len(step) <= grad_accum
                for mb in step:
                    passes[mb.task] += len(mb.rows)
        counts[strategy] = passes
        if strategy == "stage":
            assert [p.name for p in phases] == ["bio", "qa"]
            assert all(mb.task == "bio" for step in phases[0].steps for mb in step)
            assert all(mb.task == "qa" for step in phases[1].steps for mb in step)
        else:
            tasks = [mb.task for step in phases[0].steps for mb in step]
            assert {"bio", "qa"} == set(tasks)
            half = len(tasks) // 2  # both tasks are spread over the run, not one after the other
            assert "qa" in tasks[:half] and "bio" in tasks[half:]
    assert counts["stage"] == counts["mix"] == Counter(bio=150, qa=60)


def test_schedule_is_a_pure_function_of_config():
    cfg = train_config("smoke", strategy="mix")
    assert build_phases(cfg, 40, 30) == build_phases(cfg, 40, 30)
    assert build_phases(cfg, 40, 30) != build_phases(train_config("smoke", strategy="mix", seed=1), 40, 30)


def test_lr_warmup_then_cosine_to_floor():
    cfg = train_config("smoke", warmup=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, 1.0, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
