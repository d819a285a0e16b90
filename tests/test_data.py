import json
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factrecall.artifacts import read_jsonl
from factrecall.data.dataset import load_dataset
from factrecall.data.generate import DataConfig, generate_dataset, render_bio, vocabulary_fragments
from factrecall.data.pools import ATTRIBUTES, load_pools
from factrecall.errors import UserError
from factrecall.models.tokenizer import first_uncovered_word, word_tokenizer


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_pools_meet_spec_sizes():
    pools = load_pools()
    assert len(pools.first_names) >= 400 and len(pools.middle_names) >= 400 and len(pools.last_names) >= 1000
    assert len(pools.cities) >= 200 and len(pools.universities) >= 300 and len(pools.majors) >= 100
    assert len(pools.companies) >= 250
    assert all(len(pools.templates[a]) >= 20 for a in ATTRIBUTES)
    cities = set(pools.cities)
    assert all(city in cities for _, city in pools.companies)


def test_same_config_gives_byte_identical_files(tmp_path):
    cfg = DataConfig(people=60, seed=3, bios_per_person=2, permute=True)
    generate_dataset(cfg, tmp_path / "a")
    generate_dataset(cfg, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    generate_dataset(DataConfig(people=60, seed=4, bios_per_person=2, permute=True), tmp_path / "c")
    assert _files(tmp_path / "a")["people.jsonl"] != _files(tmp_path / "c")["people.jsonl"]


def test_people_unique_split_disjoint_and_sized(small_data):
    ds = load_dataset(small_data)
    names = [p["name"] for p in ds.people]
    assert len(set(names)) == len(names) == 40
    splits = {p["person_id"]: p["split"] for p in ds.people}
    assert sum(s == "id" for s in splits.values()) == 20
    for row in ds.bios + ds.qa:
        assert row["split"] == splits[row["person_id"]]
    assert len(ds.qa) == 6 * 40 and len(ds.bios) == 2 * 40
    meta = json.loads((small_data / "meta.json").read_text())
    assert meta["counts"]["people"] == 40 and len(meta["content_hash"]) == 64


def test_spans_and_answers_are_exact(small_data):
    ds = load_dataset(small_data)
    people = {p["person_id"]: p for p in ds.people}
    for bio in ds.bios:
        person = people[bio["person_id"]]
        assert person["name"] in bio["text"]
        for a in ATTRIBUTES:
            s, e = bio["spans"][a]
            assert bio["text"][s:e] == person[a]
    for q in ds.qa:
        assert q["text"][q["answer_start"]:] == q["answer"] == people[q["person_id"]][q["attribute"]]
        assert q["text"][:q["answer_start"]] == q["prompt"] + " "
        assert people[q["person_id"]]["name"] in q["prompt"]


def test_every_template_renders_its_attribute():
    pools = load_pools()
    person = {"person_id": 0, "name": "Alexandra Briar Leblanc", "gender": "F", "birth_date": "April 11, 1982",
              "birth_city": "Boston", "university": "Andrew Jackson University", "major": "Computer Science",
              "employer": "Meta Platforms", "employer_city": "Menlo Park"}
    for a in ATTRIBUTES:
        for template in pools.templates[a]:
            one = type(pools)(**{**pools.__dict__, "templates": {**pools.templates, a: (template,)}})
            import random
            text, spans = render_bio(person, one, DataConfig(), random.Random(0))
            s, e = spans[a]
            assert text[s:e] == person[a]
            assert "{" not in text and "}" not in text
            # a pronoun at the start of a sentence is capitalised
            assert not re.search(r"(^|[.] )(he|she) ", text)


def test_pronoun_after_first_sentence_and_fullname_option(tmp_path):
    generate_dataset(DataConfig(people=10, seed=1), tmp_path / "p")
    generate_dataset(DataConfig(people=10, seed=1, fullname=True), tmp_path / "f")
    people = {p["person_id"]: p["name"] for p in read_jsonl(tmp_path / "p" / "people.jsonl")}
    for bio in read_jsonl(tmp_path / "p" / "bio.jsonl"):
        assert bio["text"].count(people[bio["person_id"]]) == 1
    for bio in read_jsonl(tmp_path / "f" / "bio.jsonl"):
        assert bio["text"].count(people[bio["person_id"]]) == 6


def test_word_tokenizer_covers_every_fragment_and_text(small_data):
    ds = load_dataset(small_data)
    tokenizer = word_tokenizer(ds.vocabulary_fragments())
    assert first_uncovered_word(tokenizer, vocabulary_fragments(load_pools(), DataConfig())) is None
    assert first_uncovered_word(tokenizer, [r["text"] for r in ds.bios + ds.qa]) is None
    assert first_uncovered_word(tokenizer, ["Zzyzx was born"]) == "Zzyzx"


@pytest.mark.parametrize("kwargs, message", [
    ({"people": 1}, "at least 2"),
    ({"qa_train_fraction": 1.5}, r"must lie in \(0, 1\]"),
    ({"qa_train_fraction": 0.0}, r"must lie in \(0, 1\]"),
    ({"bios_per_person": 0}, "at least 1"),
])
def test_bad_generator_config(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        generate_dataset(DataConfig(**kwargs), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_loader_names_file_and_line_of_malformed_jsonl(tmp_path):
    generate_dataset(DataConfig(people=4), tmp_path / "d")
    qa = tmp_path / "d" / "qa.jsonl"
    lines = qa.read_text().splitlines()
    lines[2] = lines[2][:20]
    qa.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"qa\.jsonl:3: malformed JSON line"):
        load_dataset(tmp_path / "d")


def test_loader_refuses_person_in_both_splits(tmp_path):
    generate_dataset(DataConfig(people=4), tmp_path / "d")
    qa = tmp_path / "d" / "qa.jsonl"
    rows = read_jsonl(qa)
    rows[0]["split"] = "ood" if rows[0]["split"] == "id" else "id"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="belongs to one split"):
        load_dataset(tmp_path / "d")


def test_loader_refuses_non_dataset(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a factrecall dataset"):
        load_dataset(tmp_path / "empty")


def test_files_load_with_the_datasets_library(small_data, tmp_path):
    import datasets

    loaded = {name: datasets.load_dataset("json", data_files=str(small_data / f"{name}.jsonl"), split="train",
                                          cache_dir=str(tmp_path / "cache")) for name in ("people", "bio", "qa")}
    assert loaded["qa"].num_rows == 240 and loaded["bio"].num_rows == 80 and loaded["people"].num_rows == 40
    assert set(loaded["qa"]["split"]) == {"id", "ood"}
    assert loaded["bio"][0]["spans"]["university"][1] > loaded["bio"][0]["spans"]["university"][0]


_json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=8),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "d"
    generate_dataset(DataConfig(people=4, bios_per_person=1), out)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(["people.jsonl", "bio.jsonl", "qa.jsonl"]), row=st.integers(0, 3),
       key=st.sampled_from(["person_id", "split", "text", "spans", "prompt", "answer", "answer_start", "attribute",
                            "name", "birth_city", "bio_index", "extra"]),
       value=_json_values, cut=st.one_of(st.none(), st.integers(0, 400)))
