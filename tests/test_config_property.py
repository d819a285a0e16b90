"""Random study configs are accepted or refused in one line before any work starts (issue 18, items 3 and 6).

A config is TOML text with random sections (data, train, analysis, base and unknown ones), random keys
(every field of the sections' dataclasses, and unknown names) and random values of random types (ints up to
TOML's 64 bits, floats with NaN and infinities, strings, booleans, lists). `study_config` must either accept it
or raise `UserError`, never anything else; and `run_study` must refuse a refused config before it writes
anything into its output folder.
"""

import json
import math
import re
import tempfile
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factrecall.analysis.config import DEFAULT, FLAT_KEYS, AnalysisConfig, setting_names
from factrecall.config.study import BaseConfig, study_config
from factrecall.data.generate import DataConfig
from factrecall.errors import UserError
from factrecall.training.config import TrainConfig

SECTIONS = {"data": DataConfig, "train": TrainConfig, "analysis": AnalysisConfig, "base": BaseConfig}
# [analysis] takes dotted (`ablation.k`, a TOML dotted key: the nested table) and flat (`ablation_k`) names
KEYS = {section: sorted(setting_names()) if config is AnalysisConfig else [f.name for f in fields(config)]
        for section, config in SECTIONS.items()}
UNKNOWN_KEYS = ["epochz", "peoples", "K", "lr_", "bogus-key", "x1"]
WORDS = ["stage", "mix", "signed", "abs", "fp32", "bf16", "ddp", "fsdp", "auto", "cpu", "cuda", "finetuned",
         "grafted", "tiny-llama", "tiny-neox", "tiny-gpt2", "random", "language", "skill", "biases", "norms", "",
         "default", "smoke", "."]

# TOML integers are signed 64-bit; floats include NaN and both infinities
INTS = st.one_of(st.integers(-3, 1200), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**31, 2**32, 2**32 - 1]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.0, 1e-12]))
TEXT = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))  # short: a path component never exceeds NAME_MAX
SCALARS = st.one_of(INTS, FLOATS, TEXT, st.booleans())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.lists(st.one_of(INTS, FLOATS), min_size=1, max_size=4))


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _typed(kind) -> st.SearchStrategy:
    """Values of a field's own type (`int`, `float`, `bool`, `str`, `str | None`, `tuple[T, ...]`): the ones
    that get past the type check to the range checks."""
    if typing.get_origin(kind) is tuple:
        return st.lists(_typed(typing.get_args(kind)[0]), max_size=4)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return {int: INTS, float: st.one_of(FLOATS, INTS), bool: st.booleans(), str: TEXT}[kind]


def _analysis_hint(name: str):
    """The type of an [analysis] name: dotted, flat (its first target's) or top-level."""
    owner, _, key = FLAT_KEYS.get(name, (name,))[0].rpartition(".")
    return typing.get_type_hints(type(getattr(DEFAULT, owner)) if owner else AnalysisConfig)[key]


HINTS = {section: {name: _analysis_hint(name) for name in KEYS[section]} if config is AnalysisConfig
         else typing.get_type_hints(config) for section, config in SECTIONS.items()}


@st.composite
def config_texts(draw) -> str:
    """The text of a random study config (always valid TOML; whether its settings are valid is the question)."""
    lines = []
    if draw(st.booleans()):
        preset = st.sampled_from(["smoke"] * 4 + ["default", "paper-llama", "huge", 5])
        lines.append(f"preset = {_toml_value(draw(preset))}")
    if draw(st.integers(0, 4)) == 0:
        bases = st.lists(st.one_of(st.sampled_from(["random", "language", "skill"]), TEXT, INTS), max_size=3)
        lines.append(f"bases = {_toml_value(draw(bases))}")
    if draw(st.integers(0, 19)) == 0:
        lines.append(f"{draw(st.sampled_from(UNKNOWN_KEYS))} = {_toml_value(draw(SCALARS))}")
    sections = draw(st.lists(st.sampled_from(list(SECTIONS)), unique=True, max_size=4))
    if draw(st.integers(0, 19)) == 0:
        sections.append("extra")
    for section in sections:
        lines.append(f"[{section}]")
        known = KEYS.get(section, [])
        keys = draw(st.lists(st.sampled_from(known or UNKNOWN_KEYS), unique=True, max_size=4))
        for key in keys:
            typed = draw(st.integers(0, 2)) > 0 and key in HINTS.get(section, {})  # two in three: the field's type
            lines.append(f"{key} = {_toml_value(draw(_typed(HINTS[section][key]) if typed else VALUES))}")
        if draw(st.integers(0, 9)) == 0:
            unknown = draw(st.sampled_from(UNKNOWN_KEYS))
            if unknown not in keys:  # a key given twice is not TOML
                lines.append(f"{unknown} = {_toml_value(draw(VALUES))}")
    return "\n".join(lines) + "\n"


