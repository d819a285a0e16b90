"""The smoke study end to end: artifacts, summary, claims, resume (also after SIGKILL), locks, report."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factrecall.errors import UserError
from factrecall.locks import directory_lock
from factrecall.report.build import build_reports
from factrecall.study.runner import run_study

CLAIMS = ["C1", "C2", "C3", "C4a", "C4b", "C5", "C6", "C7"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "smoke"
    lines = []
    run_study(out, "smoke", log=lines.append)
    build_reports(out)
    return out, lines


def test_smoke_study_writes_every_artifact_and_a_valid_summary(study):
    out, lines = study
    summary = json.loads((out / "summary.json").read_text())
    for strategy in ("stage", "mix"):
        assert set(summary["accuracy"][strategy]) == {"qa_id", "qa_ood", "bio", "bio_after_bio_training", "n"}
        for section in ("shared", "ablation", "graft", "heads", "neurons", "attention", "consistency"):
            assert summary[section][strategy], section
    assert [c["id"] for c in summary["claims"]] == CLAIMS
    for claim in summary["claims"]:
        assert claim["verdict"] in ("holds", "does not hold", "undetermined") and claim["statement"]
        assert claim["holds"] is {"holds": True, "does not hold": False}.get(claim["verdict"]) and len(claim["evidence"]) > 40
    manifest = json.loads((out / "manifest.json").read_text())
    steps = {"data"} | {f"{s}/{r}" for s in ("train", "shared", "ablation", "graft", "heads", "neurons", "inspect",
                                               "attention", "consistency") for r in ("stage", "mix")}
    assert set(manifest) == steps
    for entry in manifest.values():
        assert entry["files"] and all((out / f).is_file() for f in entry["files"])
    record = json.loads((out / "study.json").read_text())
    assert record["config"]["preset"] == "smoke" and record["provenance"]["torch"].startswith("2.")
    figures = {p.name for p in (out / "report" / "figures").iterdir()}
    assert {"accuracy.png", "accuracy.pdf", "heads.png", "ablation.pdf", "consistency.png"} <= figures
    page = out / "report" / "index.html"
    assert page.stat().st_size < 10 * 2**20
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # nothing fetched
    assert len(lines) == len(steps)  # one line per step


def test_show_prints_a_study_and_its_runs_as_tables(study, monkeypatch, capsys):
    """`factrecall show`: the claims with their reasons, the accuracies, each analysis's headline (text and JSON)."""
    from factrecall import cli

    out, _ = study
    summary = json.loads((out / "summary.json").read_text())

    def show(*args):
        monkeypatch.setattr(sys, "argv", ["factrecall", "show", *map(str, args)])
        with pytest.raises(SystemExit) as done:
            cli.main()
        captured = capsys.readouterr()
        assert done.value.code in (0, None), captured.err
        return captured.out

    text = show(out)
    assert "plumbing check" in text
    for claim in summary["claims"]:
        assert f"{claim['id']} " in text and claim["why"][:60] in text
    shown = json.loads(show(out, "--json"))
    assert shown["kind"] == "study" and [r[0] for r in shown["tables"][-1]["rows"]] == CLAIMS
    assert shown["tables"][0]["rows"][0][1:] == [summary["accuracy"]["mix"][k] for k in
                                                 ("qa_id", "qa_ood", "bio_after_bio_training", "bio")]
    run = json.loads(show(out / "runs" / "mix", "--json"))
    assert run["kind"] == "run" and any(line.startswith("graft: ") for line in run["lines"])
    assert run["tables"][1]["title"].startswith("Heads holding most of Shared")
    cells = run["tables"][2]  # where the shared mask's entries sit, largest cells first
    assert cells["title"].startswith("Where Shared sits") and 0 < sum(r[3] for r in cells["rows"]) <= 1 + 1e-9
    assert [r[3] for r in cells["rows"]] == sorted((r[3] for r in cells["rows"]), reverse=True)
    monkeypatch.setattr(sys, "argv", ["factrecall", "show", str(out / "runs")])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2 and "neither a run directory" in capsys.readouterr().err


