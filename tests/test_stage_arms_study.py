"""A study's Stage arms (`[stage_arms]`, `study/stage_arms.py`): the grid, the choice, and a smoke study that
forks its arms from the Stage run's BIO phase and analyses the chosen one."""

import json

import pytest

from factrecall.config.presets import train_config
from factrecall.config.study import StageArmsConfig, stage_arm_settings, study_config
from factrecall.errors import UserError
from factrecall.report.build import build_reports
from factrecall.study.claims.c1_recall import best_fitting
from factrecall.study.runner import run_study
from factrecall.study.stage_arms import arm_label, choose


def run(label: str, qa_id: float, qa_ood: float, bio: float) -> dict:
    return {"label": label, "run": f"runs/stage-arms/{label}", "settings": {},
            "accuracy": {"qa_id": qa_id, "qa_ood": qa_ood, "bio": bio}}


@pytest.mark.parametrize("runs, chosen, best", [
    ([run("a", 1.0, 0.08, 0.35), run("b", 1.0, 0.84, 0.96), run("c", 0.95, 0.9, 0.99)], "c", "c"),
    ([run("a", 1.0, 0.08, 0.35), run("b", 0.5, 0.84, 0.99)], "a", None),  # b misses ID-QA: never analysed
    ([run("a", 0.3, 0.0, 0.9), run("b", 0.5, 0.0, 0.8)], "b", None),  # none fits: the best ID-QA
    ([run("a", 1.0, 0.5, 0.95), run("b", 1.0, 0.9, 0.95)], "a", "b"),  # a tie on BIO and ID-QA: the first listed
])
def test_choose_keeps_bio_best_among_those_that_fit(runs, chosen, best):
    assert choose(runs)["label"] == chosen
    assert (best_fitting(runs) or {}).get("label") == best


def test_the_grid_leaves_out_the_train_recipe():
    train = train_config("smoke", qa_phase_lr=2e-3)
    arms = StageArmsConfig(qa_phase_lr=(2e-3, 2e-4), qa_epochs=(2, 4))
    settings = stage_arm_settings(arms, train)
    assert settings == [{"qa_phase_lr": 2e-3, "qa_epochs": 4}, {"qa_phase_lr": 2e-4, "qa_epochs": 2},
                        {"qa_phase_lr": 2e-4, "qa_epochs": 4}]  # [train]'s recipe (lr 2e-3, 2 QA epochs) left out
    same = train_config("smoke")  # qa_phase_lr 0 means lr: an arm at lr is [train]'s recipe
    assert stage_arm_settings(StageArmsConfig(qa_phase_lr=(same.lr,), qa_phase_weight_decay=(same.weight_decay,)),
                              same) == []
    assert arm_label({"qa_phase_lr": 2e-4, "qa_epochs": 4}) == "qa_phase_lr=0.0002,qa_epochs=4"
    assert stage_arm_settings(StageArmsConfig(), train) == []


@pytest.mark.parametrize("table, words", [
    ('[stage_arms]\nqa_phase_lr = [1e-3, 1e-3]\n', "lists a value twice"),
    ('[stage_arms]\nqa_phase_lr = [-1.0]\n', "qa_phase_lr"),
    ('[stage_arms]\nqa_phase_lr = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]\nqa_epochs = [1, 2, 3, 4]\n', "more than 16"),
    ('[stage_arms]\nlr = [1e-3]\n', "stage_arms setting 'lr'; known: qa_epochs"),
])
def test_bad_grids_are_refused_in_one_line(tmp_path, table, words):
    config = tmp_path / "arms.toml"
    config.write_text('preset = "smoke"\n' + table)
    with pytest.raises(UserError, match=words) as e:
        study_config(None, config)
    assert "\n" not in str(e.value)