def test_any_damaged_dataset_loads_and_encodes_or_is_refused_cleanly(tiny_data, tmp_path_factory, file, row, key,
                                                                     value, cut):
    """Whatever one field holds (or wherever a file is cut), loading and encoding give data or a UserError."""
    from factrecall.encode import encode_bio, encode_qa

    d = tmp_path_factory.mktemp("damaged") / "d"
    shutil.copytree(tiny_data, d)
    rows = read_jsonl(d / file)
    rows[row % len(rows)][key] = value
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (d / file).write_text(text if cut is None else text[:cut])
    try:
        ds = load_dataset(d)
        tokenizer = word_tokenizer(ds.vocabulary_fragments())
        for b in ds.bios:
            encode_bio(tokenizer, b)
        for q in ds.qa:
            encode_qa(tokenizer, q)
    except UserError as e:
        assert "\n" not in str(e)


def test_every_shipped_template_names_the_subject_before_the_value():
    """A causal LM cannot learn a value that precedes its person's name in a bio's first sentence (issue 15)."""
    from factrecall.data.pools import load_pools

    pools = load_pools(None)
    late = [(attribute, t) for attribute, templates in pools.templates.items() for t in templates
            if t.index("{value}") < t.index("{subject}")]
    assert late == [] and all(len(templates) >= 20 for templates in pools.templates.values())


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"])
def test_json_lines_end_at_newline_only(separator, tmp_path):
    """A JSON string may hold U+2028, U+0085 and the other characters `str.splitlines` breaks at: they are text."""
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"name": f"Ann{separator}Lee"}, ensure_ascii=False) + "\r\n\n" + '{"x": 1}\n',
                    encoding="utf-8")
    assert read_jsonl(path) == [{"name": f"Ann{separator}Lee"}, {"x": 1}]


def test_a_lone_surrogate_is_refused_where_it_is(small_data, tmp_path):
    """JSON's "\\ud800" parses to no Unicode text (no tokenizer can encode it): the loader names the file and line."""
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    lines = (data / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    row["answer"] = "Par\ud800is"
    lines[2] = json.dumps(row)  # ASCII escapes: "Par\\ud800is"
    (data / "qa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"qa\.jsonl:3: a string holds a lone surrogate"):
        load_dataset(data)
