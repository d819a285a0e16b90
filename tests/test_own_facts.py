"""Facts of your own (docs/data-format.md): a hand-written dataset of 12 countries with a `capital` and a
`language` (tests/data/capitals/, no meta.json, no vocabulary.txt) loads with a derived meta, trains, and
every analysis runs on it; bad input is refused in one line naming file:line and field; the generator's
datasets load as before, with the content hash they always had."""

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train_cli import run_cli

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.attention import attention_stats
from factrecall.analysis.circuit import circuit_curves
from factrecall.analysis.consistency import consistency_run
from factrecall.analysis.graft import graft_run
from factrecall.analysis.inspect import inspect_run
from factrecall.analysis.labels import LABELS, bio_views, dataset_pools, person_views, qa_view
from factrecall.analysis.shared import analyze_run
from factrecall.artifacts import sha256_files
from factrecall.config.presets import data_config, train_config
from factrecall.data.dataset import load_dataset
from factrecall.data.generate import generate_dataset
from factrecall.encode import encode_bio, encode_qa
from factrecall.errors import UserError
from factrecall.evaluation.exact_match import eval_sets, evaluate
from factrecall.models.loading import load_model
from factrecall.models.tokenizer import first_uncovered_word, word_tokenizer
from factrecall.terms import EVAL_SETS
from factrecall.training.loop import train

CAPITALS = Path(__file__).parent / "data" / "capitals"
# data_config("smoke")'s content hash: the generator's output is pinned (it changed once since own facts were
# supported, when the four templates that named the value first were fixed: their words are in vocabulary.txt)
SMOKE_HASH = "7cd0c66ec3a784c30f5b20ac42bf70df888dff30e84187dae12d10bdaa87a2f4"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def capitals() -> Path:
    return CAPITALS


@pytest.fixture(scope="module")
def run(capitals, tmp_path_factory) -> Path:
    """tiny-llama, Mix, 4 steps on the capitals, with its trace and shared parameters."""
    out = tmp_path_factory.mktemp("own") / "run"
    train(train_config("smoke", strategy="mix", max_steps=4, eval_people=2, checkpoint_every=0,
                       bio_batch_size=4, qa_batch_size=4), capitals, out)
    analyze_run(out, k=5.0)
    return out


def test_loads_with_derived_meta(capitals):
    ds = load_dataset(capitals)
    assert not ds.generated and ds.attributes == ("capital", "language")
    assert ds.meta["source"] == "own" and ds.meta["attributes"] == ["capital", "language"]
    assert ds.meta["counts"] == {"people": 12, "id_people": 8, "ood_people": 4, "bios": 27, "qa": 28}
    files = [capitals / f"{n}.jsonl" for n in ("people", "bio", "qa")]
    assert ds.content_hash == sha256_files(files) == load_dataset(capitals).content_hash  # stable
    assert ds.files == files
    # derived keys: split, bio_index, text, answer_start
    assert all(b["split"] in ("id", "ood") for b in ds.bios) and [b["bio_index"] for b in ds.bios[:2]] == [0, 1]
    q = ds.qa[0]
    assert q["text"] == q["prompt"] + " " + q["answer"] and q["text"][q["answer_start"]:] == q["answer"]
    # a bio that states one attribute only keeps that span
    assert {tuple(b["spans"]) for b in ds.bios} == {("capital", "language"), ("capital",), ("language",)}
    # the word tokenizer built from the derived fragments covers every text, split as it splits them
    tokenizer = word_tokenizer(ds.vocabulary_fragments())
    assert first_uncovered_word(tokenizer, [b["text"] for b in ds.bios] + [q["text"] for q in ds.qa]) is None
    assert "Brasília" in ds.vocabulary_fragments() and "Buenos" in ds.vocabulary_fragments()
    for b in ds.bios:
        assert len(encode_bio(tokenizer, b).spans) == len(b["spans"])
    for q in ds.qa:
        encode_qa(tokenizer, q)


def test_meta_json_may_order_attributes_and_keep_notes(capitals, tmp_path):
    d = shutil.copytree(capitals, tmp_path / "d")
    (d / "meta.json").write_text(json.dumps({"description": "capitals", "attributes": ["language", "capital"]}))
    ds = load_dataset(d)
    assert ds.attributes == ("language", "capital") and ds.meta["description"] == "capitals"
    assert ds.content_hash == load_dataset(capitals).content_hash  # meta.json is not hashed
    assert all(list(b["spans"]) == [a for a in ("language", "capital") if a in b["spans"]] for b in ds.bios)