def test_a_study_analyses_the_arm_that_keeps_bio_best(tmp_path):
    config = tmp_path / "arms.toml"
    config.write_text('preset = "smoke"\n[stage_arms]\nqa_phase_lr = [2e-3, 1e-4]\nqa_phase_lora_rank = [0, 2]\n')
    out, lines = tmp_path / "study", []
    summary = run_study(out, config_file=config, log=lines.append)
    record = json.loads((out / "stage_arms.json").read_text())
    assert [r["label"] for r in record["runs"]] == [
        "[train]", "qa_phase_lr=0.002,qa_phase_lora_rank=2", "qa_phase_lr=0.0001,qa_phase_lora_rank=0",
        "qa_phase_lr=0.0001,qa_phase_lora_rank=2"]  # a LoRA arm (rank 2) at each lr
    assert record["chosen"] == choose(record["runs"])["run"] and summary["stage_arms"] == record
    arm = out / "runs" / "stage-arms" / "qa_phase_lr=0.0001,qa_phase_lora_rank=0"
    assert json.loads((arm / "config.json").read_text())["start_from"]["bio_phase_sha256"]
    assert not (arm / "bio_phase").exists() and (out / "runs" / "stage" / "bio_phase").is_dir()
    analysed = out / record["chosen"]
    assert (analysed / "shared" / "shared.json").is_file() and (analysed / "analysis" / "ablation.json").is_file()
    chosen = next(r for r in record["runs"] if r["run"] == record["chosen"])
    assert summary["accuracy"]["stage"]["qa_id"] == chosen["accuracy"]["qa_id"]
    c1 = next(c for c in summary["claims"] if c["id"] == "C1")
    assert "Stage runs (ID-QA / OOD-QA / final BIO): [train]" in c1["evidence"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"train/stage-arms/qa_phase_lr=0.0001,qa_phase_lora_rank=2", "stage/choose"} <= set(manifest)
    page = build_reports(out).read_text()
    assert 'id="stage-arms-table"' in page and "(the arm chosen of 4 Stage runs)" in page
    again = []
    run_study(out, config_file=config, log=again.append)  # a rerun skips every step, the arms included
    assert all(" done " in line for line in again if not line.startswith("report"))


def test_a_study_that_skips_every_analysis_judges_c1_alone(tmp_path):
    """`[analysis] skip`: training, the Stage arms and C1; the claims that need a skipped analysis say so."""
    from factrecall.analysis.registry import REGISTRY

    config = tmp_path / "accuracies.toml"
    names = ", ".join(f'"{n}"' for n in REGISTRY)
    config.write_text(f'preset = "smoke"\n[analysis]\nskip = [{names}]\n[stage_arms]\nqa_phase_lr = [1e-4]\n')
    out = tmp_path / "study"
    summary = run_study(out, config_file=config, log=lambda line: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"data", "train/stage", "train/mix", "train/stage-arms/qa_phase_lr=0.0001", "stage/choose"}
    claims = {c["id"]: c for c in summary["claims"]}
    assert "did not run" not in claims["C1"]["measured"]["why"]
    for claim in ("C2", "C4a", "C5", "C7"):
        assert claims[claim]["measured"]["why"].startswith("not measured: "), claim
    assert not (out / "runs" / "mix" / "shared").exists()
    assert 'id="stage-arms-table"' in build_reports(out).read_text()


@pytest.mark.parametrize("skip, words", [
    ('["ablate"]', "analysis.skip names 'ablate', which is no analysis; choose among shared, ablation"),
    ('["shared"]', "analysis.skip leaves out shared, which graft reads; skip graft too"),
    ('["graft", "graft"]', "analysis.skip must be a list of analysis names, each once"),
])
def test_a_bad_skip_is_one_line(tmp_path, skip, words):
    config = tmp_path / "skip.toml"
    config.write_text(f'preset = "smoke"\n[analysis]\nskip = {skip}\n')
    with pytest.raises(UserError, match=words):
        study_config(None, config)


def test_new_settings_at_their_defaults_leave_records_as_they_were():
    """Settings added later (a LoRA rank, skipped analyses) are left out of study.json, run records and cache keys
    at their defaults, so studies written before them still match and are not retrained."""
    from factrecall.config.study import config_record
    from factrecall.training.config import train_record

    record = config_record(study_config("default"))
    assert "skip" not in record["analysis"] and "qa_phase_lora_rank" not in record["train"]
    assert "qa_phase_lora_rank" not in record["stage_arms"]
    assert "qa_phase_lora_rank" not in train_record(train_config("default"))
    assert train_record(train_config("default", qa_phase_lora_rank=4))["qa_phase_lora_rank"] == 4