def test_rerun_skips_every_step_and_redoes_a_damaged_one(study, tmp_path):
    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    model = copy / "runs" / "mix" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    summary = json.loads((copy / "summary.json").read_text())
    lines = []
    assert run_study(copy, "smoke", log=lines.append) == summary
    assert all(" done " in line for line in lines) and model.stat().st_mtime_ns == before
    (copy / "runs" / "mix" / "analysis" / "ablation.json").write_text("{}")  # damaged: hash differs
    lines.clear()
    assert run_study(copy, "smoke", log=lines.append) == summary
    redone = [line.split()[0] for line in lines if " done " not in line]
    assert redone == ["ablation/mix"]


def _study_process(out: Path) -> subprocess.Popen:
    # one thread, as in this test process (conftest), so both compute in the same order
    return subprocess.Popen([sys.executable, "-m", "factrecall", "study", "--preset", "smoke", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("kill_when", ["runs/mix/checkpoint/state.json", "runs/stage/analysis/ablation.json"],
                         ids=["mid-training", "mid-analysis"])
def test_sigkill_then_rerun_gives_the_same_summary(study, tmp_path, kill_when):
    out = tmp_path / "killed"
    process = _study_process(out)
    deadline = time.monotonic() + 300
    while not (out / kill_when).exists():
        assert process.poll() is None, "the study ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists()
    run_study(out, "smoke", log=lambda _: None)
    assert json.loads((out / "summary.json").read_text()) == json.loads((study[0] / "summary.json").read_text())


def test_a_second_study_in_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "s"
    with directory_lock(out, "study"):
        with pytest.raises(UserError, match=f"another study is writing {out} \\(pid {os.getpid()}\\)"):
            run_study(out, "smoke")
    out.mkdir(exist_ok=True)
    (out / ".lock").write_text("999999")  # a stale lock of a killed process: no OS lock is held on it
    with directory_lock(out, "study"):
        pass


def test_study_refuses_other_config_and_unknown_preset(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"config": {"preset": "default"}}))
    with pytest.raises(UserError, match="different config"):
        run_study(out, "smoke")
    with pytest.raises(UserError, match="unknown preset"):
        run_study(tmp_path / "other", "paper")


CHROMIUM = Path("/usr/bin/chromium")
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def _browser(tmp_path):
    """A headless Chromium context with a fresh profile, or a skip (a failure where CI requires it)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None and not CHROMIUM.is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    if reason:
        if os.environ.get("FACTRECALL_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    manager = sync_playwright()
    playwright = manager.__enter__()
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=BROWSER_FLAGS)
    return manager, context


def _open(context, page_path: Path):
    """(page, console errors, dialogs, requests that left the disk) for a page opened from disk."""
    page = context.new_page()
    errors, dialogs, remote = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, dialogs, remote


def test_report_in_a_real_browser(study, tmp_path):
    out, _ = study
    manager, context = _browser(tmp_path)
    try:
        page, errors, dialogs, remote = _open(context, out / "report" / "index.html")
        sizes = page.eval_on_selector_all(
            "figure img", "els => els.map(e => [e.naturalWidth, e.getBoundingClientRect().width, "
                          "e.getBoundingClientRect().height])")
        claims = page.locator("#claims-table > tbody > tr").count()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        shutil.copy(tmp_path / "report.png", out / "report" / "screenshot.png")  # beside the test output
    finally:
        context.close()
        manager.__exit__(None, None, None)
    assert errors == [] and dialogs == [] and remote == []
    assert len(sizes) >= 11 and all(w > 0 and rw > 0 and rh > 0 for w, rw, rh in sizes), sizes
    assert claims == len(json.loads((out / "summary.json").read_text())["claims"]) == len(CLAIMS)


def test_report_escapes_strings_from_data_and_configs(study, tmp_path):
    from factrecall.report.build import build_report

    out = tmp_path / "copy"
    shutil.copytree(study[0], out)
    attack = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    summary = json.loads((out / "summary.json").read_text())
    summary["claims"][0]["evidence"] = summary["claims"][0]["why"] = attack
    summary["preset"] = attack
    (out / "summary.json").write_text(json.dumps(summary))
    record = json.loads((out / "study.json").read_text())
    record["config"]["train"]["model"] = attack
    (out / "study.json").write_text(json.dumps(record))
    page_path = build_report(out)
    assert attack not in page_path.read_text() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page_path.read_text()
    manager, context = _browser(tmp_path)
    try:
        page, errors, dialogs, _ = _open(context, page_path)
        shown = page.locator("#claims-table > tbody > tr").first.inner_text()
    finally:
        context.close()
        manager.__exit__(None, None, None)
    assert dialogs == [] and "<script>alert(1)</script>" in shown  # shown as text, never run


def test_report_on_a_study_of_an_earlier_version_is_one_line(study, tmp_path):
    """An analysis file without a key the current summary reads (graft.json before `traced`) stops `report` with one
    line naming the file's analysis and the rerun, never a traceback."""
    from factrecall.study.summary import summarize_study

    out = tmp_path / "copy"
    shutil.copytree(study[0], out)
    graft = out / "runs" / "mix" / "analysis" / "graft.json"
    old = json.loads(graft.read_text())
    del old["traced"]
    graft.write_text(json.dumps(old))
    with pytest.raises(UserError, match="graft was written by an earlier factrecall .*rerun 'factrecall study") as e:
        summarize_study(out)
    assert "\n" not in str(e.value)