def test_generated_dataset_unchanged(small_data, tmp_path):
    """The generator writes the same files as before (content hash recorded before this change) and they load
    as generated data: the six attributes, vocabulary.txt, meta.json as written."""
    assert json.loads((small_data / "meta.json").read_text())["content_hash"] == SMOKE_HASH
    generate_dataset(data_config("smoke"), tmp_path / "again")
    assert sha256_files(sorted((tmp_path / "again").glob("*.*"))) == sha256_files(sorted(small_data.glob("*.*")))
    ds = load_dataset(small_data)
    assert ds.generated and ds.content_hash == SMOKE_HASH and len(ds.attributes) == 6
    assert ds.meta == json.loads((small_data / "meta.json").read_text())
    assert ds.vocabulary_fragments() == (small_data / "vocabulary.txt").read_text().splitlines()
    assert dataset_pools(ds) is not None and all(list(b["spans"]) == list(ds.attributes) for b in ds.bios)


def test_labels_fall_back_to_the_text(capitals):
    ds = load_dataset(capitals)
    tok = word_tokenizer(ds.vocabulary_fragments())
    assert dataset_pools(ds) is None
    people = {p["person_id"]: p for p in ds.people}

    def marked(view):
        return [(t, label) for t, label in zip(view.tokens, view.labels) if label != "other"]

    france = ds.bios[0]  # "France is a country in Europe. Its capital is Paris. People in France mostly speak French."
    capital, language = bio_views(tok, france, people[0], None)
    # the name everywhere before the cut; relation words only from the value's own sentence
    assert marked(capital) == [("France", "subject"), ("capital", "relation")]
    assert marked(language) == [("France", "subject"), ("People", "relation"), ("France", "subject"),
                                ("mostly", "relation"), ("speak", "relation")]
    assert capital.gold == tuple(tok("Paris", add_special_tokens=False)["input_ids"])
    # "Mexico City is the capital of Mexico.": the value holds the name, which is not the subject there
    mexico = next(b for b in ds.bios if b["person_id"] == 7 and list(b["spans"]) == ["capital"])
    (view,) = bio_views(tok, mexico, people[7], None)
    assert view.tokens == ("[BOS]",) and view.last_subject is None
    question = next(q for q in ds.qa if q["person_id"] == 0 and q["attribute"] == "language")
    view = qa_view(tok, question, people[0], None)  # "Which language do most people in France speak? Answer:"
    assert marked(view) == [("language", "relation"), ("most", "relation"), ("people", "relation"),
                            ("France", "subject"), ("speak", "relation")]  # "Which", "do", "in": function words
    assert view.tokens[-2:] == ("Answer", ":")
    # every person: a BIO and a QA view per attribute, in the dataset's order
    for person, bio, qa in person_views(tok, ds, 12):
        assert [v.attribute for v in bio] == [v.attribute for v in qa] == ["capital", "language"]


def test_train_eval_and_every_analysis(run, capitals):
    record = json.loads((run / "config.json").read_text())
    assert record["data"]["content_hash"] == load_dataset(capitals).content_hash
    result = json.loads((run / "eval.json").read_text())
    assert {"qa_id", "qa_ood", "bio"} <= set(result)
    assert result["qa_id"]["n"] == 20 and result["qa_ood"]["n"] == 8 and result["bio"]["n"] == 51
    for name in EVAL_SETS:
        assert list(result[name]["per_attribute"]) == ["capital", "language"]
        assert 0 <= result[name]["accuracy"] <= 1

    model, tok = load_model(run / "model")
    again = evaluate(model, eval_sets(tok, load_dataset(capitals)), tok.pad_token_id)  # what `factrecall eval` does
    assert again["qa_ood"]["n"] == 8 and list(again["bio"]["per_attribute"]) == ["capital", "language"]

    shared = json.loads((run / "shared" / "shared.json").read_text())
    assert shared["k"] == 5.0

    ablation = ablate_run(run, k=5.0, seeds=1)
    assert set(EVAL_SETS) <= set(ablation["unablated"])

    graft = graft_run(run, sparsity=0.4, steps=2, batch_size=8)
    assert 0 <= graft["graft"]["accuracy"]["qa_id"] <= 1

    heads = circuit_curves(run, "head", metrics=("shared_size", "random"), k=5.0, eval_people=3)
    assert set(heads["metrics"]) == {"shared_size", "random"} and heads["evaluations"] > 0

    inspected = inspect_run(run, out=run / "inspect")
    assert inspected["attribute"] == "capital" and inspected["person"]["split"] == "ood"
    assert [v["form"] for v in inspected["views"]] == ["bio", "qa"]
    for view in inspected["views"]:
        assert abs(sum(view["attention"]["final_share"].values()) - 1) < 1e-4 and view["direct"]["sum_error"] < 1e-3
        assert "subject" in view["labels"]
    language = inspect_run(run, person=0, attribute="language", layer=0, head=1, out=run / "inspect-language")
    assert language["views"][1]["gold"] == ["French"]
    with pytest.raises(UserError, match="--attribute 'birth_city' is not one of capital, language"):
        inspect_run(run, attribute="birth_city")

    attention = attention_stats(run, people=12)
    assert attention["views"] == {"bio": 24, "qa": 24} and set(attention["by_split"]) == {"id", "ood"}
    for form in ("bio", "qa"):
        total = sum(attention["shares"][form][label][0][0] for label in LABELS)
        assert abs(total - 1) < 1e-4

    consistency = consistency_run(run, people=12, probe_people=4)
    for position in ("subject", "answer"):
        table = consistency["representation"][position]["all"]
        assert table["pairs"] == 24 and len(table["matched"]) == 3  # 12 countries × 2 attributes
    assert set(consistency["gradient_probe"]["all"]) == {"matched", "mismatched", "gap"}


