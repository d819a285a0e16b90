"""factrecall: why two-stage training memorises and mixed training teaches fact recall (arXiv 2505.16178).

The public API: the names below, imported from `factrecall` (the CLI uses the same ones). Anything else
is private and may change. Importing `factrecall` loads nothing heavy; each name loads its module (and
torch) on first use. `RUN` is a run directory: `model/` (θ_ft, an HF model directory), `base/` (θ_pre),
`trace.safetensors`, `config.json` (what `train` writes; the trace and shared parameters need only
`model/` and `trace.safetensors`). k is a percentage of the traced entries; lr a learning rate.

Data (docs/method.md §1)
    DataConfig                        settings of a synthetic population (people, seed, bios, templates, …)
    generate_dataset(config, out)     write a dataset directory; returns its meta (counts, content hash)
    load_dataset(path) -> Dataset     people, bios (texts + character spans of values), QA by split
Training (§3)
    TrainConfig                       every knob of a run (strategy "stage" | "mix", model, epochs, lr, …)
    train(config, data, out)          train one strategy into RUN, trace on; returns the final evaluation
The trace (§4)
    TraceRecorder(model)              for any PyTorch loop: `with trace.task("bio", lr): loss.backward()`;
                                      accumulators float32, each parameter's shape, units lr × gradient
    TraceCallback(out)                the same inside `transformers.Trainer.train()` (batches carry "task")
    save_trace(path, tensors, meta)   write {"bio/<name>": Δ, "qa/<name>": Δ} as `train` does
    load_trace(RUN) -> Trace          a run's trace, read a tensor at a time, checked against RUN/model
Analyses (§5–§9), on run directories; each writes its JSON into RUN and returns it
    AnalysisConfig                    the analyses' settings in a study
    analyze_run(RUN, k=1.0)           shared parameters: sizes, enrichment, Jaccard, by layer/module/unit
    select(trace, k, mode) -> Selection   Top_BIO(k), Top_QA(k), Shared(k) as index masks
    ablate_run(RUN, k, …)             accuracy after resetting Shared(k) (and matched sets) to θ_pre
    graft_run(RUN, sparsity, …)       the graft mask that recovers θ_ft's accuracy from θ_pre
    circuit_curves(RUN, kind, …)      sufficiency and criticality curves over heads ("head") or neurons
    inspect_run(RUN, person, …)       one person's BIO and QA views through one head
Study (§0, §11)
    run_study(out, preset, …)         every step of a study (data, bases, runs, analyses); the summary
    run_sweep(out, config_file, …)    a sweep's points (seeds, [sweep] axes), each a full study (§12)
    build_reports(out) -> Path        the study's (or sweep's) HTML report
Errors
    UserError                         bad input, one line saying what to do
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it
    "DataConfig": "factrecall.data.generate",
    "generate_dataset": "factrecall.data.generate",
    "Dataset": "factrecall.data.dataset",
    "load_dataset": "factrecall.data.dataset",
    "TrainConfig": "factrecall.training.config",
    "train": "factrecall.training.loop",
    "TraceRecorder": "factrecall.api",
    "TraceCallback": "factrecall.training.hf_callback",
    "save_trace": "factrecall.training.trace",
    "Trace": "factrecall.analysis.run",
    "load_trace": "factrecall.analysis.run",
    "AnalysisConfig": "factrecall.analysis.config",
    "analyze_run": "factrecall.analysis.shared",
    "select": "factrecall.analysis.selection",
    "Selection": "factrecall.analysis.selection",
    "ablate_run": "factrecall.analysis.ablation",
    "graft_run": "factrecall.analysis.graft",
    "circuit_curves": "factrecall.analysis.circuit",
    "inspect_run": "factrecall.analysis.inspect",
    "run_study": "factrecall.study.runner",
    "run_sweep": "factrecall.study.sweep_runner",
    "build_reports": "factrecall.report.build",
    "UserError": "factrecall.errors",
}

__all__ = [  # exactly the keys of _EXPORTS (tests/test_public_api.py), spelled out for linters and readers
    "DataConfig", "generate_dataset", "Dataset", "load_dataset",
    "TrainConfig", "train",
    "TraceRecorder", "TraceCallback", "save_trace", "Trace", "load_trace",
    "AnalysisConfig", "analyze_run", "select", "Selection", "ablate_run", "graft_run", "circuit_curves", "inspect_run",
    "run_study", "run_sweep", "build_reports",
    "UserError",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name loads on first use
    from factrecall.analysis.ablation import ablate_run
    from factrecall.analysis.circuit import circuit_curves
    from factrecall.analysis.config import AnalysisConfig
    from factrecall.analysis.graft import graft_run
    from factrecall.analysis.inspect import inspect_run
    from factrecall.analysis.run import Trace, load_trace
    from factrecall.analysis.selection import Selection, select
    from factrecall.analysis.shared import analyze_run
    from factrecall.api import TraceRecorder
    from factrecall.data.dataset import Dataset, load_dataset
    from factrecall.data.generate import DataConfig, generate_dataset
    from factrecall.errors import UserError
    from factrecall.report.build import build_reports
    from factrecall.study.runner import run_study
    from factrecall.study.sweep_runner import run_sweep
    from factrecall.training.config import TrainConfig
    from factrecall.training.hf_callback import TraceCallback
    from factrecall.training.loop import train
    from factrecall.training.trace import save_trace


def __getattr__(name: str):
    """A public name, from its module (imported on first use; not cached, so it is always the module's)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'factrecall' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
