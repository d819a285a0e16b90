"""The paper's models on one GPU: trace overhead, peak memory against the plan, every analysis.

Llama-3.2-3B and Pythia-2.8B (`--models llama,pythia`) are built with random weights from the
configs shipped in `src/factrecall/models/configs/` (nothing is downloaded) and saved as hub
checkpoints are: bf16 safetensors, the shipped vocabulary (128,256 / 50,304 rows), and a tokenizer
with as many tokens as the hub's (all rows / all but 27): the package's word-level tokenizer of
the data, filled with unused words. On a small population (`--people`) this measures

1. training, `factrecall train --preset paper-llama|paper-pythia --max-steps N --eval-every 0`,
   once with `--no-trace` and once with the trace: the median step seconds of the run's
   metrics.jsonl after WARMUP steps, and the median ratio of the same step in both runs (same seed
   and data: the same batch) (target ≤ 1.03×); the traced run's peak GPU memory
   (`max_memory_allocated`) over its steps, i.e. before its final evaluation, next to the per-GPU
   total of `factrecall plan --preset … --json` at the data's longest bio and question (target:
   within 10 %), and its peak including that evaluation next to plan's figure for it;
2. the dtypes of the run's saved θ_pre (`base/`) and θ_ft (`model/`), float32, and the run
   config's `base.checkpoint_dtype`, bfloat16;
3. every analysis function of the traced run with `device="cuda"` (`eval`, `graft`, `consistency`,
   `inspect`, `shared`, attention shares, `ablate`, neuron and head curves; those that work the GPU
   before those that scan the trace on CPU): seconds and peak GPU memory, beside plan's figure
   where `plan --json` has an "analyses" entry. They run with the preset's analysis settings, which
   `plan` plans (evaluation sizes, k), but 2 graft steps, 1 ablation seed, 10 probed people.

Each measurement runs in a fresh process of this script (`--worker`): each training run alone, a
model's analyses one after another with the peak statistics reset in between. A measurement that
fails or runs out of time is recorded with its error (the head curves with how many evaluations
they did) and the rest go on. `--budget` bounds the whole benchmark: the analyses of a model stop
at its equal share of the time left when it starts (training may run past it), one analysis at
most `--analysis-timeout`; what did not fit is marked "skipped". At 3 B the I/O dominates: a
traced run writes θ_pre and θ_ft in float32 and the trace (Llama: 12.9 + 12.9 + 22.5 GB); the
untraced run is deleted at once, a model's files after its analyses unless `--keep` (~55 GB per
model). `--models llama` leaves one model the whole budget. Without a GPU it prints a line saying
so and exits 0; `--tiny` runs the same pipeline on tiny-llama / tiny-neox shapes on whatever
device there is (CPU too).

    PYTHONPATH=src python benchmarks/gpu_paper_scale.py [--models llama,pythia] [--steps 10]
        [--people 256] [--analyses eval,shared,…] [--budget 480] [--analysis-timeout 120]
        [--workdir DIR] [--keep] [--json-out FILE] [--tiny]

Progress goes to stderr; the last line of stdout is one JSON object (also written to --json-out
after every model, so a killed run leaves what it measured).
"""

import argparse
import gc
import importlib
import inspect
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network there: never wait for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    import factrecall
except ImportError:  # run from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import factrecall

import torch

from factrecall.analysis.circuit import head_counts

GIB = 2**30
MODELS = {"llama": {"preset": "paper-llama", "tiny": "tiny-llama"},
          "pythia": {"preset": "paper-pythia", "tiny": "tiny-neox"}}
UNNAMED_ROWS = {"llama": 0, "pythia": 50304 - 50277}  # embedding rows beyond the hub's tokenizer
WARMUP = 2  # first steps left out of the step times (allocator, kernels)
HEAD_METRICS = ("shared_size",)
# the analyses in the order they run: those that work the GPU first, then those that scan the trace on CPU
# (shared; attention reads its masks; ablate and the curves select Top_BIO and Top_QA again); heads last:
# its curves are the most evaluations (22 / 23 grid points of 672 / 1,024 heads per curve at 3 B)
ANALYSES = ("eval", "graft", "consistency", "inspect", "shared", "attention", "ablate", "neurons", "heads")
PLAN_NAMES = {"eval": ("eval", "evaluation"), "attention": ("attention", "inspect"),  # in `plan --json`
              "neurons": ("neurons", "heads", "circuit"), "heads": ("heads", "circuit")}