# --- bad input: each case edits one table of a copy and names file:line and field --------------------------------

def _edit(name: str, line: int, change):
    """Change row `line` (1-based) of `name`.jsonl with `change(row, rows)`: a row, or None to drop it."""
    def apply(d: Path) -> None:
        rows = _rows(d / f"{name}.jsonl")
        new = change(dict(rows[line - 1]), rows)
        rows[line - 1:line] = [] if new is None else [new]
        _write(d / f"{name}.jsonl", rows)
    return apply


BAD = [
    ("span-outside-text", _edit("bio", 1, lambda r, _: {**r, "spans": {**r["spans"], "capital": [46, 500]}}),
     r"bio\.jsonl:1: spans\['capital'\] must be \[start, end\) inside the text"),
    ("span-not-the-value", _edit("bio", 2, lambda r, _: {**r, "spans": {**r["spans"], "capital": [30, 34]}}),
     r"bio\.jsonl:2: spans\['capital'\] \[30, 34\] holds 'Pari', not person 0's capital 'Paris'"),
    ("span-not-a-pair", _edit("bio", 3, lambda r, _: {**r, "spans": {**r["spans"], "language": "86-92"}}),
     r"bio\.jsonl:3: spans\['language'\] must be \[start, end\)"),
    ("overlapping-spans", _edit("bio", 1, lambda r, _: {**r, "spans": {"capital": [46, 51], "language": [46, 51]}}),
     r"bio\.jsonl:1: spans\['language'\] \[46, 51\] holds 'Paris'"),
    ("span-of-unknown-attribute", _edit("bio", 4, lambda r, _: {**r, "spans": {**r["spans"], "capitol": [0, 3]}}),
     r"bio\.jsonl:4: spans\['capitol'\]: person 1 has no 'capitol' in people\.jsonl"),
    ("empty-spans", _edit("bio", 5, lambda r, _: {**r, "spans": {}}), r"bio\.jsonl:5: spans is empty"),
    ("bio-of-unknown-person", _edit("bio", 6, lambda r, _: {**r, "person_id": 99}),
     r"bio\.jsonl:6: person_id 99 is not in people\.jsonl"),
    ("bio-split-differs", _edit("bio", 1, lambda r, _: {**r, "split": "ood"}),
     r"bio\.jsonl:1: split: person 0 is 'id' in people\.jsonl but 'ood' here"),
    ("bio-text-missing", _edit("bio", 2, lambda r, _: {k: v for k, v in r.items() if k != "text"}),
     r"bio\.jsonl:2: missing key\(s\) text"),
    ("answer-not-the-value", _edit("qa", 1, lambda r, _: {**r, "answer": "Lyon"}),
     r"qa\.jsonl:1: answer 'Lyon' is not person 0's capital 'Paris'"),
    ("question-of-unknown-attribute", _edit("qa", 3, lambda r, _: {**r, "attribute": "anthem"}),
     r"qa\.jsonl:3: attribute 'anthem': person 0 has no 'anthem' in people\.jsonl"),
    ("question-about-the-name", _edit("qa", 3, lambda r, _: {**r, "attribute": "name"}),
     r"qa\.jsonl:3: attribute 'name' is no attribute"),
    ("text-not-prompt-and-answer", _edit("qa", 2, lambda r, _: {**r, "text": "Paris"}),
     r"qa\.jsonl:2: text must be prompt \+ ' ' \+ answer"),
    ("answer-start-wrong", _edit("qa", 2, lambda r, _: {**r, "answer_start": 3}),
     r"qa\.jsonl:2: answer_start must be len\(prompt\) \+ 1 = 45, got 3"),
    ("answer-wrong-type", _edit("qa", 4, lambda r, _: {**r, "answer": 7}), r"qa\.jsonl:4: answer must be str, got 7"),
    ("repeated-question", _edit("qa", 2, lambda r, rows: rows[0]),
     r"qa\.jsonl:2: prompt 'What is the capital of France\? Answer:' of person 0 appears twice \(also line 1\)"),
    ("unknown-split", _edit("people", 3, lambda r, _: {**r, "split": "test"}),
     r"people\.jsonl:3: split must be 'id' or 'ood', got 'test'"),
    ("duplicate-id", _edit("people", 4, lambda r, _: {**r, "person_id": 0}),
     r"people\.jsonl:4: person_id 0 appears twice \(also line 1\)"),
    ("duplicate-name", _edit("people", 2, lambda r, _: {**r, "name": "France"}),
     r"people\.jsonl:2: name 'France' is taken by line 1; each person needs a name of their own"),
    ("person-lacks-an-attribute", _edit("people", 5, lambda r, _: {k: v for k, v in r.items() if k != "language"}),
     r"bio\.jsonl:\d+: spans\['language'\]: person 4 has no 'language' in people\.jsonl"),
    ("attribute-not-a-string", _edit("people", 6, lambda r, _: {**r, "capital": ["Brasília"]}),
     r"people\.jsonl:6: capital must be a non-empty string without spaces at its ends, got \['Brasília'\]"),
    ("value-with-outer-space", _edit("people", 1, lambda r, _: {**r, "language": "French "}),
     r"people\.jsonl:1: language must be a non-empty string without spaces at its ends"),
    ("person-without-bios", lambda d: _write(d / "bio.jsonl", [r for r in _rows(d / "bio.jsonl")
                                                              if r["person_id"] != 9]),
     r"people\.jsonl:10: person_id 9 \(Kenya\) has no bio in bio\.jsonl"),
    ("fact-in-no-bio", lambda d: _write(d / "bio.jsonl", [{**r, "spans": {"capital": r["spans"]["capital"]}}
                                                          if r["person_id"] == 2 else r
                                                          for r in _rows(d / "bio.jsonl")]),
     r"people\.jsonl:3: language: no bio of person 2 \(Spain\) states it"),
    ("person-without-questions", lambda d: _write(d / "qa.jsonl", [r for r in _rows(d / "qa.jsonl")
                                                                  if r["person_id"] != 10]),
     r"people\.jsonl:11: person_id 10 \(Peru\) has no question in qa\.jsonl"),
    ("no-ood-person", lambda d: (_write(d / "people.jsonl", [{**r, "split": "id"} for r in _rows(d / "people.jsonl")]),
                                 _write(d / "bio.jsonl", [{k: v for k, v in r.items() if k != "split"}
                                                          for r in _rows(d / "bio.jsonl")])),
     r"people\.jsonl: split: no person is 'ood'"),
    ("malformed-line", lambda d: (d / "qa.jsonl").write_text((d / "qa.jsonl").read_text()[:-30]),
     r"qa\.jsonl:28: malformed JSON line"),
    ("blank-lines-keep-line-numbers", lambda d: (d / "qa.jsonl").write_text(
        "\n" + (d / "qa.jsonl").read_text().replace('"answer": "Paris"}', '"answer": "Lyon"}', 1)),
     r"qa\.jsonl:2: answer 'Lyon'"),
    ("meta-with-wrong-hash", lambda d: (d / "meta.json").write_text(json.dumps({"content_hash": "0" * 64})),
     r"meta\.json: content_hash '0+' is not what the tables give"),
    ("meta-with-other-attributes", lambda d: (d / "meta.json").write_text(json.dumps({"attributes": ["capital"]})),
     r"meta\.json: attributes must list each attribute the bios and questions name once \(capital, language\)"),
    ("missing-table", lambda d: (d / "qa.jsonl").unlink(), r"is not a factrecall dataset \(missing qa\.jsonl\)"),
]


