"""Where every artifact lives: each file of a dataset, run, checkpoint, base and study named once.

After kronfluence's `*_save_path` functions: a module that writes or reads an artifact asks its
layout for the path and never spells one; README.md's "Layouts" section describes the same tree.

    dataset/   people.jsonl bio.jsonl qa.jsonl vocabulary.txt meta.json (your own: the three tables, meta.json optional)
    run/       config.json metrics.jsonl eval.json trace.safetensors base/ (θ_pre) model/ (θ_ft) checkpoint/
               bio_phase/{checkpoint/, metrics.jsonl} (Stage)
               shared/{shared.json, mask.safetensors}
               analysis/{ablation.json, graft.json, graft_mask.safetensors, heads[-grafted].json,
                         neurons[-grafted].json, attention.json, consistency.json, forgetting.json, inspect/}
    base/      base.json (written last: a finished base) data/ run/ and θ_ft's HF files (`factrecall base build`)
    study/     study.json manifest.json .lock data/ runs/{stage,mix}/ summary.json report/{index.html, figures/}
               runs/stage-arms/<arm>/ stage_arms.json ([stage_arms]: Stage's QA-phase grid and the arm analysed)
               bases/<name>/ (a sub-study per further base; built bases in bases/<kind>/model)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from factrecall.errors import UserError

DATA_FILES = ("people.jsonl", "bio.jsonl", "qa.jsonl", "vocabulary.txt")  # with meta.json, a dataset
TABLES = ("people", "bio", "qa")  # the JSONL tables: all a dataset of your own needs (docs/data-format.md)
BASE_RECORD = "base.json"  # provenance of a built base, in its directory and in a run's base/
LOCK = ".lock"  # the one-writer lock of a dataset, run, base or study directory (`factrecall.locks`); no artifact


@dataclass(frozen=True)
class DatasetLayout:
    root: Path

    def table(self, name: str) -> Path:
        """One of the JSONL tables: people, bio, qa."""
        return self.root / f"{name}.jsonl"

    @property
    def tables(self) -> list[Path]:
        """people.jsonl, bio.jsonl, qa.jsonl: the files of a dataset of your own (meta.json optional), and what
        its derived content hash covers, in this order."""
        return [self.table(name) for name in TABLES]

    @property
    def vocabulary(self) -> Path:
        return self.root / "vocabulary.txt"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def data_files(self) -> list[Path]:
        """The files the content hash covers, in its order."""
        return [self.root / f for f in DATA_FILES]

    @property
    def files(self) -> list[Path]:
        """Every file of a dataset."""
        return [self.meta, *self.data_files]

    @property
    def lock(self) -> Path:
        """Held while the dataset is written (removed after); never one of its files."""
        return self.root / LOCK


@dataclass(frozen=True)
class CheckpointLayout:
    root: Path
    TENSOR_FILES = ("model", "optimizer", "trace", "rng")

    def tensors(self, name: str) -> Path:
        """model, optimizer, trace or rng: a safetensors file."""
        return self.root / f"{name}.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "state.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def base(self) -> Path:
        """θ_pre, an HF model directory (with `base.json` when it came from a built base)."""
        return self.root / "base"

    @property
    def base_record(self) -> Path:
        return self.base / BASE_RECORD

    @property
    def model(self) -> Path:
        """θ_ft, an HF model directory."""
        return self.root / "model"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def live(self) -> Path:
        """TensorBoard's event files of `train --report-to tensorboard`."""
        return self.root / "live"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def trace(self) -> Path:
        return self.root / "trace.safetensors"

    @property
    def checkpoint(self) -> CheckpointLayout:
        return CheckpointLayout(self.root / "checkpoint")

    @property
    def bio_phase(self) -> RunLayout:
        """A Stage run as it stood when its BIO phase ended, kept after the run: `checkpoint/` at phase 1, step 0
        (no optimizer state: each phase starts a fresh AdamW) and `metrics.jsonl` up to there (without the rows'
        wall-clock `seconds`: the same bytes in every run with the same BIO phase); what `train --start-from`
        starts another QA phase from."""
        return RunLayout(self.root / "bio_phase")

    @property
    def lock(self) -> Path:
        """Held while `train` writes the run (removed after); never an artifact."""
        return self.root / LOCK

    @property
    def finished(self) -> bool:
        """Training wrote its final evaluation and θ_ft."""
        return self.eval.is_file() and self.model.is_dir()

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def shared(self) -> Path:
        return self.shared_dir / "shared.json"

    @property
    def shared_mask(self) -> Path:
        """Index masks of Shared, Top_BIO and Top_QA at the run's k."""
        return self.shared_dir / "mask.safetensors"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    def result(self, name: str) -> Path:
        """analysis/<name>.json: ablation, graft, attention, consistency, forgetting."""
        return self.analysis / f"{name}.json"

    @property
    def graft_mask(self) -> Path:
        return self.analysis / "graft_mask.safetensors"

    def curves(self, kind: str, on: str = "finetuned") -> Path:
        """The head or neuron curves (`kind` head|neuron) of θ_ft, or of the grafted model."""
        return self.analysis / f"{kind}s{'-grafted' if on == 'grafted' else ''}.json"

    @property
    def inspect(self) -> InspectLayout:
        """Where `factrecall inspect` writes by default."""
        return InspectLayout(self.analysis / "inspect")


