"""How an analysis declares itself (lm-evaluation-harness's registry pattern): one `Analysis` at the end of
its own module, gathered by `registry.py`.

Its settings are `AnalysisConfig.<name>` (`config.py`); the declaration says what it reads (earlier
analyses whose files it uses; every analysis reads the trained run), how it runs, the files it writes,
how its result is read back, its one-line headline and its entry in `summary.json`. The study's steps,
the CLI's headlines, the summary and the report iterate the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

from factrecall.analysis.config import AnalysisConfig
from factrecall.artifacts import read_json
from factrecall.layout import RunLayout


@dataclass(frozen=True)
class Analysis:
    """One analysis of a run directory. `name` is its step (`<name>/<strategy>`), summary key and settings field."""

    name: str
    reads: tuple[str, ...]  # analyses whose files it reads (the study runs them first)
    run: Callable[[Path, AnalysisConfig], dict]  # runs it on a run directory; returns its result
    writes: Callable[[RunLayout, AnalysisConfig], list[Path]]  # the files it writes, its result's JSON first
    headline: Callable[[dict], str]  # its result in one line
    summary: Callable[[dict], object] | None = None  # its entry in summary.json (None: not summarised)
    applies: Callable[[RunLayout], bool] = lambda run: True  # whether the study runs it on this run
    version: int = 1  # of its result's format: raised when a key is renamed, so a study reruns it

    def settings(self, config: AnalysisConfig) -> list:
        """Its cache key's settings: its own (the settings of what it reads enter through their files), and the
        format version from 2 on."""
        return list(astuple(getattr(config, self.name))) + ([f"format {self.version}"] if self.version > 1 else [])

    def path(self, run: RunLayout, config: AnalysisConfig) -> Path:
        """The JSON file holding its result (the first file it writes)."""
        return self.writes(run, config)[0]

    def load(self, run: RunLayout, config: AnalysisConfig) -> dict:
        """Its result, read back from the run directory."""
        return read_json(self.path(run, config), self.name)
