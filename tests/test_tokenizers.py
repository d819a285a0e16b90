"""Byte-level BPE (GPT-2, Pythia, Llama-3) and SentencePiece-style tokenizers through encoding, evaluation,
training and inspection, each checked against an independent computation (decoding, greedy generation,
word-level labels). The tokenizers are trained on the smoke data's own text (`bpe_models.py`)."""

import contextlib
import copy
import io
import json
import re
import sys

import pytest
import torch
from bpe_models import FAMILIES, as_trained, dataset_texts, model_dir, train_tokenizer

from factrecall import cli
from factrecall.analysis.consistency import consistency_run
from factrecall.analysis.inspect import inspect_run
from factrecall.analysis.labels import FUNCTION_WORDS, bio_views, dataset_pools, qa_view
from factrecall.data.dataset import load_dataset
from factrecall.data.pools import ATTRIBUTES
from factrecall.encode import IGNORE, collate, encode_bio, encode_qa, pad_id
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import EvalSet, eval_sets, evaluate, span_hits
from factrecall.models.loading import load_model

CLASSES = {"gpt2": "GPT2Tokenizer", "pythia": "GPTNeoXTokenizer", "llama3": "TokenizersBackend",
           "sentencepiece": "LlamaTokenizer"}
ADDS_BOS = {"gpt2": False, "pythia": False, "llama3": True, "sentencepiece": True}


@pytest.fixture(scope="module")
def dataset(small_data):
    return load_dataset(small_data)


@pytest.fixture(scope="module")
def dirs(small_data, tmp_path_factory):
    return {f: model_dir(f, small_data, tmp_path_factory.mktemp(f)) for f in FAMILIES}


@pytest.fixture(scope="module")
def loaded(dirs):
    return {f: load_model(path) for f, path in dirs.items()}


@pytest.fixture(scope="module")
def tokenizers(small_data, loaded):
    """Per (family, how): the tokenizer its directory loads as, and its tokenizer.json as it is."""
    texts = dataset_texts(small_data)
    return {**{(f, "directory"): tok for f, (_, tok) in loaded.items()},
            **{(f, "tokenizer.json"): as_trained(f, train_tokenizer(f, texts)) for f in FAMILIES}}


BOTH = pytest.mark.parametrize("how", ["directory", "tokenizer.json"])


def _text(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_as_its_family_and_tokenizes_as_trained(family, loaded, small_data):
    _, tok = loaded[family]
    assert type(tok).__name__ == CLASSES[family]
    trained = train_tokenizer(family, dataset_texts(small_data))
    for text in dataset_texts(small_data):
        ids = tok(text)["input_ids"]
        assert ids == trained.encode(text).ids
        assert (ids[0] == tok.bos_token_id) == ADDS_BOS[family]
    assert family not in ("gpt2", "llama3") or tok.pad_token is None
    if family == "llama3":  # digits in groups of 1–3, without the space before them
        assert [w for w, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" 2011")] == ["Ġ", "201", "1"]