def test_force_never_deletes_an_input_of_the_study(tmp_path):
    """A study whose --out holds its config file (or pools, or a base) is refused before anything is deleted."""
    out = tmp_path / "s"
    out.mkdir()
    config = out / "mine.toml"
    config.write_text("preset = 'smoke'\n")
    with pytest.raises(UserError, match=f"--out {out} contains the config file {config} that study reads"):
        run_study(out, config_file=config, force=True)
    assert config.read_text() == "preset = 'smoke'\n"


def test_a_study_on_your_own_facts(tmp_path):
    """`[data] path` replaces the generator: the dataset is copied into the study (same content hash) and every
    step runs on its attributes (tests/data/capitals: countries' capital and language)."""
    from factrecall.data.dataset import load_dataset

    own = Path(__file__).parent / "data" / "capitals"
    config = tmp_path / "own.toml"
    config.write_text(f"preset = 'smoke'\n[data]\npath = '{own}'\n[analysis]\nheads_eval_people = 4\n")
    out = tmp_path / "s"
    summary = run_study(out, config_file=config, log=lambda line: None)
    assert load_dataset(out / "data").content_hash == load_dataset(own).content_hash
    assert [c["id"] for c in summary["claims"]] == CLAIMS
    assert summary["accuracy"]["mix"]["qa_id"] >= 0 and (out / "runs" / "mix" / "analysis" / "inspect").is_dir()
    assert build_reports(out).is_file()
    (tmp_path / "mixed.toml").write_text(f"[data]\npath = '{own}'\npeople = 10\n")
    with pytest.raises(UserError, match=r"\[data\] path replaces generating the people, so \[data\] people"):
        run_study(tmp_path / "t", config_file=tmp_path / "mixed.toml")


def _artifacts(root: Path) -> dict[str, object]:
    """Every file of a study as what must not change: its sha256, or for the two files that log wall-clock
    and CPU seconds (manifest.json, metrics.jsonl) their content without them."""
    def without_seconds(value):
        if isinstance(value, dict):
            return {k: without_seconds(v) for k, v in value.items() if k not in ("seconds", "cpu_seconds")}
        return value

    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock"):
        name = str(path.relative_to(root))
        if path.name == "manifest.json":
            found[name] = without_seconds(json.loads(path.read_text()))
        elif path.name == "metrics.jsonl":
            found[name] = [without_seconds(json.loads(line)) for line in path.read_text().splitlines()]
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_a_killed_study_rerun_writes_every_artifact_an_uninterrupted_one_writes(tmp_path):
    """Killed at a seeded moment of its analyses and rerun, a smoke study writes the same files, byte for byte
    (seconds aside), as one that was never interrupted, at the same path."""
    out = tmp_path / "s"
    run_study(out, "smoke", log=lambda _: None)
    reference = _artifacts(out)
    shutil.rmtree(out)
    process = _study_process(out)
    deadline = time.monotonic() + 300
    while not (out / "runs" / "stage" / "analysis" / "graft.json").exists():  # mid-analysis
        assert process.poll() is None, "the study ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(random.Random(0).uniform(0, 1.0))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    run_study(out, "smoke", log=lambda _: None)
    assert _artifacts(out) == reference
