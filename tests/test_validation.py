"""Every setting of [data], [train] and [analysis] is checked before any work (issue 18): ranges written
so that NaN and infinity fail them, integer bounds, option values, points lists. Each refusal is one
line that starts with `<section>.<key>`, so a caller that knows the file can prefix it."""

import dataclasses
import math

import pytest

from factrecall import cli
from factrecall.analysis.config import AnalysisConfig
from factrecall.config.study import study_config
from factrecall.data.generate import DataConfig
from factrecall.errors import UserError
from factrecall.training.config import TrainConfig

NAN, INF = math.nan, math.inf

BAD = {
    "train": [
        ("strategy", "both"), ("model", ""), ("seed", -1), ("seed", 2**32), ("seed", 1.5), ("seed", True),
        ("bio_epochs", -1), ("qa_epochs", -2), ("bio_epochs", 1.5), ("max_steps", -1),
        ("bio_batch_size", 0), ("qa_batch_size", 0), ("grad_accum", 0), ("bio_batch_size", 2.5),
        ("lr", 0.0), ("lr", -1.0), ("lr", NAN), ("lr", INF), ("qa_phase_lr", -1e-3), ("qa_phase_lr", NAN),
        ("qa_phase_weight_decay", -0.5), ("qa_phase_weight_decay", NAN), ("qa_stop_at", 1.5), ("qa_stop_at", -0.1),
        ("qa_stop_at", NAN), ("qa_phase_lora_rank", -1), ("qa_phase_lora_rank", 2.0), ("qa_phase_lora_rank", True),
        ("warmup", 1.0), ("warmup", -0.1), ("warmup", NAN), ("min_lr_ratio", 1.5), ("min_lr_ratio", NAN),
        ("weight_decay", -0.1), ("weight_decay", NAN), ("weight_decay", INF),
        ("beta1", 1.0), ("beta1", -0.1), ("beta1", NAN), ("beta2", 1.0), ("beta2", INF),
        ("clip", -1.0), ("clip", NAN), ("clip", INF),
        ("eval_every", -1), ("eval_people", -1), ("checkpoint_every", -1), ("grad_consistency", -1),
        ("trace", "yes"), ("trace_mode", "square"), ("trace_normalization", "per_example"), ("qa_loss", "eos"), ("trace_include", ("heads",)), ("precision", "fp16"),
        ("gradient_checkpointing", 1), ("device", "tpu"), ("distributed", "zero3"),
    ],
    "analysis": [
        ("shared.k", 0.0), ("shared.k", -1.0), ("shared.k", 100.5), ("shared.k", NAN), ("shared.k", INF),
        ("shared.sweep", ()), ("shared.sweep", (0.0,)), ("shared.sweep", (1.0, 101.0)), ("shared.sweep", (NAN,)),
        ("shared.sweep", 1.0), ("ablation.k", 0.0), ("ablation.k", 150.0), ("ablation.k", NAN),
        ("shared.matched_sizes", ()), ("shared.matched_sizes", (0.0,)), ("shared.matched_sizes", (1.5,)),
        ("shared.matched_sizes", (NAN,)), ("shared.matched_sizes", 0.001), ("ablation.size", -0.1),
        ("ablation.size", 1.5), ("ablation.size", NAN), ("graft.sparsities", (0.0,)), ("graft.sparsities", (1.0,)),
        ("graft.sparsities", (NAN,)), ("graft.sparsities", 0.1), ("shared.null_draws", 1), ("shared.null_draws", 2.5),
        ("heads.random_rankings", 0), ("consistency.bootstrap", 1), ("skip", ("graft", "graft")), ("skip", "graft"),
        ("skip", (3,)), ("graft.bracket", 0.0), ("graft.bracket", 1.0), ("graft.bracket", NAN), ("ablation.seeds", 0),
        ("ablation.seeds", 1.5), ("ablation.eval_people", -1), ("graft.sparsity", 0.0), ("graft.sparsity", 1.0),
        ("graft.sparsity", NAN), ("graft.steps", -1), ("graft.lr", 0.0), ("graft.lr", -1.0), ("graft.lr", NAN),
        ("graft.lr", INF), ("graft.eval_people", -1), ("heads.on", "both"), ("heads.eval_people", -1),
        ("neurons.points", ()), ("neurons.points", (1.5,)), ("neurons.points", (-0.1, 0.5)),
        ("neurons.points", (NAN,)), ("attention.people", 0), ("consistency.people", 1),
        ("consistency.probe_people", 1), ("device", "gpu"), ("neurons.on", "both"), ("neurons.eval_people", -1),
        ("forgetting.eval_people", -1),
    ],
    "data": [
        ("people", 1), ("people", 0), ("people", 2.5), ("people", NAN), ("seed", -1), ("seed", 2**32),
        ("qa_train_fraction", 0.0), ("qa_train_fraction", 1.5), ("qa_train_fraction", NAN),
        ("qa_train_fraction", INF), ("bios_per_person", 0), ("templates_per_attribute", -1),
        ("permute", "yes"), ("fullname", 1), ("question_paraphrases", None), ("first_year", 0),
        ("last_year", 10000), ("first_year", 2100), ("pools", "/nonexistent/pools"),
        ("exclude", ("/nonexistent/data",)),
    ],
}
DEFAULTS = {"train": TrainConfig(), "analysis": AnalysisConfig(), "data": DataConfig()}
CASES = [(section, key, value) for section, cases in BAD.items() for key, value in cases]