@pytest.mark.parametrize("edit, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_names_file_line_and_field(capitals, tmp_path, edit, message):
    d = shutil.copytree(capitals, tmp_path / "d")
    edit(d)
    with pytest.raises(UserError, match=message) as error:
        load_dataset(d)
    assert "\n" not in str(error.value)


def test_value_first_without_bos_is_refused(capitals):
    """"Mexico City is the capital of Mexico.": tiny-llama's BOS predicts the value; a tokenizer without BOS
    has nothing before it, refused in one line."""
    ds = load_dataset(capitals)
    tok = word_tokenizer(ds.vocabulary_fragments())
    mexico = next(b for b in ds.bios if b["person_id"] == 7 and list(b["spans"]) == ["capital"])
    assert encode_bio(tok, mexico).spans[0][0] == 1
    tok._tokenizer.post_processor = None  # no BOS
    with pytest.raises(UserError, match="'Mexico City' is the text's first token and the tokenizer adds no BOS"):
        encode_bio(tok, mexico)


_json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 200) | st.text(max_size=8),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=9), inner,
                                                                                         max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(["people.jsonl", "bio.jsonl", "qa.jsonl"]), row=st.integers(0, 30),
       key=st.sampled_from(["person_id", "split", "text", "spans", "prompt", "answer", "answer_start", "attribute",
                            "name", "capital", "language", "bio_index", "extra"]),
       value=_json_values, cut=st.one_of(st.none(), st.integers(0, 3000)))
