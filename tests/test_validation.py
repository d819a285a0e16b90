"""Every setting of [data], [train] and [analysis] is checked before any work (issue 18): ranges written
so that NaN and infinity fail them, integer bounds, option values, points lists. Each refusal is one
line that starts with `<section>.<key>`, so a caller that knows the file can prefix it."""

import dataclasses
import math

import pytest

from factrecall import cli
from factrecall.analysis.config import AnalysisConfig
from factrecall.data.generate import DataConfig
from factrecall.errors import UserError
from factrecall.study.config import study_config
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
        ("k", 0.0), ("k", -1.0), ("k", 100.5), ("k", NAN), ("k", INF),
        ("sweep", ()), ("sweep", (0.0,)), ("sweep", (1.0, 101.0)), ("sweep", (NAN,)), ("sweep", 1.0),
        ("ablation_k", 0.0), ("ablation_k", 150.0), ("ablation_k", NAN),
        ("matched_sizes", ()), ("matched_sizes", (0.0,)), ("matched_sizes", (1.5,)), ("matched_sizes", (NAN,)),
        ("matched_sizes", 0.001), ("ablation_size", 0.0), ("ablation_size", 1.5), ("ablation_size", NAN),
        ("graft_sparsities", (0.0,)), ("graft_sparsities", (1.0,)), ("graft_sparsities", (NAN,)),
        ("graft_sparsities", 0.1), ("null_draws", 1), ("null_draws", 2.5), ("random_rankings", 0),
        ("bootstrap", 1), ("skip", ("graft", "graft")), ("skip", "graft"), ("skip", (3,)), ("graft_bracket", 0.0), ("graft_bracket", 1.0), ("graft_bracket", NAN),
        ("ablation_seeds", 0), ("ablation_seeds", 1.5), ("ablation_eval_people", -1),
        ("graft_sparsity", 0.0), ("graft_sparsity", 1.0), ("graft_sparsity", NAN),
        ("graft_steps", -1), ("graft_lr", 0.0), ("graft_lr", -1.0), ("graft_lr", NAN), ("graft_lr", INF),
        ("graft_eval_people", -1), ("heads_on", "both"), ("heads_eval_people", -1),
        ("neuron_points", ()), ("neuron_points", (1.5,)), ("neuron_points", (-0.1, 0.5)), ("neuron_points", (NAN,)),
        ("attention_people", 0), ("consistency_people", 1), ("probe_people", 1), ("device", "gpu"),
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


def test_the_table_is_large_and_covers_every_field():
    assert len(CASES) >= 100
    for section, config in DEFAULTS.items():
        assert {f.name for f in dataclasses.fields(config)} == {key for key, _ in BAD[section]}, section


@pytest.mark.parametrize("section, key, value", CASES, ids=[f"{s}.{k}={v!r}" for s, k, v in CASES])
def test_a_bad_value_is_refused_naming_its_key(section, key, value):
    config = dataclasses.replace(DEFAULTS[section], **{key: value})
    with pytest.raises(UserError) as e:
        config.validate()
    message = str(e.value)
    assert message.startswith(f"{section}.") and f"{section}.{key}" in message, message
    assert "\n" not in message


def test_the_message_says_what_was_wrong_and_what_was_given():
    with pytest.raises(UserError, match=r"^analysis\.k must lie in \(0, 100\] \(got 0\.0\); "):
        AnalysisConfig(k=0.0).validate()
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
    ("analysis", {"k": 100.0, "sweep": (100.0, 1e-6), "neuron_points": (0.0, 1.0), "graft_sparsity": 0.5,
                  "graft_steps": 0, "ablation_k": 1, "heads_on": "grafted", "ablation_eval_people": 0}),
    ("data", {"people": 2, "seed": 0, "qa_train_fraction": 1.0, "first_year": 1, "last_year": 9999}),
    ("data", {"qa_train_fraction": 1e-9, "templates_per_attribute": 0, "pools": None, "exclude": ()}),
]


@pytest.mark.parametrize("section, overrides", GOOD)
def test_good_values_are_accepted(section, overrides):
    dataclasses.replace(DEFAULTS[section], **overrides).validate()


def test_data_pools_and_exclude_may_name_existing_directories(small_data):
    from factrecall.data.pools import default_pools_dir

    DataConfig(pools=str(default_pools_dir()), exclude=(str(small_data),)).validate()


@pytest.mark.parametrize("text, key", [
    ("[analysis]\nk = nan\n", "analysis.k"),
    ("[analysis]\nk = 0\n", "analysis.k"),
    ("[train]\nlr = inf\n", "train.lr"),
    ("[train]\nbeta2 = 1\n", "train.beta2"),
    ("[data]\nseed = -3\n", "data.seed"),
    ("[analysis]\nneuron_points = []\n", "analysis.neuron_points"),
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
