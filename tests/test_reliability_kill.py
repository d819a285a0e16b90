"""Resume is exact for the analyses and the report (issue 18, item 5): `shared`, `graft` and `report`, each
SIGKILLed at seeded random moments of its measured duration and then run to completion, leave every file of
their run (or study) directory byte for byte as an uninterrupted run does, and no leftovers.

Every command runs at the same path (`subject`), so the report's page, which names its study's path, can be
compared byte for byte; SOURCE_DATE_EPOCH pins the CreationDate matplotlib writes into the PDFs (the only
bytes of two uninterrupted reports that differ otherwise). Training's own kill tests are in
test_interruption.py and the whole study's in test_study.py.
"""

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

from factrecall import cli
from factrecall.layout import LOCK
from factrecall.report.build import build_reports
from factrecall.study.runner import run_study

# one thread, as in this test process (conftest); PDFs dated by SOURCE_DATE_EPOCH instead of the clock
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SOURCE_DATE_EPOCH": "0"}
SEEDS = (0, 1)  # per command; each seed draws the moments of two kills in a row
COMMANDS = {  # name: (argv with SUBJECT for the directory, the folder it runs on)
    "shared": (["shared", "--run", "SUBJECT"], "run-without-shared"),
    "graft": (["graft", "--run", "SUBJECT", "--steps", "2", "--eval-people", "4"], "run-with-shared"),
    "report": (["report", "--study", "SUBJECT"], "study-without-report"),
}


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, the lock file aside (removed on exit, left by a killed process)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK}


@pytest.fixture(scope="module")
def sources(smoke_run, tmp_path_factory) -> dict[str, Path]:
    """What each command starts from: the smoke run without shared/ (for `shared`), with shared/ and without
    analysis/ (for `graft`, which reads the shared mask), and a smoke study without summary.json and report/."""
    root = tmp_path_factory.mktemp("kill-sources")
    study = root / "study-without-report"
    run_study(study, "smoke", log=lambda _: None)
    build_reports(study)  # the report of test_study.py's fixture: it must build here too
    (study / "summary.json").unlink()
    shutil.rmtree(study / "report")
    shutil.copytree(smoke_run, root / "run-without-shared", ignore=shutil.ignore_patterns("shared", "analysis"))
    shutil.copytree(smoke_run, root / "run-with-shared", ignore=shutil.ignore_patterns("analysis"))
    assert (root / "run-with-shared" / "shared" / "mask.safetensors").is_file()
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    """The one path every command of this module runs at (the report's page names it)."""
    return tmp_path_factory.mktemp("kill") / "subject"


def _reset(subject: Path, source: Path) -> None:
    if subject.exists():
        shutil.rmtree(subject)
    shutil.copytree(source, subject)


def _argv(name: str, subject: Path) -> list[str]:
    return [sys.executable, "-m", "factrecall", *(str(subject) if a == "SUBJECT" else a for a in COMMANDS[name][0])]


def _complete(name: str, subject: Path) -> float:
    """Run the command to completion; its seconds."""
    start = time.monotonic()
    done = subprocess.run(_argv(name, subject), env=ENV, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - start


@pytest.fixture(scope="module")
def uninterrupted(sources, subject) -> dict[str, tuple[float, dict[str, str]]]:
    """{command: (seconds, the files of its directory)} of uninterrupted runs, filled as tests ask for them.
    Each command runs twice: both must write the same bytes (else no kill test could compare), and the faster
    run's seconds are the duration the kill moments are drawn over (so that they land before the end)."""
    cache: dict[str, tuple[float, dict[str, str]]] = {}

    def get(name: str) -> tuple[float, dict[str, str]]:
        if name not in cache:
            runs = []
            for _ in range(2):
                _reset(subject, sources[COMMANDS[name][1]])
                runs.append((_complete(name, subject), _files(subject)))
            assert runs[0][1] == runs[1][1], f"two uninterrupted '{name}' runs differ: " + str(
                sorted(f for f in runs[0][1].keys() | runs[1][1].keys() if runs[0][1].get(f) != runs[1][1].get(f)))
            cache[name] = (min(runs[0][0], runs[1][0]), runs[0][1])
        return cache[name]
    return get


def _kill_after(name: str, subject: Path, seconds: float) -> bool:
    """Start the command and SIGKILL its process group `seconds` later; whether it was still running."""
    process = subprocess.Popen(_argv(name, subject), env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
        return False  # it finished first
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(COMMANDS))
def test_killed_twice_then_completed_equals_uninterrupted(name, seed, uninterrupted, sources, subject):
    seconds, expected = uninterrupted(name)
    _reset(subject, sources[COMMANDS[name][1]])
    rng = random.Random(seed)
    moments = [rng.uniform(0, seconds) for _ in range(2)]  # over the whole measured run, start-up included
    landed = [_kill_after(name, subject, moment) for moment in moments]
    while not any(landed) and moments[0] > 0.05:  # it ran faster than measured (the other worker went quiet)
        _reset(subject, sources[COMMANDS[name][1]])
        moments = [m / 2 for m in moments]
        landed = [_kill_after(name, subject, moment) for moment in moments]
    when = f"kills at {[round(m, 2) for m in moments]} s of {seconds:.1f} s (landed while running: {landed})"
    print(name, when)  # pytest -rP shows where the kills landed
    assert any(landed), f"no kill landed while '{name}' ran: {when}"
    old = _files(sources[COMMANDS[name][1]])
    torn = {f: d for f, d in _files(subject).items() if f in expected and d not in (expected[f], old.get(f))}
    assert not torn, f"a killed attempt left a file that is neither the old nor the final one: {when}: {sorted(torn)}"
    _complete(name, subject)
    got = _files(subject)
    assert sorted(got) == sorted(expected), when  # no leftover of a killed attempt, nothing missing
    changed = [f for f in expected if got[f] != expected[f]]
    assert not changed, f"{when}: {changed}"


# the report reads every run's eval.json and metrics.jsonl: damaged, they are refused in one line
DAMAGE = [
    ("runs/mix/metrics.jsonl", lambda text: text + "{not json\n", r"metrics\.jsonl"),
    ("runs/stage/eval.json", lambda text: text[: len(text) // 2], r"eval\.json"),
    ("runs/stage/eval.json", lambda text: "[]", r"eval\.json"),
    ("runs/mix/eval.json", lambda text: "{}", r"eval\.json"),
]


@pytest.mark.parametrize("path, damage, message", DAMAGE, ids=["metrics-bad-line", "eval-truncated",
                                                               "eval-a-list", "eval-empty-object"])
def test_report_refuses_a_damaged_run_file_in_one_line(path, damage, message, sources, tmp_path, monkeypatch,
                                                       capsys):
    import re

    study = tmp_path / "study"
    shutil.copytree(sources["study-without-report"], study)
    (study / path).write_text(damage((study / path).read_text()))
    before = _files(study)
    monkeypatch.setattr(sys, "argv", ["factrecall", "report", "--study", str(study)])
    cli._DEBUG["on"] = False
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("factrecall: error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), errors[0]
    assert _files(study) == before  # nothing written: no summary.json, no report/


def test_sources_hold_what_the_commands_read(sources):
    assert json.loads((sources["study-without-report"] / "study.json").read_text())["config"]["preset"] == "smoke"
    assert not (sources["study-without-report"] / "report").exists()
    assert not (sources["run-without-shared"] / "shared").exists()