def test_any_damaged_own_dataset_loads_and_encodes_or_is_refused_cleanly(capitals, tmp_path_factory, file, row, key,
                                                                         value, cut):
    d = shutil.copytree(capitals, tmp_path_factory.mktemp("damaged") / "d")
    rows = _rows(d / file)
    rows[row % len(rows)][key] = value
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (d / file).write_text(text if cut is None else text[:cut], encoding="utf-8")
    try:
        ds = load_dataset(d)
        tokenizer = word_tokenizer(ds.vocabulary_fragments())
        for b in ds.bios:
            encode_bio(tokenizer, b)
        for q in ds.qa:
            encode_qa(tokenizer, q)
        person_views(tokenizer, ds, len(ds.people))
    except UserError as e:
        assert "\n" not in str(e)


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """(exit code, stdout and stderr together) of the real command line (`test_train_cli.run_cli`)."""
    code, out, err = run_cli(monkeypatch, capsys, *args)
    return code, out + err


def test_command_line_trains_and_evaluates_own_facts(capitals, tmp_path, monkeypatch, capsys):
    code, out = _cli(monkeypatch, capsys, "train", "--data", capitals, "--out", tmp_path / "run", "--strategy", "stage",
                     "--preset", "smoke", "--max-steps", 2, "--checkpoint-every", 0)
    assert code == 0, out
    code, out = _cli(monkeypatch, capsys, "eval", "--model", tmp_path / "run" / "model", "--data", capitals,
                     "--out", tmp_path / "eval.json")
    assert code == 0, out
    result = json.loads((tmp_path / "eval.json").read_text())
    assert list(result["qa_ood"]["per_attribute"]) == ["capital", "language"]
    bad = shutil.copytree(capitals, tmp_path / "bad")
    _edit("qa", 1, lambda r, _: {**r, "answer": "Lyon"})(bad)
    code, out = _cli(monkeypatch, capsys, "eval", "--model", tmp_path / "run" / "model", "--data", bad)
    assert code == 2 and out.count("\n") == 1 and "qa.jsonl:1: answer 'Lyon' is not" in out


def test_data_check_validates_and_counts(capitals, tmp_path, monkeypatch, capsys):
    """`factrecall data check DIR`: the loader's checks, then the counts (lines or JSON)."""
    dataset = load_dataset(capitals)
    code, out = _cli(monkeypatch, capsys, "data", "check", capitals, "--json")
    assert code == 0, out
    counts = json.loads(out)
    assert counts["source"] == "own facts" and counts["attributes"] == ["capital", "language"]
    assert counts["entities"] == len(dataset.people) == counts["id_entities"] + counts["ood_entities"]
    assert (counts["bios"], counts["questions_trained"], counts["questions_held_out"]) == (
        len(dataset.bios), len(dataset.qa_split("id")), len(dataset.qa_split("ood")))
    code, out = _cli(monkeypatch, capsys, "data", "check", capitals)
    assert code == 0 and out.startswith(f"{capitals}: valid (own facts); {counts['entities']} entities")
    bad = shutil.copytree(capitals, tmp_path / "bad")
    _edit("qa", 1, lambda r, _: {**r, "answer": "Lyon"})(bad)
    code, out = _cli(monkeypatch, capsys, "data", "check", bad)
    assert code == 2 and out.count("\n") == 1 and "qa.jsonl:1: answer 'Lyon' is not" in out