def gib(n):
    return None if n is None else round(n / GIB, 3)


def gpu_memory():
    """(peak allocated, peak reserved, allocated now) in bytes since the last reset; None without CUDA."""
    if not torch.cuda.is_available():
        return None, None, None
    return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), torch.cuda.memory_allocated()


# ----------------------------------------------------------------------------------------------
# worker: a process that runs the items of a spec file and appends one JSON line per event


def train_item(item):
    """`factrecall train ARGV` in this process; step seconds from its metrics.jsonl, and the peak GPU
    memory when the run's first evaluation starts (with --eval-every 0: its final one, after the steps)."""
    from factrecall.cli import app
    from factrecall.training import loop

    real_evaluate, seen = loop.evaluate, {}

    def evaluate(*args, **kwargs):
        seen.setdefault("step_peak", gpu_memory()[0])
        return real_evaluate(*args, **kwargs)

    loop.evaluate = evaluate
    try:
        app(args=item["argv"], standalone_mode=False, prog_name="factrecall")
    finally:
        loop.evaluate = real_evaluate
    rows = [json.loads(line) for line in (Path(item["run"]) / "metrics.jsonl").read_text().splitlines()]
    return {"step_seconds": [r["seconds"] for r in rows if r.get("event") == "step"],
            "step_peak_gib": gib(seen.get("step_peak")),
            "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)}


def evaluate_run(run, device="auto"):
    """What `factrecall eval --model RUN/model --data DATA` does."""
    from factrecall.analysis.run import run_dataset
    from factrecall.encode import pad_id
    from factrecall.evaluation.exact_match import eval_sets, evaluate
    from factrecall.models.loading import load_model

    model, tokenizer = load_model(Path(run) / "model", device=device)
    return evaluate(model, eval_sets(tokenizer, run_dataset(run)), pad_id(tokenizer), 256)


def analysis_item(item, note):
    """One analysis function in this process, given `device` when it takes one."""
    from factrecall.analysis import ablation, attention, circuit, consistency, graft, shared
    from factrecall.analysis import inspect as inspection

    function = {
        "eval": evaluate_run, "graft": graft.graft_run, "consistency": consistency.consistency_run,
        "inspect": inspection.inspect_run, "shared": shared.analyze_run, "attention": attention.attention_stats,
        "ablate": ablation.ablate_run, "neurons": circuit.circuit_curves, "heads": circuit.circuit_curves,
    }[item["name"]]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in item["kwargs"].items()}  # JSON lists
    takes_device = "device" in inspect.signature(function).parameters
    if takes_device:
        kwargs["device"] = item["device"]
    real_evaluate, count, t0 = circuit.evaluate, [0], time.perf_counter()

    def counted(*args, **kw):  # the curves' progress: a timeout still says how far they got
        out = real_evaluate(*args, **kw)
        count[0] += 1
        note({"item": item["name"], "progress": count[0], "elapsed": round(time.perf_counter() - t0, 2)})
        return out

    circuit.evaluate = counted
    try:
        function(Path(item["run"]), **kwargs)
    finally:
        circuit.evaluate = real_evaluate
    return {"device_passed": takes_device, **({"evaluations": count[0]} if count[0] else {})}


def worker(spec_file):
    spec = json.loads(Path(spec_file).read_text())

    def note(row):
        with open(spec["results"], "a") as f:
            f.write(json.dumps(row) + "\n")

    if any(item["kind"] == "analysis" for item in spec["items"]):  # imports happen before the clock starts
        for module in ("ablation", "attention", "circuit", "consistency", "graft", "inspect", "shared"):
            importlib.import_module(f"factrecall.analysis.{module}")
    for item in spec["items"]:
        note({"item": item["name"], "started": True})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = gpu_memory()[2]
        t0 = time.perf_counter()
        try:
            row = train_item(item) if item["kind"] == "train" else analysis_item(item, note)
        except (Exception, SystemExit) as e:  # recorded (the traceback in the log); the next item still runs
            traceback.print_exc()
            frames = [f for f in traceback.extract_tb(e.__traceback__) if "factrecall" in f.filename]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else None
            row = {"error": f"{type(e).__name__}: {e}"[:600], "where": where}
        peak, reserved, _ = gpu_memory()
        note({"item": item["name"], "done": True, "seconds": round(time.perf_counter() - t0, 2),
              "peak_gib": gib(peak), "reserved_gib": gib(reserved), "allocated_before_gib": gib(before), **row})


