"""Bases (issue 9): disjoint populations, base build with provenance, fine-tuning from a base,
forgetting, and the bad inputs around them."""

import json
import shutil
from pathlib import Path

import pytest

from factrecall.analysis.forgetting import forgetting_run
from factrecall.config.presets import data_config, train_config
from factrecall.data.dataset import load_dataset
from factrecall.data.generate import generate_dataset
from factrecall.errors import UserError
from factrecall.study.bases import build_base
from factrecall.study.claims import STATEMENTS
from factrecall.training.loop import train

POOLS = Path(__file__).parents[1] / "src" / "factrecall" / "data" / "pools"


def _names(path: Path) -> set[str]:
    return {p["name"] for p in load_dataset(path).people}


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1), (3, 7)])
def test_excluded_populations_share_no_names(tmp_path, seeds):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_dataset(data_config("smoke", people=300, seed=seeds[0]), a)
    generate_dataset(data_config("smoke", people=300, seed=seeds[1], exclude=(str(a),)), b)
    generate_dataset(data_config("smoke", people=300, seed=seeds[1], exclude=(str(a), str(b))), c)
    assert not _names(a) & _names(b) and not (_names(a) | _names(b)) & _names(c)
    meta = json.loads((b / "meta.json").read_text())
    assert meta["excluded"] == {str(a): load_dataset(a).content_hash}
    again = tmp_path / "b2"
    generate_dataset(data_config("smoke", people=300, seed=seeds[1], exclude=(str(a),)), again)
    for f in ("people.jsonl", "bio.jsonl", "qa.jsonl"):
        assert (again / f).read_bytes() == (b / f).read_bytes()  # still byte-reproducible


@pytest.fixture(scope="module")
def bases(small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    for kind in ("language", "skill"):
        build_base(kind, root / kind, "smoke", people=16, seed=5, exclude=(small_data,), epochs=2)
    return {kind: root / kind for kind in ("language", "skill")}


def test_base_build_records_provenance(bases, small_data):
    for kind, base in bases.items():
        record = json.loads((base / "base.json").read_text())
        population = load_dataset(base / "data")
        assert record["kind"] == kind and record["population"]["content_hash"] == population.content_hash
        assert record["population"]["names"] == sorted(_names(base / "data")) and record["population"]["people"] == 16
        assert not _names(base / "data") & _names(small_data)
        assert set(record["accuracy"]) == {"bio", "qa_id"} and record["versions"]["torch"].startswith("2.")
        assert (base / "config.json").is_file() and (base / "model.safetensors").is_file()
        train_rows = json.loads((base / "run" / "config.json").read_text())["train"]
        assert train_rows["qa_epochs"] == (0 if kind == "language" else 2) and train_rows["trace"] is False
    skill = load_dataset(bases["skill"] / "data")
    assert {p["split"] for p in skill.people} == {"id"}  # a skill base trains every person's QA
    assert build_base("language", bases["language"], "smoke", people=16, seed=5, exclude=(small_data,), epochs=2)[
        "population"]["people"] == 16  # the same settings again: the finished base is returned


def test_fine_tuning_from_a_base_measures_forgetting(bases, small_data, tmp_path):
    run = tmp_path / "run"
    train(train_config("smoke", strategy="mix", model=str(bases["skill"]), max_steps=3, eval_people=2), small_data, run)
    assert json.loads((run / "base" / "base.json").read_text())["kind"] == "skill"
    result = forgetting_run(run, eval_people=5)
    assert set(result["before"]) == set(result["after"]) == {"qa_id", "bio"}  # a skill base has no OOD people
    assert json.loads((run / "analysis" / "forgetting.json").read_text()) == result
    plain = tmp_path / "plain"
    train(train_config("smoke", strategy="mix", max_steps=1, eval_people=2), small_data, plain)
    assert forgetting_run(plain) is None  # a random base knows no population


def test_fine_tuning_on_the_base_population_is_refused(bases, tmp_path):
    with pytest.raises(UserError, match=r"shares 16 of its 16 people with the population base .* --exclude"):
        train(train_config("smoke", strategy="mix", model=str(bases["language"]), max_steps=1),
              bases["language"] / "data", tmp_path / "run")


def test_a_base_whose_tokenizer_misses_a_word_is_refused(bases, tmp_path):
    pools = tmp_path / "pools"
    shutil.copytree(POOLS, pools)
    (pools / "first_names.tsv").write_text("Zzyzx\tF\n")  # every person of this population is called Zzyzx
    data = tmp_path / "data"
    generate_dataset(data_config("smoke", people=12, pools=str(pools)), data)
    with pytest.raises(UserError, match="does not cover the data \\(first unknown word 'Zzyzx'\\)"):
        train(train_config("smoke", strategy="mix", model=str(bases["language"]), max_steps=1), data, tmp_path / "r")


def test_unknown_base_kind(tmp_path):
    with pytest.raises(UserError, match="unknown base kind 'wisdom'; choose one of language, skill"):
        build_base("wisdom", tmp_path / "b")


def test_a_study_over_a_random_base_and_a_model_directory(bases, tmp_path):
    from factrecall.report.build import build_reports
    from factrecall.study.runner import run_study

    config = tmp_path / "study.toml"
    config.write_text(f'preset = "smoke"\nbases = ["random", "{bases["skill"]}"]\n')
    summary = run_study(tmp_path / "s", config_file=config, log=lambda _: None)
    build_reports(tmp_path / "s")
    assert list(summary["bases"]) == ["random", "skill"] and summary["bases"]["random"]["forgetting"] is None
    assert set(summary["bases"]["skill"]["forgetting"]["mix"]["after"]) == {"qa_id", "bio"}
    assert (tmp_path / "s" / summary["bases"]["skill"]["report"]).is_file()
    assert [c["id"] for c in summary["bases"]["skill"]["claims"]] == list(STATEMENTS)