def _resolve(text: str, folder: Path):
    """study_config of `text` written to a file: the config, or the UserError it was refused with."""
    path = folder / "study.toml"
    path.write_text(text, encoding="utf-8")
    try:
        return study_config(None, path)
    except UserError as e:
        return e


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=config_texts())
def test_a_random_config_is_accepted_or_refused_with_a_user_error(text):
    tomllib.loads(text)  # valid TOML: what is tested is the settings, not the parser
    with tempfile.TemporaryDirectory() as folder:
        result = _resolve(text, Path(folder))  # any other exception fails the test with its traceback
        if isinstance(result, UserError):
            message = str(result)
            assert message.strip() and "\n" not in message, message  # one line


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(text=config_texts())
def test_a_refused_config_is_refused_by_run_study_before_it_writes(text, monkeypatch_module):
    from factrecall.study.runner import run_study

    with tempfile.TemporaryDirectory() as folder:
        refused = _resolve(text, Path(folder))
        if not isinstance(refused, UserError):
            return  # an accepted config would run a whole study; its check is the test above
        out = Path(folder) / "study"
        with pytest.raises(UserError):
            run_study(out, config_file=Path(folder) / "study.toml", log=lambda _: None)
        assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Any study that gets past its config fails at once instead of running (hypothesis forbids function-scoped
    fixtures in @given tests)."""
    from factrecall.study import runner

    def started(*_, **__):
        raise AssertionError("run_study started work on a config that study_config refuses")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "generate_dataset", started)
        yield patch


# Examples of each family, kept whatever hypothesis draws: (config body, what the refusal must say)
EXAMPLES = [
    ("[analysis]\nk = 0\n", r"analysis\.shared\.k"),
    ("[analysis]\nk = nan\n", r"analysis\.shared\.k"),
    ("[analysis]\nsweep = []\n", r"analysis\.shared\.sweep"),
    ("[analysis.shared]\nsweep = [1, inf]\n", r"analysis\.shared\.sweep"),
    ("[analysis.graft]\nbracket = 1.0\n", r"analysis\.graft\.bracket"),
    ("[train]\nlr = inf\n", r"train\.lr"),
    ("[train]\nseed = -1\n", r"train\.seed"),
    ("[train]\nbeta1 = nan\n", r"train\.beta1"),
    ("[train]\nbio_batch_size = 9223372036854775807\ngrad_accum = 0\n", r"train\.grad_accum"),
    ("[data]\nqa_train_fraction = 1.0\n", r"data\.qa_train_fraction"),
    ("[data]\nqa_train_fraction = nan\n", r"data\.qa_train_fraction"),
    ("[data]\npeople = -9223372036854775808\n", r"data\.people"),
    ("[base]\npeople = 0\n", r"base\.people"),
    ("[base]\nepochs = -1\n", r"base\.epochs"),
    ("[base]\nseed = 4294967296\n", r"base\.seed"),
    ("[train]\nstrategy = 'mix'\n", r"strategy"),
    ("[extra]\nk = 1\n", r"extra"),
    ("[data]\npeople = 'many'\n", r"people"),
    ("bases = ['random', 'random']\n", r"bases"),
    ("preset = 5\n", r"preset"),
    ("preset = 'huge'\n", r"preset"),
]


def _id(example) -> str:
    body = example.values[0] if hasattr(example, "values") else example[0]
    return body.strip().replace("\n", " ")


@pytest.mark.parametrize("body, message", EXAMPLES, ids=[_id(e) for e in EXAMPLES])
def test_each_family_is_refused_naming_the_file_section_and_key(body, message, tmp_path):
    result = _resolve(body if body.startswith("preset") else "preset = 'smoke'\n" + body, tmp_path)
    assert isinstance(result, UserError), f"accepted: {body!r}"
    assert "study.toml" in str(result) and re.search(message, str(result)), str(result)


def test_a_population_beyond_the_name_pools_is_refused_when_the_config_is_resolved(tmp_path):
    """Default pools hold ~229 M full names and a population may use half: 2e8 people cannot be drawn.
    Unrefused, the study's disk check first builds the whole training schedule (O(people) time and memory)."""
    result = _resolve("preset = 'smoke'\n[data]\npeople = 200000000\n", tmp_path)
    assert isinstance(result, UserError) and "people" in str(result), result


# a string that is not a path the OS accepts (a component longer than NAME_MAX, a NUL) is a UserError
@pytest.mark.parametrize("body", [pytest.param(f"[data]\npools = {json.dumps('p' * 300)}\n",
                                               id="pools"),
                                  pytest.param(f"bases = [{json.dumps('b' * 300)}]\n", id="bases"),
                                  pytest.param(f"[data]\nexclude = [{json.dumps('e' * 300)}]\n",
                                               id="exclude"),
                                  pytest.param("[data]\npools = \"a\\u0000b\"\n", id="pools-nul"),
                                  pytest.param("bases = [\"a\\u0000b\"]\n", id="bases-nul")])
def test_an_impossible_path_is_a_user_error(body, tmp_path):
    result = _resolve("preset = 'smoke'\n" + body, tmp_path)
    assert isinstance(result, UserError), result


@pytest.mark.parametrize("model", [pytest.param("m" * 300, id="too-long"), "no-such-model", "a\u0000b", "/", "."])
def test_a_study_on_a_model_that_is_not_there_is_refused_before_work(model, tmp_path, monkeypatch_module):
    """`[train] model` is resolved by run_study (study_config accepts any string): refused before any step."""
    from factrecall.study.runner import run_study

    config = tmp_path / "study.toml"
    config.write_text(f"preset = 'smoke'\n[train]\nmodel = {_toml_string(model)}\n", encoding="utf-8")
    out = tmp_path / "study"
    with pytest.raises(UserError, match="model"):
        run_study(out, config_file=config, log=lambda _: None)
    assert not out.exists() or not any(out.iterdir())
