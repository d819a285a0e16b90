"""Study axes (issue 16): a sweep's points, their caching, the verdicts over seeds, and the runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_cli import run_cli

from factrecall.artifacts import read_json, write_json
from factrecall.config.study import config_record
from factrecall.errors import UserError
from factrecall.layout import StudyLayout
from factrecall.study import sweep_runner
from factrecall.study.claims import STATEMENTS
from factrecall.study.sweep import MAX_POINTS, sweep_points
from factrecall.study.sweep_summary import combine_verdicts, mean_sd, summarize_sweep, verdict_changes


def _config(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text('preset = "smoke"\n' + text, encoding="utf-8")
    return path


# ---- the points -------------------------------------------------------------------------------------------

def test_grid_in_axis_order_then_base_then_seed(tmp_path):
    points = sweep_points(_config(tmp_path, 'seeds = [3, 4]\n[sweep]\n"train.lr" = [1e-3, 2e-3]\n'
                                            'data.people = [30, 40]\n'))
    assert [p.settings for p in points] == [
        {"train.lr": lr, "data.people": n, "seed": s} for lr in (1e-3, 2e-3) for n in (30, 40) for s in (3, 4)]
    for p in points:
        assert p.config.train.seed == p.config.data.seed == p.settings["seed"]
        assert (p.config.train.lr, p.config.data.people) == (p.settings["train.lr"], p.settings["data.people"])
    assert points[0].label == "lr=0.001 people=30 seed=3"
    assert len({p.id for p in points}) == len(points)


def test_point_ids_follow_the_axis_values(tmp_path):
    one = sweep_points(_config(tmp_path, "seeds = [0, 1]\n", "a.toml"))
    more = sweep_points(_config(tmp_path, "seeds = [0, 1, 2]\n", "b.toml"))
    assert [p.id for p in one] == [p.id for p in more[:2]]  # adding a value keeps the old points' directories
    other = sweep_points(_config(tmp_path, "seeds = [0, 1]\n[train]\nlr = 5e-4\n", "c.toml"))
    assert [p.id for p in one] == [p.id for p in other]  # a common setting: same directories, steps rerun by key
    assert [p.config.train.lr for p in other] == [5e-4, 5e-4]
    with pytest.raises(UserError, match=r"point 0 \(lr=0\.001\) is listed twice"):
        sweep_points(_config(tmp_path, 'points = [{"train.lr" = 1e-3}, {"train.lr" = 1e-3}]\n', "d.toml"))


def test_a_preset_is_an_axis(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('seeds = [0]\n[sweep]\npreset = ["smoke", "small"]\n[train]\nlr = 1e-3\n', encoding="utf-8")
    smoke, small = sweep_points(path)
    assert (smoke.config.preset, small.config.preset) == ("smoke", "small") and small.label == "preset=small seed=0"
    assert small.config.train.model == "small-llama" and small.config.train.lr == smoke.config.train.lr == 1e-3
    path.write_text('[sweep]\npreset = ["smoke", "huge"]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"point 1 \(preset=huge\): preset must name one of"):
        sweep_points(path)


def test_explicit_points_and_the_bases_axis(tmp_path):
    points = sweep_points(_config(tmp_path, 'bases = ["random", "language"]\nseeds = [1]\n'
                                            'points = [{"train.lr" = 1e-3}, {"train.lr" = 3e-3, "data.people" = 30}]\n'))
    assert [p.settings for p in points] == [
        {"train.lr": 1e-3, "base": "random", "seed": 1}, {"train.lr": 1e-3, "base": "language", "seed": 1},
        {"train.lr": 3e-3, "data.people": 30, "base": "random", "seed": 1},
        {"train.lr": 3e-3, "data.people": 30, "base": "language", "seed": 1}]
    assert [p.config.bases for p in points] == [("random",), ("language",)] * 2


@pytest.mark.parametrize("text, message", [
    ('[sweep]\n"train.nonsense" = [1]\n', "[sweep] 'train.nonsense' is not a setting; known train settings"),
    ('[sweep]\n"model" = ["tiny-llama"]\n', "'model' is not a setting; write <section>.<setting>"),
    ('[sweep]\n"train.lr" = []\n', "[sweep] 'train.lr' must be a non-empty list of values"),
    ('[sweep]\n"train.lr" = 1e-3\n', "[sweep] 'train.lr' must be a non-empty list of values"),
    ('[sweep]\n"train.lr" = [1e-3, 1e-3]\n', "repeats a value"),
    ('[sweep]\n"train.lr" = [1, 1.0]\n', "repeats a value"),  # one learning rate, whatever its TOML type
    ('[sweep]\n"train.lr" = [1e-3]\n[sweep.train]\nlr = [2e-3]\n', "'train.lr' is given twice"),
    ('points = [{"train.lr" = 1e-3, train = {lr = 2e-3}}]\n', "'train.lr' is given twice"),
    ('[sweep]\n"train.lr" = [1e-3, "fast"]\n', "point 1 (lr=fast): train setting 'lr' must be float"),
    ('[sweep]\n"train.strategy" = ["mix"]\n', "cannot sweep train.strategy"),
    ('[sweep]\n"data.people" = [30, -1]\n', "point 1 (people=-1)"),
    ("seeds = []\n", "seeds must be a non-empty list of distinct integers"),
    ("seeds = [1, 1]\n", "seeds must be a non-empty list of distinct integers"),
    ('seeds = ["a"]\n', "seeds must be a non-empty list of distinct integers"),
    ('seeds = [1]\n[sweep]\n"train.seed" = [1, 2]\n', "seeds and the swept 'train.seed' both set the seed"),
    ('seeds = [1]\npoints = [{"train.seed" = 5}]\n', "seeds and the swept 'train.seed' both set the seed"),
    ("seeds = [1]\ntrain = 5\n", "[train] must be a table of settings"),
    ('points = [{"train.lr" = 1e-3}]\n[sweep]\n"train.lr" = [1e-3]\n', "give [sweep] (a grid) or points"),
    ("points = []\n", "points must be a non-empty list of tables"),
    ('seeds = [1]\nbases = ["nowhere"]\n', "point 0 (base=nowhere seed=1): unknown base 'nowhere'"),
])
def test_bad_sweeps_are_one_line_naming_the_axis_or_point(tmp_path, text, message):
    with pytest.raises(UserError) as e:
        sweep_points(_config(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_sweep_too_large_is_refused_before_it_starts(tmp_path):
    n = int(MAX_POINTS ** 0.5) + 1
    with pytest.raises(UserError, match=f"{n * n:,} points, more than {MAX_POINTS}"):
        sweep_points(_config(tmp_path, f"seeds = {list(range(n))}\n[sweep]\n\"train.lr\" = "
                                       f"{[1e-3 * (i + 1) for i in range(n)]}\n"))


# ---- verdicts and numbers over seeds ----------------------------------------------------------------------

@pytest.mark.parametrize("per_seed, verdict, says", [
    ({0: "holds", 1: "holds", 2: "holds"}, "holds", "holds on every seed (0, 1, 2)"),
    ({0: "does not hold", 1: "does not hold"}, "does not hold", "does not hold on every seed"),
    ({0: "holds", 1: "does not hold", 2: "holds"}, "undetermined", "holds on 2 of 3 (seeds 0, 2); does not hold on 1"),
    ({0: "holds", 1: "undetermined"}, "undetermined", "undetermined on 1 of 2 (seed 1)"),
    ({0: "undetermined"}, "undetermined", "undetermined on 1 of 1"),
    ({7: "holds"}, "holds", "holds on every seed (7)"),
    ({}, "undetermined", "no finished seed"),
])
def test_combine_verdicts(per_seed, verdict, says):
    got, evidence = combine_verdicts(per_seed)
    assert got == verdict and says in evidence


def test_mean_sd_matches_statistics_leaf_by_leaf():
    trees = [{"a": 1, "b": {"c": [1.0, 2.0], "s": "x"}, "n": None, "only": 1},
             {"a": 2, "b": {"c": [3.0, 6.0], "s": "x"}, "n": 4},
             {"a": 6, "b": {"c": [5.0, 1.0], "s": "x"}, "n": 5}]
    mean, sd = mean_sd(trees)
    assert mean["a"] == pytest.approx(statistics.mean([1, 2, 6])) and sd["a"] == pytest.approx(statistics.stdev([1, 2, 6]))
    assert mean["b"]["c"] == pytest.approx([3.0, 3.0]) and sd["b"]["c"][1] == pytest.approx(statistics.stdev([2, 6, 1]))
    assert mean["b"]["s"] == "x" and mean["n"] is None and "only" not in mean
    assert mean_sd([{"a": 2.5}]) == ({"a": 2.5}, {"a": 0.0})


def _group(settings: dict, verdicts: dict) -> dict:
    return {"settings": settings, "finished": [0],
            "claims": [{"id": c, "verdict": verdicts.get(c, "holds")} for c in STATEMENTS]}


def test_verdict_changes_names_the_axis_values_holding_the_others_fixed():
    groups = [_group({"train.model": "tiny", "data.people": 250}, {"C3": "does not hold"}),
              _group({"train.model": "small", "data.people": 250}, {"C3": "holds"}),
              _group({"train.model": "tiny", "data.people": 500}, {}),
              _group({"train.model": "small", "data.people": 500}, {})]
    lines = verdict_changes(groups, ["train.model", "data.people"])
    assert "C3 changes with model (with people=250): does not hold at model=tiny, holds at model=small" in lines
    assert "C3 changes with people (with model=tiny): does not hold at people=250, holds at people=500" in lines
    assert "C1 holds at every finished point" in lines
    assert not any(line.startswith("C3 changes with model (with people=500)") for line in lines)
    listed = [_group({"data.people": 30}, {"C2": "holds"}),  # `points` that set different axes
              _group({"data.people": 30, "train.lr": 1e-3}, {"C2": "does not hold"})]
    assert any(line.startswith("C2 changes with people") or line == "C2: see the table"
               for line in verdict_changes(listed, ["data.people", "train.lr"]))


# ---- running the points (the study itself stubbed: what is tested is the sweep around it) ---------------

def _fake_study(fail: set[int] = frozenset()):
    """A stand-in for `run_study` writing a point's study.json and a summary whose C1 verdict is its seed's parity."""
    calls = []

    def run_study(out, point, log, ignore_disk, force):
        calls.append(point.index)
        if point.index in fail:
            raise UserError(f"something about point {point.index} is wrong")
        files = StudyLayout(out)
        out.mkdir(parents=True, exist_ok=True)
        seed = point.settings.get("seed", 0)
        summary = {"preset": "smoke",
                   "accuracy": {s: {"qa_ood": 0.5 + seed / 10, "qa_id": 1.0, "bio": 0.99} for s in ("mix", "stage")},
                   "claims": [{"id": c, "verdict": "holds" if c != "C1" or seed % 2 == 0 else "does not hold"}
                              for c in STATEMENTS]}
        write_json(files.record, {"config": config_record(point.config), "point": {"index": point.index}})
        write_json(files.summary, summary)
        return summary
    return run_study, calls


def test_points_are_cached_a_failure_names_its_point_and_finished_points_stay(tmp_path, monkeypatch):
    study = tmp_path / "study"
    fake, calls = _fake_study(fail={1})
    monkeypatch.setattr(sweep_runner, "run_study", fake)
    config = _config(tmp_path, "seeds = [0, 1, 2]\n")
    with pytest.raises(UserError) as e:
        sweep_runner.run_sweep(study, config, log=lambda line: None, ignore_disk=True)
    assert str(e.value).startswith("point 1 (seed=1) failed: something about point 1 is wrong; 2 of 3 points are "
                                   "finished and kept")
    summary = read_json(StudyLayout(study).summary, "summary")  # written with what finished
    assert summary["sweep"]["missing"] == ["1: seed=1"] and summary["sweep"]["finished"] == 2
    fake, calls = _fake_study()
    monkeypatch.setattr(sweep_runner, "run_study", fake)
    summary = sweep_runner.run_sweep(study, config, log=lambda line: None, ignore_disk=True)
    # `run_study` skips finished steps itself; the sweep hands it every point and aggregates them all
    assert calls == [0, 1, 2] and summary["sweep"]["finished"] == 3
    c1 = next(c for c in summary["groups"][0]["claims"] if c["id"] == "C1")
    assert c1["verdict"] == "undetermined" and c1["per_seed"] == {"0": "holds", "1": "does not hold", "2": "holds"}
    assert summary["groups"][0]["mean"]["accuracy"]["mix"]["qa_ood"] == pytest.approx(0.6)


def test_one_point_runs_alone_and_the_report_names_the_missing(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    fake, calls = _fake_study()
    monkeypatch.setattr(sweep_runner, "run_study", fake)
    config = _config(tmp_path, "seeds = [0, 1, 2]\n")
    assert sweep_runner.run_sweep(study, config, log=lambda line: None, ignore_disk=True, only=2) is None
    assert calls == [2]
    summary = summarize_sweep(study)
    assert summary["sweep"]["missing"] == ["0: seed=0", "1: seed=1"]
    assert summary["groups"][0]["finished"] == [2]
    from factrecall.artifacts import write_json
    from factrecall.report.show import render, show

    write_json(study / "summary.json", summary)  # as `factrecall report` writes it
    shown = show(study)
    assert shown["kind"] == "sweep" and shown["lines"][0] == "1 of 3 points finished; missing: 0: seed=0, 1: seed=1"
    assert shown["tables"][0]["rows"][0][:2] == ["(the config)", 1] and "Claims over seeds" in render(shown)
    assert shown["tables"][1]["rows"] == [["seed=2", 1.0, 0.7, 0.99, "[train]", 1.0, 0.7, 0.99, "yes"]]
    fake, calls = _fake_study(fail={1})
    monkeypatch.setattr(sweep_runner, "run_study", fake)
    with pytest.raises(UserError) as e:  # one point alone: its own reason, once
        sweep_runner.run_sweep(study, config, log=lambda line: None, ignore_disk=True, only=1)
    assert str(e.value) == "point 1 (seed=1) failed: something about point 1 is wrong"
    with pytest.raises(UserError, match=r"--point 3: the sweep has 3 points \(0–2\)"):
        sweep_runner.run_sweep(study, config, log=lambda line: None, only=3)
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study, "--list-points")
    assert code == 0 and "\tfinished\tseed=2" in out and "\tto run\tseed=0" in out


def test_a_sweep_and_a_single_study_never_share_a_directory(tmp_path, monkeypatch, capsys):
    single = tmp_path / "single"
    single.mkdir()
    write_json(StudyLayout(single).record, {"config": {}})
    code, _, err = run_cli(monkeypatch, capsys, "study", "--config", _config(tmp_path, "seeds = [0]\n"), "--out", single)
    assert code == 2 and "holds a single study, not a sweep" in err
    code, _, err = run_cli(monkeypatch, capsys, "study", "--preset", "smoke", "--out", tmp_path / "x", "--point", 0)
    assert code == 2 and "--point, --list-points and --jobs apply to a sweep" in err
    code, _, err = run_cli(monkeypatch, capsys, "study", "--config", _config(tmp_path, "seeds = [0]\n"), "--out",
                           tmp_path / "y", "--jobs", 0)
    assert code == 2 and "--jobs must be an integer ≥ 1" in err


# ---- a real sweep: two smoke points in two processes -------------------------------------------------------

def test_two_seeds_in_two_processes_then_the_report(tmp_path, monkeypatch, capsys):
    study, config = tmp_path / "study", _config(tmp_path, "seeds = [0, 1]\n")
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study, "--jobs", 2)
    assert code == 0, err
    assert "2 points in 2 processes of 1 torch thread each" in out or "torch threads each" in out
    summary = read_json(StudyLayout(study).summary, "summary")
    assert summary["sweep"]["finished"] == 2 and not summary["sweep"]["missing"]
    (group,) = summary["groups"]
    assert group["seeds"] == [0, 1] and len(group["claims"]) == len(STATEMENTS)
    for claim in group["claims"]:
        assert set(claim["per_seed"]) == {"0", "1"}
        assert claim["verdict"] == combine_verdicts(claim["per_seed"])[0]
    for p in summary["points"]:
        point = StudyLayout(study / p["dir"])
        assert read_json(point.record, "point")["point"]["settings"] == p["settings"]
        assert point.report.is_file()  # each point's own report, built by its process
        assert read_json(point.record, "point")["config"]["train"]["seed"] == p["settings"]["seed"]
    page = StudyLayout(study).report.read_text(encoding="utf-8")
    assert 'id="verdict-table"' in page and "ladder-C1-0" in page and "../points/" in page
    mix = [p["summary"]["accuracy"]["mix"]["qa_ood"] for p in summary["points"]]
    assert group["mean"]["accuracy"]["mix"]["qa_ood"] == pytest.approx(statistics.mean(mix))
    # a rerun skips every step of every point
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study)
    assert code == 0, err
    assert "train/mix" in out and all("done" in line for line in out.splitlines() if line.startswith("train/"))
    code, out, err = run_cli(monkeypatch, capsys, "report", "--study", study)
    assert code == 0 and json.loads(StudyLayout(study).summary.read_text())["sweep"]["finished"] == 2


def test_the_slurm_example_runs_one_point_per_array_task(tmp_path):
    """docs/examples/slurm_sweep.sh as one array task runs: one point; `factrecall report` then names the other."""
    script = Path(__file__).resolve().parent.parent / "docs" / "examples" / "slurm_sweep.sh"
    study, config = tmp_path / "study", _config(tmp_path, "seeds = [0, 1]\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "1", "CONFIG": str(config), "STUDY": str(study)}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    points = sweep_points(config)
    assert points[1].layout(study).report.is_file() and not points[0].layout(study).root.exists()
    done = subprocess.run([sys.executable, "-m", "factrecall", "report", "--study", str(study)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not finished: point 0: seed=0" in done.stdout
    assert "seed=0" in StudyLayout(study).report.read_text(encoding="utf-8")


def test_a_changed_common_setting_reruns_only_the_steps_it_changes(tmp_path, monkeypatch, capsys):
    """A point keeps its directory when a setting common to all points changes; its manifest reruns what changed."""
    study = tmp_path / "study"
    config = _config(tmp_path, "seeds = [0]\n[analysis]\nk = 1.0\n")
    code, _, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study)
    assert code == 0, err
    (point,) = sweep_points(config)
    config.write_text(config.read_text().replace("k = 1.0", "k = 2.0"), encoding="utf-8")
    (moved,) = sweep_points(config)
    assert moved.id == point.id
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study)
    assert code == 0, err
    steps = {line.split()[0]: line.split()[1] for line in out.splitlines() if "/" in line.split(" ")[0]}
    assert steps["train/mix"] == steps["train/stage"] == "done"  # training does not depend on k
    assert steps["shared/mix"] != "done"  # the shared sets do
    assert read_json(point.layout(study).record, "point")["config"]["analysis"]["shared"]["k"] == 2.0
    config.write_text(config.read_text().replace("k = 2.0", "k = 3.0"), encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, "study", "--config", config, "--out", study, "--list-points")
    assert "\tto run\tseed=0" in out  # its summary is of k = 2: not this sweep's point until it reruns