@BOTH
@pytest.mark.parametrize("family", FAMILIES)
def test_every_value_span_is_exactly_the_value(family, how, tokenizers, dataset):
    """A span's tokens decode to the value, the tokens before it to the text before it (so no token straddles)."""
    tok = tokenizers[family, how]
    people = {p["person_id"]: p for p in dataset.people}
    first_tokens = set()
    for row in dataset.bios:
        e = encode_bio(tok, row)
        assert list(e.input_ids) == tok(row["text"])["input_ids"] + [tok.eos_token_id] and e.loss_from == 1
        for attribute, (s, end) in zip(ATTRIBUTES, e.spans):
            start, stop = row["spans"][attribute]
            assert _text(tok, e.input_ids[s:end]) == people[row["person_id"]][attribute] == row["text"][start:stop]
            assert _text(tok, e.input_ids[:s]) == row["text"][:start].strip()
            assert _text(tok, e.input_ids[:end]) == row["text"][:stop]
            first_tokens.add(tok.convert_ids_to_tokens(e.input_ids[s]))
    assert {"ĠMadrid", "▁Madrid", "ĠM", "▁M"} & first_tokens  # a value's first token holds the space before it
    for row in dataset.qa:
        e = encode_qa(tok, row)
        (s, end), = e.spans
        assert end == e.loss_to == len(e.input_ids) - 1 and e.input_ids[-1] == tok.eos_token_id and e.loss_from == s
        assert _text(tok, e.input_ids[:s]) == row["prompt"]
        assert _text(tok, e.input_ids[s:-1]) == row["answer"]
        assert list(e.input_ids[:-1]) == tok(row["text"])["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
def test_collate_labels_and_padding(family, loaded, dataset):
    """HF's shifted loss on collate's batch equals cross-entropy on the answer tokens of each unpadded text."""
    model, tok = loaded[family]
    model.eval()
    qa = [encode_qa(tok, q) for q in dataset.qa[:5]]
    bios = [encode_bio(tok, b) for b in dataset.bios[:3]]
    for examples in (qa, bios):
        batch = collate(examples, pad_id(tok))
        assert (batch["labels"][:, 1:] != IGNORE).sum() == sum(e.n_trained for e in examples)
        with torch.no_grad():
            out = model(**batch)
            losses = []
            for b, e in enumerate(examples):  # each text alone: no padding, no attention mask
                ids = torch.tensor([e.input_ids])
                logits = model(ids).logits[0]
                start = e.spans[0][0] if examples is qa else 1  # the answer's first token; every token after BOS
                stop = len(e.input_ids) if e.loss_to is None else e.loss_to  # a question's EOS is not trained
                losses.append(torch.nn.functional.cross_entropy(logits[start - 1:stop - 1], ids[0, start:stop],
                                                                reduction="sum"))
                torch.testing.assert_close(out.logits[b, :len(e.input_ids)], logits, atol=1e-5, rtol=1e-5)
        assert out.loss.item() == pytest.approx((sum(losses) / sum(e.n_trained for e in examples)).item(), rel=1e-5)
    assert pad_id(tok) == (tok.pad_token_id if family in ("pythia",) else tok.eos_token_id)


def _overfit(model, examples, pad, steps=60):
    """A few steps of Adam on `examples`, so that some greedy answers come out right."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = collate(examples, pad)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()


@torch.no_grad()
def _greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_match_agrees_with_greedy_decoding(family, dirs, dataset):
    model, tok = load_model(dirs[family])
    trained = dataset.qa_split("id")[:6]
    questions = trained + dataset.qa_split("ood")[:4]
    examples = [encode_qa(tok, q) for q in questions]
    _overfit(model, examples[:len(trained)], pad_id(tok))
    hits = span_hits(model, examples, pad_id(tok), batch_size=3)
    expected = []
    for q, e in zip(questions, examples):
        (s, end), = e.spans
        generated = _greedy(model, e.input_ids[:s], end - s)
        right = _text(tok, generated) == q["answer"]  # the answer's tokens; stopping at EOS is generation's detail
        expected.append([(right, generated[0] == e.input_ids[s])])
    assert hits == expected
    assert any(h[0][0] for h in hits) and not all(h[0][0] for h in hits)
    summary = evaluate(model, {"qa": EvalSet(examples, [(q["attribute"],) for q in questions])}, pad_id(tok))["qa"]
    assert summary["accuracy"] == sum(h[0][0] for h in hits) / len(hits)
    result = evaluate(model, eval_sets(tok, dataset, max_people=3), pad_id(tok))
    assert {k: result[k]["n"] for k in result} == {"qa_id": 18, "qa_ood": 18, "bio": 72}  # 6 people, 2 bios, 6 values


def _word_labels(text: str, names: list[tuple[int, int]], relation_words: set[str], sentence: tuple[int, int],
                 offsets) -> list[str]:
    """Per token: the label of the word its first non-space character lies in, found by searching the text."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\w+", text)]
    labels = []
    for s, e in offsets:
        first = s + len(text[s:e]) - len(text[s:e].lstrip())
        word = next(((a, b) for a, b in words if a <= first < b), None)
        if word is None or first >= e:
            labels.append("other")
        elif any(a <= first < b for a, b in names):
            labels.append("subject")
        elif sentence[0] <= first < sentence[1] and text[word[0]:word[1]] in relation_words:
            labels.append("relation")
        else:
            labels.append("other")
    return labels


def _relation_words(phrase: str, name: str) -> set[str]:
    return {w for w in re.findall(r"[A-Za-z]+", phrase) if w.lower() not in FUNCTION_WORDS and w not in name.split()}


def _function_word_pieces(text: str, offsets, labels) -> set[str]:
    """Relation tokens that spell a function word (a piece of a longer word)."""
    return {text[s:e].strip().lower() for (s, e), label in zip(offsets, labels) if label == "relation"} & FUNCTION_WORDS