def _keys(config) -> set[str]:
    """Every setting of a config dataclass; an analysis's as `<analysis>.<setting>`."""
    return {f"{f.name}.{g.name}" if dataclasses.is_dataclass(f.default) else f.name
            for f in dataclasses.fields(config) for g in (dataclasses.fields(f.default) if dataclasses.is_dataclass(
                f.default) else [f])}


def _replaced(config, overrides: dict):
    """`config` with `overrides`, a dotted key replacing a setting of one analysis."""
    nested = {}
    for key, value in overrides.items():
        owner, _, name = key.rpartition(".")
        nested.setdefault(owner, {})[name] = value
    top = nested.pop("", {})
    return dataclasses.replace(config, **top, **{o: dataclasses.replace(getattr(config, o), **v) for o, v in nested.items()})


def test_the_table_is_large_and_covers_every_field():
    assert len(CASES) >= 100
    for section, config in DEFAULTS.items():
        assert _keys(config) == {key for key, _ in BAD[section]}, section


@pytest.mark.parametrize("section, key, value", CASES, ids=[f"{s}.{k}={v!r}" for s, k, v in CASES])
def test_a_bad_value_is_refused_naming_its_key(section, key, value):
    config = _replaced(DEFAULTS[section], {key: value})
    with pytest.raises(UserError) as e:
        config.validate()
    message = str(e.value)
    assert message.startswith(f"{section}.") and f"{section}.{key}" in message, message
    assert "\n" not in message


def test_the_message_says_what_was_wrong_and_what_was_given():
    with pytest.raises(UserError, match=r"^analysis\.shared\.k must lie in \(0, 100\] \(got 0\.0\); "):
        _replaced(AnalysisConfig(), {"shared.k": 0.0}).validate()
    with pytest.raises(UserError, match=r"^train\.lr must be positive \(got nan\); give a finite number > 0$"):
        TrainConfig(lr=NAN).validate()
    with pytest.raises(UserError, match=r"^data\.people: --people must be at least 2 \(got 1\)"):
        DataConfig(people=1).validate()
    with pytest.raises(UserError, match=r"^train\.qa_epochs and|^train\.bio_epochs and"):
        TrainConfig(strategy="stage", qa_epochs=0).validate()  # Stage needs both tasks


GOOD = [
    ("train", {"seed": 2**32 - 1, "lr": 1e-9, "warmup": 0.0, "min_lr_ratio": 1.0, "beta1": 0.0, "clip": 0.0,
               "qa_epochs": 0, "trace_include": ("biases", "norms"), "max_steps": 0, "qa_phase_lr": 0.0}),
    ("train", {"strategy": "stage", "bio_epochs": 1, "qa_epochs": 1, "precision": "bf16", "distributed": "fsdp"}),
    ("analysis", {"shared.k": 100.0, "shared.sweep": (100.0, 1e-6), "neurons.points": (0.0, 1.0),
                  "graft.sparsity": 0.5, "graft.steps": 0, "ablation.k": 1, "heads.on": "grafted",
                  "ablation.eval_people": 0}),
    ("data", {"people": 2, "seed": 0, "qa_train_fraction": 1.0, "first_year": 1, "last_year": 9999}),
    ("data", {"qa_train_fraction": 1e-9, "templates_per_attribute": 0, "pools": None, "exclude": ()}),
]


@pytest.mark.parametrize("section, overrides", GOOD)
def test_good_values_are_accepted(section, overrides):
    _replaced(DEFAULTS[section], overrides).validate()


def test_data_pools_and_exclude_may_name_existing_directories(small_data):
    from factrecall.data.pools import default_pools_dir

    DataConfig(pools=str(default_pools_dir()), exclude=(str(small_data),)).validate()


@pytest.mark.parametrize("text, key", [
    ("[analysis]\nk = nan\n", "analysis.shared.k"),
    ("[analysis.shared]\nk = 0\n", "analysis.shared.k"),
    ("[analysis.ablation]\nk = 0\n", "analysis.ablation.k"),
    ("[train]\nlr = inf\n", "train.lr"),
    ("[train]\nbeta2 = 1\n", "train.beta2"),
    ("[data]\nseed = -3\n", "data.seed"),
    ("[analysis]\nneuron_points = []\n", "analysis.neurons.points"),
])
def test_a_study_config_is_refused_before_any_work(tmp_path, text, key):
    """TOML has nan and inf: they reach validate() and fail it when the config is resolved."""
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        study_config(None, path)


def test_the_cli_refuses_nan_in_one_line_before_writing(small_data, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "argv", ["factrecall", "train", "--data", str(small_data), "--out",
                                      str(tmp_path / "run"), "--strategy", "mix", "--lr", "nan"])
    cli._DEBUG["on"] = False
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "factrecall: error: train.lr must be positive (got nan); " \
                                        "give a finite number > 0\n"
    assert not (tmp_path / "run").exists()
