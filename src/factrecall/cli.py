"""The `factrecall` command line: a thin layer over the package's functions."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from factrecall import AnalysisConfig, UserError
from factrecall.analysis.config import DEFAULT
from factrecall.layout import BaseLayout, InspectLayout, RunLayout, StudyLayout

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Study how language models learn to recall facts (arXiv 2505.16178).")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Synthetic people: BIO and QA data.")
app.add_typer(data_app, name="data")
base_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Base models (θ_pre) that already know another population.")
app.add_typer(base_app, name="base")

_DEBUG = {"on": bool(os.environ.get("FACTRECALL_DEBUG"))}

# options shared by the analysis commands; their defaults are the study's (`AnalysisConfig`)
RunDir = Annotated[Path, typer.Option(help="Run directory (from 'factrecall train').")]
MovedData = Annotated[Optional[Path], typer.Option(help="The run's dataset, if it moved.")]


def _checked_device(name: str | None) -> str | None:
    """An option's device, refused before any work when unknown or absent from this machine."""
    if name is not None:
        from factrecall.devices import resolve_device

        resolve_device(name)
    return name


Device = Annotated[str, typer.Option(callback=_checked_device,
                                     help="Where forwards and backwards run: auto (the GPU if there is one), cpu or cuda.")]


def _option_text(value) -> str:
    return ",".join(f"{x:g}" for x in value) if isinstance(value, tuple) else value