# ----------------------------------------------------------------------------------------------
# main process: builds the checkpoints, starts the workers and watches their clocks, reports

T0 = time.monotonic()
CURRENT = {"proc": None}  # the worker running now: killed if we are interrupted


def log(message):
    print(f"[{time.monotonic() - T0:6.0f} s] {message}", file=sys.stderr, flush=True)


def tail(path, chars=600):
    text = Path(path).read_text(errors="replace") if Path(path).is_file() else ""
    return " | ".join(line for line in text[-chars:].splitlines() if line.strip())


def read_rows(path):
    """The events a worker has written so far (a line it is still writing is left for the next read)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def run_worker(items, work, label, deadline, cap=None):
    """Run `items` in fresh worker processes: {name: result}. An item running past `cap` seconds or the
    `deadline` is killed and recorded, and the items after it get a new process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(  # the workers import the code this process imported
        [str(Path(factrecall.__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    results, pending, attempt = {}, list(items), 0
    while pending:
        if time.monotonic() >= deadline:
            results.update({it["name"]: {"skipped": "time budget (--budget)"} for it in pending})
            break
        attempt += 1
        spec = work / "logs" / f"{label}-{attempt}.json"
        out, logfile = spec.with_suffix(".jsonl"), spec.with_suffix(".log")
        spec.write_text(json.dumps({"items": pending, "results": str(out)}))
        with open(logfile, "w") as f:
            proc = subprocess.Popen([sys.executable, __file__, "--worker", str(spec)], stdout=f,
                                    stderr=subprocess.STDOUT, env=env)
        CURRENT["proc"] = proc
        started, killed = {}, None
        while proc.poll() is None:  # watch the item in progress
            time.sleep(0.5)
            rows = read_rows(out)
            done = {r["item"] for r in rows if r.get("done")}
            current = next((r["item"] for r in rows if r.get("started") and r["item"] not in done), None)
            if current is None:
                continue
            started.setdefault(current, time.monotonic())
            limit = min(deadline, started[current] + cap) if cap else deadline
            if time.monotonic() > limit:
                proc.kill()
                proc.wait()
                killed = f"timed out after {time.monotonic() - started[current]:.0f} s " + (
                    "(--analysis-timeout)" if limit < deadline else "(--budget)")
        CURRENT["proc"] = None
        rows = read_rows(out)
        for row in rows:
            if row.get("done"):
                name = row.pop("item")
                results[name] = {k: v for k, v in row.items() if k != "done"}
                log(f"{label}: {name} {json.dumps(results[name])[:240]}")
        pending = [it for it in pending if it["name"] not in results]
        if not pending:
            break
        error = killed or f"worker exited with code {proc.returncode}: {tail(logfile)}"
        if not any(r.get("started") for r in rows):  # it died before starting anything: so would the rest
            results.update({it["name"]: {"error": error} for it in pending})
            break
        failed = pending.pop(0)  # the item in progress when it died or was killed
        progress = [r for r in rows if r.get("item") == failed["name"] and "progress" in r]
        results[failed["name"]] = {"error": error}
        if progress:  # how far the curves got, and their rate after setup (model, θ_pre, selection)
            first, last = progress[0], progress[-1]
            span = last["progress"] - first["progress"]
            results[failed["name"]].update(
                evaluations_done=last["progress"], seconds_to_first_evaluation=first["elapsed"],
                seconds_per_evaluation=round((last["elapsed"] - first["elapsed"]) / span, 3) if span else None)
        log(f"{label}: {failed['name']} failed: {error[:300]}")
    return results


def generate_data(out, preset, people, logfile):
    """`factrecall data generate`, in its own process."""
    args = ["data", "generate", "--out", str(out), "--preset", preset, "--people", str(people)]
    with open(logfile, "w") as f:
        code = subprocess.call([sys.executable, "-m", "factrecall", *args], stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise RuntimeError(f"factrecall {' '.join(args)} exited with {code}: {tail(logfile)}")


def checkpoint_tokenizer(dataset, key, vocab_size):
    """The package's word-level tokenizer of the data, filled with unused words ("unused0", …) up to the
    rows a hub tokenizer names: all of Llama's, all of Pythia's but 27 (its tokenizer has 50,277)."""
    from factrecall.models.tokenizer import word_tokenizer

    fragments = dataset.vocabulary_fragments()
    filler = vocab_size - UNNAMED_ROWS[key] - len(word_tokenizer(fragments))
    return word_tokenizer(fragments + [f"unused{i}" for i in range(max(filler, 0))])


def build_checkpoint(key, tiny, dataset, out, device):
    """θ_pre as a hub checkpoint would be: random weights, bf16 safetensors, with its tokenizer."""
    from transformers import AutoModelForCausalLM

    from factrecall.models.spec import spec_config
    from factrecall.models.tensor_files import checkpoint_dtype
    from factrecall.models.tiny import TINY_MODELS
    from factrecall.models.tokenizer import word_tokenizer
    from factrecall.config.presets import train_config

    if tiny:  # the tiny preset's shapes, its rows the data's words (and Pythia's unnamed rows)
        config_class, kwargs = TINY_MODELS[MODELS[key]["tiny"]]
        vocab = len(word_tokenizer(dataset.vocabulary_fragments())) + UNNAMED_ROWS[key]
        config = config_class(vocab_size=vocab, **kwargs)
    else:
        config = spec_config(train_config(MODELS[key]["preset"]).model)
    tokenizer = checkpoint_tokenizer(dataset, key, config.vocab_size)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):  # 3 B parameters are initialised in seconds on the GPU, in minutes on CPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return tokenizer, {
        "parameters": parameters, "vocab_size": config.vocab_size, "tokenizer_size": len(tokenizer),
        "units": config.num_hidden_layers * config.num_attention_heads, "init_dtype": checkpoint_dtype(out),
        "init_bytes": sum(f.stat().st_size for f in Path(out).glob("*.safetensors"))}


def planned(key, tiny, init, bio_len, qa_len):
    """`factrecall plan --preset …`'s per-GPU total for one GPU, plain or checkpointed as the preset
    trains, at the data's longest bio / question and at plan's defaults (128 / 32); with the run's final
    evaluation and each analysis where plan has them (`per_gpu.ddp.evaluation`, "analyses")."""
    from factrecall.models.spec import spec_config
    from factrecall.config.presets import train_config
    from factrecall.plan.study import preset_plan
    from factrecall.plan.training import PlanSettings, model_shapes, plan

    preset = MODELS[key]["preset"]
    cfg = train_config(preset)
    mode = "checkpointing" if cfg.gradient_checkpointing else "plain"

    def run_plan(seq_len, qa_seq_len):
        if tiny:  # the preset's settings on the tiny model (preset_plan plans the 3 B one)
            settings = PlanSettings(bio_rows=cfg.bio_batch_size, qa_rows=cfg.qa_batch_size, seq_len=seq_len,
                                    qa_seq_len=qa_seq_len, precision=cfg.precision)
            return plan(model_shapes(spec_config(str(init)), cfg.trace_include), settings)
        return preset_plan(preset, seq_len=seq_len, qa_seq_len=qa_seq_len)

    at_data, at_defaults = run_plan(bio_len, qa_len), run_plan(128, 32)
    one_gpu = at_data["per_gpu"]["ddp"]
    return {"plan_mode": mode, "plan_gib": gib(one_gpu[mode]["total"]),
            "plan_gib_incl_eval": gib(one_gpu.get("evaluation", {}).get("total")),  # where plan has it
            "plan_gib_at_128_32": gib(at_defaults["per_gpu"]["ddp"][mode]["total"]),
            "traced": at_data["model"]["traced"], "analyses": at_data.get("analyses")}


def analysis_arguments(preset):
    """Each analysis's arguments: the preset's analysis settings (what `plan` plans), except for the number
    of mask steps, seeds, sweep points and probed people (time, not memory); inspect at head 0 of layer 0."""
    from factrecall.config.presets import analysis_config

    a = analysis_config(preset)
    curves = {"metrics": list(HEAD_METRICS), "k": a.shared.k}
    return {
        "eval": {},
        "graft": {"sparsity": a.graft.sparsity, "steps": 2, "eval_people": a.graft.eval_people},
        "consistency": {"people": a.consistency.people, "probe_people": min(a.consistency.probe_people, 10)},
        "inspect": {"layer": 0, "head": 0},
        "shared": {"k": a.shared.k, "sweep": [a.shared.k]},
        "attention": {"people": a.attention.people},
        "ablate": {"k": a.ablation.k, "seeds": 1, "eval_people": a.ablation.eval_people},
        "neurons": {"kind": "neuron", **curves, "eval_people": a.neurons.eval_people, "points": list(a.neurons.points)},
        "heads": {"kind": "head", **curves, "eval_people": a.heads.eval_people},
    }


def planned_analysis_gib(analyses, name):
    """An analysis's GiB from plan's "analyses" entry (bytes, or a dict with a total), else None."""
    for key in PLAN_NAMES.get(name, (name,)):
        entry = (analyses or {}).get(key)
        if isinstance(entry, dict):
            numbers = [entry[k] for k in ("total", "peak", "bytes", "gpu") if isinstance(entry.get(k), (int, float))]
            entry = numbers[0] if numbers else None
        if isinstance(entry, (int, float)):
            return gib(entry)
    return None


def step_times(on, off):
    """Median step seconds with and without the trace after WARMUP steps, and the median ratio of the same
    step (the same batch) in the two runs: robust to a step slowed by something else on the machine."""
    on, off = on[WARMUP:], off[WARMUP:]
    return statistics.median(on), statistics.median(off), statistics.median(a / b for a, b in zip(on, off))


def new_model_record(key, tiny):
    """Every key of a model's result, None (or "not reached") until measured."""
    return {"preset": MODELS[key]["preset"], "shapes": MODELS[key]["tiny"] if tiny else "shipped config",
            "parameters": None, "vocab_size": None, "tokenizer_size": None, "build_seconds": None, "init_dtype": None,
            "step_s_trace": None, "step_s_no_trace": None, "trace_ratio": None,
            "peak_gib": None, "plan_gib": None, "peak_vs_plan": None,
            "peak_gib_incl_eval": None, "plan_gib_incl_eval": None, "peak_incl_eval_vs_plan": None,
            "plan_mode": None, "plan_gib_at_128_32": None, "plan_analyses_keys": None, "sequence_lengths": None,
            "disk_needed_gib": None,
            "saved_dtype": {"base": None, "model": None}, "checkpoint_dtype": None,
            "train": {"no_trace": None, "trace": None},
            "analyses": {name: {"skipped": "not reached"} for name in ANALYSES},
            "seconds": None, "error": None}


def bench_model(key, record, args, work, data, device, share, deadline):
    """Build, train without and with the trace, read the dtypes, run the analyses; fills `record`.
    Training may run until `deadline`, the analyses until this model's `share` of it."""
    from factrecall.data.dataset import load_dataset
    from factrecall.encode import encode_bio, encode_qa
    from factrecall.models.tensor_files import checkpoint_dtype

    home = work / key
    home.mkdir()
    init, run = home / "init", home / "run"
    dataset = load_dataset(data)
    t0 = time.monotonic()
    tokenizer, built = build_checkpoint(key, args.tiny, dataset, init, device)
    record.update({k: built[k] for k in ("parameters", "vocab_size", "tokenizer_size", "init_dtype")},
                  build_seconds=round(time.monotonic() - t0, 1))
    log(f"{key}: built {built['parameters'] / 1e9:.3f} B parameters ({built['init_bytes'] / 1e9:.2f} GB "
        f"{built['init_dtype']}) in {record['build_seconds']} s")

    lengths = {"bio": max(len(encode_bio(tokenizer, b).input_ids) for b in dataset.bios),
               "qa": max(len(encode_qa(tokenizer, q).input_ids) for q in dataset.qa_split("id"))}
    try:
        p = planned(key, args.tiny, init, lengths["bio"], lengths["qa"])
    except Exception as e:  # the plan is recorded as missing; the measurements still run
        p = dict.fromkeys(("plan_mode", "plan_gib", "plan_gib_incl_eval", "plan_gib_at_128_32", "traced", "analyses"))
        record["error"] = f"plan: {type(e).__name__}: {e}"[:600]
        log(f"{key}: {record['error']}")
    if p["traced"] is not None:  # a traced run writes θ_pre and θ_ft in float32 and the trace
        need, free = 8 * built["parameters"] + 8 * p["traced"], shutil.disk_usage(home).free
        record["disk_needed_gib"] = gib(need)
        if free < need:
            log(f"{key}: warning: {gib(free)} GiB free in {home}, the traced run writes {gib(need)} GiB")
    record.update(sequence_lengths=lengths, plan_mode=p["plan_mode"], plan_gib=p["plan_gib"],
                  plan_gib_incl_eval=p["plan_gib_incl_eval"], plan_gib_at_128_32=p["plan_gib_at_128_32"],
                  plan_analyses_keys=sorted(p["analyses"]) if isinstance(p["analyses"], dict) else None)

    # training: without the trace first (its run is deleted at once: disk), then the run the analyses use
    for name in ("no_trace", "trace"):
        out = run if name == "trace" else home / "run-no-trace"
        argv = ["train", "--data", str(data), "--out", str(out), "--strategy", "mix", "--preset", MODELS[key]["preset"],
                "--model", str(init), "--max-steps", str(args.steps), "--eval-every", "0", "--checkpoint-every", "0",
                "--device", device] + (["--no-trace"] if name == "no_trace" else [])
        log(f"{key}: factrecall {' '.join(argv)}")
        result = run_worker([{"name": "train", "kind": "train", "argv": argv, "run": str(out)}], work,
                            f"{key}-train-{name}", deadline)["train"]
        record["train"][name] = {"command": "factrecall " + " ".join(argv), **result}
        if name == "no_trace":
            shutil.rmtree(out, ignore_errors=True)
    off, on = (record["train"][name].get("step_seconds") for name in ("no_trace", "trace"))
    if off and on and min(len(off), len(on)) > WARMUP:
        on_s, off_s, ratio = step_times(on, off)
        record.update(step_s_trace=round(on_s, 4), step_s_no_trace=round(off_s, 4), trace_ratio=round(ratio, 4))
    record.update(peak_gib=record["train"]["trace"].get("step_peak_gib"),
                  peak_gib_incl_eval=record["train"]["trace"].get("peak_gib"))
    for measured, planned_gib, ratio in (("peak_gib", "plan_gib", "peak_vs_plan"),
                                         ("peak_gib_incl_eval", "plan_gib_incl_eval", "peak_incl_eval_vs_plan")):
        if record[measured] is not None and record[planned_gib]:
            record[ratio] = round(record[measured] / record[planned_gib], 3)
    if not (run / "model").is_dir():
        record["error"] = "the traced run did not finish: no analyses"
        record["analyses"] = {name: {"skipped": "no traced run"} for name in ANALYSES}
        return
    record["saved_dtype"] = {"base": checkpoint_dtype(run / "base"), "model": checkpoint_dtype(run / "model")}
    record["checkpoint_dtype"] = json.loads((run / "config.json").read_text())["base"]["checkpoint_dtype"]

    # the analyses: one worker, each item at most --analysis-timeout, all within this model's share
    arguments = analysis_arguments(MODELS[key]["preset"])
    items = [{"name": name, "kind": "analysis", "run": str(run), "device": device, "kwargs": arguments[name]}
             for name in ANALYSES if name in args.analyses]
    results = run_worker(items, work, f"{key}-analyses", share, cap=args.analysis_timeout)
    for name in ANALYSES:
        if name not in args.analyses:
            record["analyses"][name] = {"skipped": "not in --analyses"}
            continue
        r = {"arguments": arguments[name], **results[name], "plan_gib": planned_analysis_gib(p["analyses"], name)}
        if r.get("peak_gib") is not None and r["plan_gib"]:
            r["peak_vs_plan"] = round(r["peak_gib"] / r["plan_gib"], 3)
        if name == "heads":  # both curves per metric over `head_counts`: at most this many evaluations
            counts = len(head_counts(built["units"]))
            r.update(units=built["units"], evaluations_needed_max=1 + 2 * len(HEAD_METRICS) * counts)
        record["analyses"][name] = r


def versions():
    import accelerate
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "factrecall": str(Path(factrecall.__file__).parent)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama,pythia", help="Comma-separated: llama, pythia.")
    parser.add_argument("--steps", type=int, default=10, help="Optimizer steps of each training run.")
    parser.add_argument("--people", type=int, default=256, help="People in the generated population (256: every "
                        "evaluation batch holds 256 rows, the last the longest texts, as plan assumes).")
    parser.add_argument("--analyses", default=",".join(ANALYSES), help="Comma-separated subset of the analyses.")
    parser.add_argument("--budget", type=float, default=480, help="Seconds for the whole benchmark.")
    parser.add_argument("--analysis-timeout", type=float, default=120, help="Seconds one analysis may take.")
    parser.add_argument("--workdir", type=Path, help="Empty folder to work in (default: a temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep checkpoints and runs (~55 GB per 3 B model).")
    parser.add_argument("--json-out", type=Path, help="Also write the JSON here, after every model.")
    parser.add_argument("--tiny", action="store_true", help="tiny-llama / tiny-neox shapes, on any device (CPU too).")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    unknown = [m for m in models if m not in MODELS] + [a for a in args.analyses if a not in ANALYSES]
    if unknown or not models or args.steps <= WARMUP:
        parser.error(f"unknown {unknown} or --steps ≤ {WARMUP} (models: {', '.join(MODELS)}; "
                     f"analyses: {', '.join(ANALYSES)})")
    if not torch.cuda.is_available() and not args.tiny:
        print(json.dumps({"skipped": "no GPU: torch sees no CUDA device", "versions": versions()}))
        return 0

    device = "cuda" if torch.cuda.is_available() else "cpu"
    own_workdir = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="gpu-paper-scale-")) if own_workdir else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if not own_workdir and any(work.iterdir()):
        parser.error(f"--workdir {work} is not empty")
    (work / "logs").mkdir()
    deadline = time.monotonic() + args.budget
    report = {"benchmark": "gpu_paper_scale", "tiny": args.tiny, "device": device,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
              "gpu_memory_gib": gib(torch.cuda.get_device_properties(0).total_memory) if device == "cuda" else None,
              "versions": versions(),
              "settings": {"models": models, "steps": args.steps, "warmup_steps": WARMUP, "people": args.people,
                           "analyses": args.analyses, "budget_s": args.budget,
                           "analysis_timeout_s": args.analysis_timeout, "workdir": str(work),
                           "disk_free_gib": gib(shutil.disk_usage(work).free)},
              "targets": {"trace_ratio_max": 1.03, "peak_vs_plan": [0.9, 1.1]},
              "models": {key: new_model_record(key, args.tiny) for key in models},
              "seconds": None, "interrupted": False, "error": None}

    def save():
        report["seconds"] = round(time.monotonic() - T0, 1)
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=1))

    def interrupted(*_):  # `timeout` sends SIGTERM: report what was measured, as for Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        data = work / "data"
        generate_data(data, MODELS[models[0]]["preset"], args.people, work / "logs" / "generate.log")
        log(f"data: {args.people} people; {report['settings']['disk_free_gib']} GiB free in {work}")
        for i, key in enumerate(models):
            t0 = time.monotonic()
            share = t0 + (deadline - t0) / (len(models) - i)
            try:
                bench_model(key, report["models"][key], args, work, data, device, share, deadline)
            except Exception as e:  # this model's other items stay "not reached"; the next model runs
                report["models"][key]["error"] = f"{type(e).__name__}: {e}"[:600]
                log(f"{key}: {report['models'][key]['error']}")
            report["models"][key]["seconds"] = round(time.monotonic() - t0, 1)
            if not args.keep:
                shutil.rmtree(work / key, ignore_errors=True)
            save()
    except KeyboardInterrupt:
        report["interrupted"] = True
        if CURRENT["proc"] is not None and CURRENT["proc"].poll() is None:
            CURRENT["proc"].kill()
    except Exception as e:  # the data could not be generated
        report["error"] = f"{type(e).__name__}: {e}"[:600]
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        save()
        print(json.dumps(report))
    return 130 if report["interrupted"] else 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