@dataclass(frozen=True)
class InspectLayout:
    """One inspection: inspect.json, a PNG per figure and a self-contained HTML fragment."""
    root: Path

    @property
    def json(self) -> Path:
        return self.root / "inspect.json"

    @property
    def html(self) -> Path:
        return self.root / "inspect.html"

    def figure(self, name: str) -> Path:
        """attention, logit_lens or direct."""
        return self.root / f"{name}.png"


@dataclass(frozen=True)
class BaseLayout:
    """A base built by `factrecall base build`: an HF model directory that also holds its population."""
    root: Path

    @property
    def record(self) -> Path:
        return self.root / BASE_RECORD

    @property
    def data(self) -> DatasetLayout:
        return DatasetLayout(self.root / "data")

    @property
    def run(self) -> RunLayout:
        return RunLayout(self.root / "run")

    @property
    def lock(self) -> Path:
        """Held while the base is built; never an artifact."""
        return self.root / LOCK


@dataclass(frozen=True)
class StudyLayout:
    root: Path

    @property
    def record(self) -> Path:
        """study.json: the resolved config and package versions."""
        return self.root / "study.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def data(self) -> DatasetLayout:
        return DatasetLayout(self.root / "data")

    def run(self, strategy: str) -> RunLayout:
        """The run trained with [train]'s recipe (Stage's is also the donor of the Stage arms)."""
        return RunLayout(self.root / "runs" / strategy)

    def stage_arm(self, label: str) -> RunLayout:
        """A Stage arm, forked from `run("stage")`'s BIO phase with other QA-phase settings."""
        return RunLayout(self.root / "runs" / "stage-arms" / label)

    @property
    def stage_choice(self) -> Path:
        """stage_arms.json: every Stage run's accuracies and the one the analyses take (`study.stage_arms`)."""
        return self.root / "stage_arms.json"

    def analysed(self, strategy: str) -> RunLayout:
        """The run the analyses take: [train]'s, or for Stage the arm `stage_arms.json` chose."""
        if strategy != "stage" or not self.stage_choice.is_file():
            return self.run(strategy)
        try:
            chosen = json.loads(self.stage_choice.read_text(encoding="utf-8"))["chosen"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            chosen = None
        parts = Path(chosen).parts if isinstance(chosen, str) else ()
        arm = len(parts) == 3 and parts[:2] == ("runs", "stage-arms") and parts[2] not in (".", "..")
        if not (chosen == "runs/stage" or arm):  # never a path out of the study
            raise UserError(f"{self.stage_choice} is damaged (no chosen Stage run); delete it and rerun "
                            f"'factrecall study'")
        return RunLayout(self.root / chosen)

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report" / "index.html"

    @property
    def figures(self) -> Path:
        return self.root / "report" / "figures"

    def point(self, point_id: str) -> StudyLayout:
        """A sweep point's study, `points/<id>/` (`study.sweep`)."""
        return StudyLayout(self.root / "points" / point_id)

    def point_log(self, point_id: str) -> Path:
        """The output of a point run in a child process (`factrecall study --jobs N`)."""
        return self.root / "logs" / f"point-{point_id}.log"

    def sub_study(self, name: str) -> StudyLayout:
        """The study of a further base, `bases/<name>/`."""
        return StudyLayout(self.root / "bases" / name)

    def built_base(self, kind: str) -> BaseLayout:
        """A `language` or `skill` base the study builds, `bases/<kind>/model`."""
        return BaseLayout(self.root / "bases" / kind / "model")