def settings_options(name: str):
    """The command takes the fields of `AnalysisConfig.<name>` as options (help and defaults from their declaration
    in `analysis/config.py`, lists comma-separated) and receives them, checked, as `settings`."""
    import dataclasses
    import inspect
    import typing

    defaults = getattr(DEFAULT, name)
    hints = typing.get_type_hints(type(defaults))

    def flag(field) -> str:
        return f"--{field.metadata.get('option', field.name).replace('_', '-')}"

    def option(field) -> inspect.Parameter:
        listed = typing.get_origin(hints[field.name]) is tuple
        kind = str if listed else hints[field.name]
        help = field.metadata["help"] + (" Comma-separated." if listed else "")
        return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
            kind, typer.Option(flag(field), help=help)], default=_option_text(getattr(defaults, field.name)))

    def parse(field, text: str):
        if typing.get_origin(hints[field.name]) is not tuple:
            return text
        try:
            return tuple(float(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise UserError(f"{flag(field)} {text!r} must be comma-separated numbers, e.g. 0.1,0.5") from None

    def wrap(command):
        from factrecall.checks import checker

        signature = inspect.signature(command, eval_str=True)
        added = [option(f) for f in dataclasses.fields(defaults)]

        @functools.wraps(command)
        def with_settings(**options):
            settings = type(defaults)(**{f.name: parse(f, options.pop(f.name)) for f in dataclasses.fields(defaults)})
            named = tuple(f.name for f in dataclasses.fields(defaults) if "option" not in f.metadata)
            settings.check(checker(settings, f"analysis.{name}", named))
            return command(settings=settings, **options)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
        at = [p.name for p in params].index("settings")  # the settings' options stand where `settings` does
        params[at:at + 1] = added
        with_settings.__signature__ = signature.replace(parameters=params)
        with_settings.__annotations__ = {p.name: p.annotation for p in params}
        return with_settings
    return wrap


def _writes_run(command):
    """An analysis command writes into its run directory: it holds the directory's lock meanwhile
    (`locks.directory_lock`; a second writer, e.g. `train` still running, is refused)."""
    @functools.wraps(command)
    def locked(**options):
        from factrecall.locks import directory_lock

        run = Path(options["run"])
        if not run.is_dir():
            raise UserError(f"--run {run} is not a directory; give a run directory from 'factrecall train'")
        with directory_lock(run, f"'factrecall {command.__name__.removesuffix('_command')}'"):
            return command(**options)
    return locked


def _print_version(asked: bool) -> None:
    if asked:
        import factrecall

        typer.echo(f"factrecall {factrecall.__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option(help="Show tracebacks instead of one-line errors.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print factrecall's version and exit.")] = False):
    _DEBUG["on"] = _DEBUG["on"] or debug


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    preset: Annotated[str, typer.Option(help="Settings to start from.")] = "default",
    people: Annotated[Optional[int], typer.Option(help="Number of people.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    qa_train_fraction: Annotated[Optional[float], typer.Option(help="Fraction of people whose QA is trained (ID).")] = None,
    bios_per_person: Annotated[Optional[int], typer.Option()] = None,
    permute: Annotated[Optional[bool], typer.Option("--permute/--no-permute", help="Shuffle sentence order.")] = None,
    fullname: Annotated[Optional[bool], typer.Option("--fullname/--no-fullname", help="Full name in every sentence.")] = None,
    templates_per_attribute: Annotated[Optional[int], typer.Option(help="Use the first N templates; 0 = all.")] = None,
    question_paraphrases: Annotated[Optional[bool], typer.Option("--question-paraphrases/--no-question-paraphrases")] = None,
    pools: Annotated[Optional[Path], typer.Option(help="Directory of your own pools and templates.")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option(
        help="A dataset (or base) directory whose people must not be drawn again; repeatable.")] = None,
    force: Annotated[bool, typer.Option(help="Replace what --out holds (another dataset, other files).")] = False,
):
    """Generate a population (docs/method.md §1): people.jsonl, bio.jsonl, qa.jsonl, meta.json."""
    from factrecall import generate_dataset
    from factrecall.config.presets import data_config

    cfg = data_config(preset, people=people, seed=seed, qa_train_fraction=qa_train_fraction,
                      bios_per_person=bios_per_person, permute=permute, fullname=fullname,
                      templates_per_attribute=templates_per_attribute,
                      question_paraphrases=question_paraphrases, pools=str(pools) if pools else None,
                      exclude=tuple(str(_dataset_of(e).resolve()) for e in exclude or ()))
    meta = generate_dataset(cfg, out, force)
    typer.echo(f"wrote {out}: {json.dumps(meta['counts'])} hash {meta['content_hash'][:12]}")


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="A dataset directory: generated, or facts of your own.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
):
    """Validate a dataset as every command will read it (docs/data-format.md) and print its counts."""
    from factrecall.data.dataset import load_dataset

    dataset = load_dataset(data)
    split = {s: sum(p["split"] == s for p in dataset.people) for s in ("id", "ood")}
    counts = {"source": "generated" if dataset.generated else "own facts", "attributes": list(dataset.attributes),
              "entities": len(dataset.people), "id_entities": split["id"], "ood_entities": split["ood"],
              "bios": len(dataset.bios), "bios_per_entity": round(len(dataset.bios) / max(len(dataset.people), 1), 2),
              "questions_trained": len(dataset.qa_split("id")), "questions_held_out": len(dataset.qa_split("ood")),
              "content_hash": dataset.content_hash}
    if as_json:
        typer.echo(json.dumps(counts, indent=1))
        return
    typer.echo(f"{data}: valid ({counts['source']}); {counts['entities']} entities ({split['id']} ID, {split['ood']} "
               f"OOD), {counts['bios']} bios ({counts['bios_per_entity']:g} per entity), "
               f"{counts['questions_trained']} trained and {counts['questions_held_out']} held-out questions; "
               f"attributes {', '.join(dataset.attributes)}; content hash {dataset.content_hash[:12]}")


def _dataset_of(path: Path) -> Path:
    """A dataset directory, or the population inside a base directory from 'factrecall base build'."""
    base = BaseLayout(path)
    return base.data.root if base.record.is_file() else path


@base_app.command("build")
def base_build(
    kind: Annotated[str, typer.Option(help="language (BIO only) or skill (BIO and all QA).")],
    out: Annotated[Path, typer.Option(help="Directory of the base: an HF model directory with base.json.")],
    preset: Annotated[str, typer.Option(help="Settings (model, epochs, lr, data shape) to start from.")] = "default",
    people: Annotated[int, typer.Option(help="People in the base's own population.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the base's population and training.")] = 1,
    epochs: Annotated[int, typer.Option(help="Passes over the population's BIO (and, for skill, its QA).")] = 15,
    exclude: Annotated[Optional[list[Path]], typer.Option(
        help="Datasets whose people the base's population must not contain; repeatable.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Preset or model directory to train (default: the preset's).")] =
        None,
    force: Annotated[bool, typer.Option(help="Replace a base in --out.")] = False,
):
    """Train a tiny model on a population of its own, to fine-tune from with 'train --model DIR'."""
    from factrecall.study.bases import base_headline, build_base

    record = build_base(kind, out, preset, people, seed, tuple(_dataset_of(e) for e in exclude or ()), model, force,
                        epochs)
    typer.echo(f"{base_headline(record)}; written to {out}")


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option(help="Dataset directory.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    strategy: Annotated[str, typer.Option(help="stage or mix.")],
    preset: Annotated[str, typer.Option(help="Settings to start from.")] = "default",
    model: Annotated[Optional[str], typer.Option(
        help="Preset (tiny-llama, small-llama, tiny-llama-gqa, tiny-neox, tiny-gpt2) or model directory.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over BIO and over QA (both).")] = None,
    bio_epochs: Annotated[Optional[int], typer.Option()] = None,
    qa_epochs: Annotated[Optional[int], typer.Option()] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Cap on optimizer steps per phase.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Bios per micro-batch.")] = None,
    qa_batch_size: Annotated[Optional[int], typer.Option(help="Questions per micro-batch.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-batches per optimizer step.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    qa_phase_lr: Annotated[Optional[float], typer.Option(help="Stage's QA-phase peak learning rate.")] = None,
    qa_phase_weight_decay: Annotated[Optional[float], typer.Option(
        help="Stage's QA-phase weight decay; -1 = the BIO phase's (train.weight_decay).")] = None,
    qa_stop_at: Annotated[Optional[float], typer.Option(
        help="End Stage's QA phase at the first periodic evaluation with ID-QA accuracy ≥ this (needs "
             "--eval-every); 0 = off.")] = None,
    qa_phase_lora_rank: Annotated[Optional[int], typer.Option(
        help="Stage's QA phase trains LoRA adapters of this rank on the block matrices, nothing else; "
             "0 = every weight.")] = None,
    start_from: Annotated[Optional[Path], typer.Option(
        help="A Stage run (or its bio_phase/) with the same settings but the QA phase's: start this run's QA "
             "phase from its kept BIO phase.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Steps between periodic evaluations.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Steps between checkpoints.")] = None,
    trace: Annotated[bool, typer.Option("--trace/--no-trace", help="Record the cross-task gradient trace.")] = True,
    trace_mode: Annotated[Optional[str], typer.Option(help="signed (Σ lr·g), abs (Σ lr·|g|) or update (Σ of the optimizer's steps).")] = None,
    trace_normalization: Annotated[Optional[str], typer.Option(
        help="What the trace sums per micro-batch: token_mean (the training loss's gradient; default) or "
             "example_sum (each example's own token-mean loss; one more backward).")] = None,
    qa_loss: Annotated[Optional[str], typer.Option(
        help="What a question trains: answer (its tokens; default) or answer_eos (and the EOS after it).")] = None,
    grad_consistency: Annotated[Optional[int], typer.Option(
        help="Every N steps, log the per-layer cosine of the latest BIO and QA gradients; 0 = off.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, or bf16 (autocast; weights, AdamW and trace stay fp32).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in the backward pass.")] = None,
    device: Annotated[Optional[str], typer.Option(callback=_checked_device,
                                                  help="auto (a GPU if there is one), cpu or cuda.")] = None,
    distributed: Annotated[Optional[str], typer.Option(
        help="With several processes: ddp (replicas) or fsdp (FSDP2, sharded).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a run in --out.")] = False,
    ignore_disk: Annotated[bool, typer.Option(help="Start even if the disk looks too small for the run.")] = False,
    report_to: Annotated[str, typer.Option(
        help="Also log metrics live: none, tensorboard (RUN/live/) or wandb (needs the package).")] = "none",
):
    """Train with the Stage or Mix strategy (docs/method.md §3), recording the trace (docs/method.md §4)."""
    from factrecall import load_dataset, train
    from factrecall.evaluation.exact_match import accuracy_line
    from factrecall.study.claims.verdict import fit_warnings
    from factrecall.config.presets import train_config
    from factrecall.plan.disk import check_disk, run_disk_bytes

    cfg = train_config(preset, strategy=strategy, model=model, seed=seed,
                       bio_epochs=bio_epochs or epochs, qa_epochs=qa_epochs or epochs, max_steps=max_steps,
                       bio_batch_size=batch_size, qa_batch_size=qa_batch_size, grad_accum=grad_accum, lr=lr,
                       qa_phase_lr=qa_phase_lr, qa_phase_weight_decay=qa_phase_weight_decay, qa_stop_at=qa_stop_at,
                       qa_phase_lora_rank=qa_phase_lora_rank,
                       eval_every=eval_every, checkpoint_every=checkpoint_every,
                       trace=trace, trace_mode=trace_mode, trace_normalization=trace_normalization, qa_loss=qa_loss,
                       grad_consistency=grad_consistency, precision=precision,
                       gradient_checkpointing=gradient_checkpointing, device=device, distributed=distributed)
    cfg.validate()
    check_disk(out, run_disk_bytes(cfg, load_dataset(data))["peak"], "this run", ignore_disk)
    result = train(cfg, data, out, resume=resume, force=force, report_to=report_to, start_from=start_from)
    import torch.distributed as dist

    if dist.is_initialized():  # torchrun: end the process group before exit (gloo's threads can abort at exit)
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # one report under torchrun / accelerate launch
        typer.echo(accuracy_line(result))
        for warning in fit_warnings(result, asdict(cfg), len(load_dataset(data).bios)):
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"run written to {out}")


@app.command("eval")
def eval_command(
    model: Annotated[Path, typer.Option(help="Model directory (e.g. RUN/model).")],
    data: Annotated[Path, typer.Option(help="Dataset directory.")],
    out: Annotated[Optional[Path], typer.Option(help="JSON file to write.")] = None,
    batch_size: Annotated[int, typer.Option()] = 256,
    device: Device = DEFAULT.device,
    force: Annotated[bool, typer.Option(help="Replace an existing --out that is not an evaluation.")] = False,
):
    """Greedy exact match on QA-ID, QA-OOD and BIO, in batches."""
    from factrecall import load_dataset
    from factrecall.artifacts import dumps_json, write_json
    from factrecall.encode import pad_id
    from factrecall.evaluation.exact_match import accuracy_line, eval_sets, evaluate
    from factrecall.models.loading import load_model

    if out is not None:
        _check_eval_out(out, data, model, force)
    dataset = load_dataset(data)
    lm, tokenizer = load_model(model, device=device)
    result = evaluate(lm, eval_sets(tokenizer, dataset), pad_id(tokenizer), batch_size)
    if out is not None:
        write_json(out, result)
    typer.echo(dumps_json(result) if out is None else accuracy_line(result))


@app.command("shared")
@_writes_run
@settings_options("shared")
def shared_command(run: RunDir, settings):
    """Shared parameters (Definition 3.1): sizes, enrichment, Jaccard, heads, neurons, concentration."""
    from factrecall import analyze_run

    _headline("shared", analyze_run(run, settings.k, settings.sweep, settings.matched_sizes, settings.null_draws), run)


@app.command("ablate")
@_writes_run
@settings_options("ablation")
def ablate_command(run: RunDir, settings, data: MovedData = None, device: Device = DEFAULT.device):
    """Reset shared parameters to θ_pre and measure the change of accuracy (negative = lost), against matched sets
    (docs/method.md §6)."""
    from factrecall import ablate_run

    _headline("ablation", ablate_run(run, settings.k, settings.seeds, settings.eval_people, data, device,
                                     size=settings.size or None), run)


@app.command("graft")
@_writes_run
@settings_options("graft")
def graft_command(run: RunDir, settings, data: MovedData = None, device: Device = DEFAULT.device):
    """Find the sparse graft of θ_ft − θ_pre that recalls the ID facts, and bisect its size (docs/method.md §7)."""
    from factrecall import graft_run

    _headline("graft", graft_run(run, settings.sparsity, settings.steps, settings.lr, eval_people=settings.eval_people,
                                 data=data, device=device, grid=settings.sparsities, bracket=settings.bracket), run)


@app.command("heads")
@_writes_run
@settings_options("heads")
def heads_command(
    run: RunDir,
    settings,
    metrics: Annotated[str, typer.Option(help="Comma-separated unit rankings.")] =
        "shared_size,qa_size,bio_size,graft_size,delta_norm,random",
    k: Annotated[float, typer.Option(help="Top k percent of the shared/Top sets used by the metrics.")] =
        DEFAULT.shared.k,
    neurons: Annotated[bool, typer.Option("--neurons/--no-neurons", help="Also the MLP neuron curves.")] = True,
    intervention: Annotated[str, typer.Option(help="reset (weights to θ_pre), zero or mean (unit outputs).")] = "reset",
    bio: Annotated[bool, typer.Option("--bio/--no-bio", help="Also score BIO at every point (slower).")] = False,
    data: MovedData = None,
    device: Device = DEFAULT.device,
):
    """Sufficiency and criticality curves of heads (and neurons, same subset) per ranking metric
    (docs/method.md §8)."""
    from factrecall import circuit_curves

    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    on = replace(DEFAULT, heads=settings, neurons=replace(DEFAULT.neurons, on=settings.on))
    for kind in ("head", "neuron") if neurons else ("head",):
        r = circuit_curves(run, kind, names, k, settings.eval_people,
                           random_rankings=settings.random_rankings if kind == "head" else 1,
                           data=data, intervention=intervention, on=settings.on, bio=bio, device=device)
        _headline(f"{kind}s", r, run, on)


@app.command("inspect")
def inspect_command(
    run: RunDir,
    person: Annotated[Optional[int], typer.Option(help="Person id (default: the first OOD person).")] = None,
    layer: Annotated[Optional[int], typer.Option(help="Layer of the head (default: the top shared_size head).")] = None,
    head: Annotated[Optional[int], typer.Option(help="Head within the layer (give with --layer).")] = None,
    attribute: Annotated[Optional[str], typer.Option(
        help="The fact to look at (default: birth_city, or the dataset's first attribute).")] = None,
    on: Annotated[str, typer.Option(help="finetuned (θ_ft) or grafted (θ_pre + γ⊙Δ).")] = "finetuned",
    aggregate: Annotated[int, typer.Option(help="Also the attention shares over this many people; 0 = off.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the figures (default RUN/analysis/inspect).")] = None,
    force: Annotated[bool, typer.Option(help="Write over files in --out that no inspection wrote.")] = False,
    device: Device = DEFAULT.device,
):
    """Attention pattern, logit lens and direct head contribution for one person, BIO vs QA (docs/method.md §9, Fig. 5).

    With --out (and no --aggregate) the run is only read, so it may be read-only; the lock is --out's."""
    import contextlib

    from factrecall import inspect_run
    from factrecall.analysis.attention import attention_stats
    from factrecall.analysis.inspect import check_out
    from factrecall.locks import directory_lock
    from factrecall.report.inspect_figures import write_figures
    from factrecall.report.inspect_html import write_fragment
    from factrecall.analysis.registry import REGISTRY

    if aggregate < 0:
        raise UserError(f"--aggregate must be 0 (off) or a number of people (got {aggregate})")
    if not run.is_dir():
        raise UserError(f"--run {run} is not a directory; give a run directory from 'factrecall train'")
    if out is not None:
        check_out(run, out, force)  # before its lock is taken: nothing is written into an input
    files = InspectLayout(out) if out else RunLayout(run).inspect
    with contextlib.ExitStack() as locks:
        for written in ([out] if out else []) + ([run] if out is None or aggregate else []):
            locks.enter_context(directory_lock(written, "'factrecall inspect'"))
        result = inspect_run(run, person, layer, head, on=on, attribute=attribute, out=out, device=device, force=force)
        write_figures(result, files.root)
        write_fragment(result, files.html)
        typer.echo(f"{REGISTRY['inspect'].headline(result)}: written to {files.root}")
        if aggregate:
            _headline("attention", attention_stats(run, people=aggregate, on=on, device=device), run)


@app.command("consistency")
@_writes_run
@settings_options("consistency")
def consistency_command(
    run: RunDir,
    settings,
    on: Annotated[str, typer.Option(help="finetuned or grafted.")] = "finetuned",
    device: Device = DEFAULT.device,
):
    """BIO–QA consistency per layer: representations, gradient probe, trace direction (docs/method.md §10)."""
    from factrecall.analysis.consistency import consistency_run

    _headline("consistency", consistency_run(run, people=settings.people, on=on, probe_people=settings.probe_people,
                                             device=device, bootstrap=settings.bootstrap), run)


@app.command("plan")
def plan_command(
    preset: Annotated[Optional[str], typer.Option(
        help="Preset to plan (e.g. paper-llama, paper-pythia, default; default: the config's, else default).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="A study config (TOML) to plan, over its preset.")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs (one process each).")] = 1,
    gpu_memory: Annotated[float, typer.Option(help="Memory per GPU, GiB.")] = 80.0,
    seq_len: Annotated[int, typer.Option(help="Tokens of the longest bio in a micro-batch.")] = 128,
    qa_seq_len: Annotated[int, typer.Option(help="Tokens of the longest question + answer.")] = 32,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16 (default: the preset's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Memory plan of a study (a preset or a study config, any supported model family): training per GPU (DDP and FSDP2, with and without gradient
    checkpointing: weights, gradients, AdamW, trace, activations) and evaluating between steps; each analysis
    on one GPU; whether each fits; the disk of a run and of the whole study."""
    from factrecall.artifacts import dumps_json
    from factrecall.plan.study import format_plan, preset_plan

    result = preset_plan(preset, gpus, gpu_memory, seq_len, qa_seq_len, precision, config)
    typer.echo(dumps_json(result).rstrip() if as_json else format_plan(result))


@app.command("forgetting")
@_writes_run
@settings_options("forgetting")
def forgetting_command(run: RunDir, settings, device: Device = DEFAULT.device):
    """Accuracy on the base's own population before and after fine-tuning (runs from 'factrecall base build')."""
    from factrecall.analysis.forgetting import forgetting_run

    result = forgetting_run(run, settings.eval_people, device)
    if result is None:
        raise UserError(f"the θ_pre of {run} was not built by 'factrecall base build' (no base/base.json): "
                        f"it has no population of its own to forget")
    _headline("forgetting", result, run)


@app.command("study")
def study_command(
    out: Annotated[Path, typer.Option(help="Study directory.")] = Path("studies/default"),
    preset: Annotated[Optional[str], typer.Option(
        help="default, small, smoke, paper-llama or paper-pythia (default: the config file's, else default).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file overriding the preset's settings.")] = None,
    force: Annotated[bool, typer.Option(help="Start over in --out (a study with another config is refused).")] = False,
    device: Annotated[Optional[str], typer.Option(
        callback=_checked_device,
        help="auto, cpu or cuda for training and every analysis (default: the config's [train] and [analysis] device).")]
        = None,
    ignore_disk: Annotated[bool, typer.Option(help="Start even if the disk looks too small for the study.")] = False,
    jobs: Annotated[int, typer.Option(help="A sweep's points in N processes at once, sharing the cores.")] = 1,
    point: Annotated[Optional[int], typer.Option(
        help="Run only this point of the sweep (see --list-points); for a Slurm array or any launcher.")] = None,
    list_points: Annotated[bool, typer.Option(help="Print the sweep's points and whether each is finished.")] = False,
):
    """The whole paper for both strategies: data, training, every analysis, summary.json and the report
    (re-running resumes: finished steps are skipped). A config with `seeds`, [sweep] or `points` runs
    every point of the sweep as such a study (docs/method.md §12)."""
    import time

    from factrecall import build_reports, run_study
    from factrecall.config.study import read_config_file
    from factrecall.study.sweep import is_sweep

    if not is_sweep(read_config_file(config)):
        if point is not None or list_points or jobs != 1:
            raise UserError("--point, --list-points and --jobs apply to a sweep; give a --config with seeds, "
                            "[sweep] or points")
        summary = run_study(out, preset, config, force=force, log=typer.echo, device=device, ignore_disk=ignore_disk)
    elif list_points:
        return _list_points(out, config, preset, device)
    else:
        from factrecall.study.sweep_runner import run_sweep

        summary = run_sweep(out, config, preset, force=force, log=typer.echo, device=device,
                            ignore_disk=ignore_disk, jobs=jobs, only=point)
        if summary is None:  # one point: its own study and report; the sweep's summary is 'factrecall report''s
            from factrecall.study.sweep import sweep_points

            root = sweep_points(config, preset, device)[point].layout(out).root
            typer.echo(f"report:  {build_reports(root)}")
            typer.echo(f"when every point is finished: factrecall report --study {out}")
            return
    t0 = time.perf_counter()
    report = build_reports(out)
    typer.echo(f"{'report':<22} {time.perf_counter() - t0:6.1f}s     {report}")
    if "sweep" in summary:
        for group in summary["groups"]:
            typer.echo(f"{group['label']}: " + ", ".join(f"{c['id']} {c['verdict']}" for c in group["claims"]))
        typer.echo("\n".join(summary["changes"]))
    else:
        if summary.get("plumbing_check"):
            typer.echo("plumbing check, no findings: the smoke preset's models learn next to nothing")
        if summary.get("not_fit"):
            typer.echo(f"no verdicts: {summary['not_fit']}")
        for claim in summary["claims"]:
            measured = claim.get("measured") or {"verdict": claim["verdict"], "why": claim["evidence"]}
            gated = summary.get("not_fit") and claim.get("why") == summary["not_fit"]
            typer.echo(f"{claim['id']} {claim['verdict']}: " + (f"(not judged) the rule measured: {measured['verdict']}, "
                                                              f"{measured['why']}" if gated else claim.get("why", "")))
    typer.echo(f"summary: {StudyLayout(out).summary}")
    typer.echo(f"report:  {StudyLayout(out).report}")


def _list_points(out: Path, config: Path, preset: str | None, device: str | None) -> None:
    """`--list-points`: index, id, settings and status of every point (the index is what --point takes)."""
    from factrecall.study.sweep import sweep_points
    from factrecall.study.sweep_runner import point_finished

    points = sweep_points(config, preset, device)
    for p in points:
        status = "finished" if point_finished(out, p) else "to run"
        typer.echo(f"{p.index}\t{p.id}\t{status}\t{p.label}")
    typer.echo(f"{len(points)} points; run one with: factrecall study --config {config} --out {out} --point I")


@app.command("report")
def report_command(study: Annotated[Path, typer.Option(help="Study directory (from 'factrecall study').")]):
    """Rebuild summary.json and report/index.html from a study's artifacts (a sweep: from its finished points,
    naming the missing ones)."""
    from factrecall import build_reports
    from factrecall.locks import directory_lock
    from factrecall.study.summary import summarize_study
    from factrecall.study.sweep_runner import sweep_record
    from factrecall.study.sweep_summary import summarize_sweep

    files = StudyLayout(study)
    if not files.record.is_file():
        raise UserError(f"--study {study} holds no study (no study.json); run 'factrecall study --out {study}'")
    with directory_lock(study, "'factrecall report'"):
        if sweep_record(study) is None:
            typer.echo(f"report: {build_reports(study, summarize_study(study))}")
            return
        summary = summarize_sweep(study)
        typer.echo(f"report: {build_reports(study, summary)}")
        for missing in summary["sweep"]["missing"]:
            typer.echo(f"not finished: point {missing}")


@app.command("show")
def show_command(
    path: Annotated[Path, typer.Argument(help="A run directory (from 'factrecall train') or a study directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the same content as one JSON object.")] = False,
):
    """What a run or a study found, as terminal tables: accuracies, Stage runs, each claim's verdict with its reason,
    each analysis's headline and the top shared heads (read from its files; nothing is computed again)."""
    from factrecall.report.show import render, show

    shown = show(path)
    typer.echo(json.dumps(shown, indent=2, ensure_ascii=False) if as_json else render(shown))


def _check_eval_out(out: Path, data: Path, model: Path, force: bool) -> None:
    """`eval --out` never replaces an input or a file that is not an evaluation (unless `force`)."""
    from factrecall.artifacts import read_json
    from factrecall.locks import refuse_overlap
    from factrecall.terms import EVAL_SETS

    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name")
    refuse_overlap(out, [("data directory", data), ("model directory", model)], "eval")
    if out.exists() and not force:
        try:
            ours = set(EVAL_SETS) <= set(read_json(out, "existing --out"))
        except (UserError, TypeError):
            ours = False
        if not ours:
            raise UserError(f"--out {out} exists and is not an evaluation; choose another file or pass --force "
                            f"to replace it")


def _headline(analysis: str, result: dict, run: Path, config: AnalysisConfig = DEFAULT) -> None:
    """An analysis's one-line headline and the files it wrote, as the study prints them (`analysis/registry.py`)."""
    from factrecall.analysis.registry import REGISTRY

    entry = REGISTRY[analysis]
    typer.echo(entry.headline(result))
    typer.echo(f"written to {', '.join(str(p) for p in entry.writes(RunLayout(run), config))}")


def main() -> None:
    from transformers.utils import logging as hf_logging

    from factrecall.models.compat import check_versions

    hf_logging.disable_progress_bar()  # our own bars say what is happening; HF's per-file bars are noise
    try:
        check_versions()
        app()
    except UserError as e:
        if _DEBUG["on"]:
            raise
        typer.echo(f"factrecall: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # the OS refused: permissions, a full disk, a path that is a file, …
        if _DEBUG["on"]:
            raise
        where = f" ({e.filename})" if e.filename else ""
        typer.echo(f"factrecall: error: {e.strerror or e}{where}; check the path, its permissions and the free "
                   f"disk space (--debug shows the traceback)", err=True)
        sys.exit(2)