@BOTH
@pytest.mark.parametrize("family", FAMILIES)
def test_labels_by_word_for_subword_tokens(family, how, tokenizers, dataset):
    """Subject and relation labels equal word-level labels found by string search, for every view of the data."""
    tok = tokenizers[family, how]
    pools = dataset_pools(dataset)
    people = {p["person_id"]: p for p in dataset.people}
    pieces = set()
    for row in dataset.qa:
        person = people[row["person_id"]]
        view = qa_view(tok, row, person, pools)
        offsets = tok(row["text"], return_offsets_mapping=True)["offset_mapping"][:len(view.ids)]
        start = row["prompt"].index(person["name"])
        question = row["prompt"][:row["prompt"].rindex(" Answer:")]
        expected = _word_labels(row["text"], [(start, start + len(person["name"]))],
                                _relation_words(question, person["name"]), (0, len(question)), offsets)
        assert list(view.labels) == expected, (row["prompt"], view.tokens)
        subject = [offsets[i] for i, lab in enumerate(view.labels) if lab == "subject"]
        assert row["text"][subject[0][0]:subject[-1][1]].strip() == person["name"]
        pieces |= _function_word_pieces(row["text"], offsets, view.labels)
    for row in dataset.bios:
        person, text = people[row["person_id"]], row["text"]
        names = [(m.start(), m.end()) for m in re.finditer(re.escape(person["name"]), text)]
        offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
        for attribute, view in zip(ATTRIBUTES, bio_views(tok, row, person, pools)):
            value_start, value_end = row["spans"][attribute]
            begin = text.rfind(". ", 0, value_start) + 1  # the value's sentence: after the previous period
            end = text.index(".", value_end) if "." in text[value_end:] else len(text)
            sentence = text[begin:end].replace(person[attribute], " ")
            expected = _word_labels(text, names, _relation_words(sentence, person["name"]), (begin, end),
                                    offsets[:len(view.ids)])
            assert list(view.labels) == expected, (attribute, view.tokens)
            pieces |= _function_word_pieces(text, offsets, view.labels)
    if family != "sentencepiece":  # "held" is "Ġhe" "ld": a relation word, not the function word "he"
        assert "he" in pieces


def _cli(*args) -> tuple[int, str]:
    """(exit code, stderr) of `factrecall ARGS` run in this process."""
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        mp.setattr(sys, "argv", ["factrecall", *map(str, args)])
        mp.setitem(cli._DEBUG, "on", False)
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue()


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, dirs, small_data, tmp_path_factory):
    """A two-step Mix run (smoke preset) from each family's model directory."""
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    code, err = _cli("train", "--data", small_data, "--out", out, "--strategy", "mix", "--preset", "smoke",
                     "--max-steps", 2, "--model", dirs[request.param])
    assert code == 0, err
    return request.param, out


def test_train_eval_inspect_consistency_on_a_family_model(run, dataset):
    family, out = run
    for name in ("base/tokenizer.json", "model/model.safetensors", "trace.safetensors", "eval.json"):
        assert (out / name).is_file(), name
    model, tok = load_model(out / "model")
    assert type(tok).__name__ == CLASSES[family] and len(tok) == model.config.vocab_size
    result = json.loads((out / "eval.json").read_text())
    again = evaluate(model, eval_sets(tok, dataset), pad_id(tok))
    assert {k: result[k] for k in again} == json.loads(json.dumps(again))

    inspected = inspect_run(out, out=out / "inspect")
    person = next(p for p in dataset.people if p["person_id"] == inspected["person"]["person_id"])
    for view in inspected["views"]:
        subject = [t for t, lab in zip(view["tokens"], view["labels"]) if lab == "subject"]
        assert tok.convert_tokens_to_string(subject).strip() == person["name"]
        assert tok.convert_tokens_to_string(view["gold"]).strip() == person["birth_city"]
        assert "relation" in view["labels"]
    assert (out / "inspect" / "inspect.json").is_file()

    result = consistency_run(out, people=4, probe_people=2)
    assert result["representation"]["subject"]["all"]["pairs"] == 24
    assert all(-1 <= c <= 1 for c in result["gradient_probe"]["all"]["matched"].values())
    assert (out / "analysis" / "consistency.json").is_file()


def test_a_tokenizer_that_merges_a_value_with_its_period_is_refused(small_data, dataset, tmp_path):
    path = model_dir("merging", small_data, tmp_path / "merging")
    _, tok = load_model(path)
    bio = dataset.bios[0]
    merged = next(a for a in ATTRIBUTES if bio["text"][bio["spans"][a][1]] in ".,")  # the first value before a mark
    start, end = bio["spans"][merged]
    message = (f"bio of person 0: the tokenizer merges {bio['text'][start:end]!r} with its neighbours "
               f"(tokens cover {bio['text'][start:end + 1]!r})")
    with pytest.raises(UserError, match=re.escape(message)):
        encode_bio(tok, bio)
    code, err = _cli("train", "--data", small_data, "--out", tmp_path / "run", "--strategy", "mix",
                     "--preset", "smoke", "--max-steps", 1, "--model", path)
    assert code == 2 and "merges" in err and len(err.strip().splitlines()) == 1


def test_an_eos_added_by_the_tokenizer_is_not_doubled(loaded, dataset):
    """A SentencePiece tokenizer configured to append EOS encodes like one that does not."""
    _, tok = loaded["sentencepiece"]
    plain = [encode_bio(tok, b) for b in dataset.bios[:3]] + [encode_qa(tok, q) for q in dataset.qa[:3]]
    tok = copy.deepcopy(tok)
    tok.add_eos_token = True
    tok.add_bos_token = True
    ids = tok(dataset.bios[0]["text"])["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert [encode_bio(tok, b) for b in dataset.bios[:3]] + [encode_qa(tok, q) for q in dataset.qa[:3]] == plain
