import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factrecall.analysis.config import FLAT_KEYS
from factrecall.config.presets import PRESETS
from factrecall.config.study import study_config
from factrecall.errors import UserError


def _write(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_config_file_overrides_the_preset(tmp_path):
    path = _write(tmp_path, 'preset = "smoke"\n[data]\npeople = 30\n[train]\nlr = 1\n'
                            '[analysis]\nsweep = [0.5, 2]\nheads_on = "grafted"\n')
    c = study_config(None, path)
    assert c.preset == "smoke" and c.data.people == 30 and c.data.bios_per_person == 2  # the rest from smoke
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float)  # an int is a valid float
    assert c.analysis.shared.sweep == (0.5, 2.0)  # flat names of earlier configs still read
    assert c.analysis.heads.on == c.analysis.neurons.on == "grafted"  # heads_on set both, as before


def test_an_analysis_takes_its_own_table(tmp_path):
    """`[analysis.ablation] k = 2` sets the ablation's k only; the flat name and the table are one setting."""
    c = study_config(None, _write(tmp_path, '[analysis.ablation]\nk = 2\nseeds = 1\n[analysis.heads]\non = "grafted"\n'))
    assert (c.analysis.ablation.k, c.analysis.ablation.seeds, c.analysis.shared.k) == (2.0, 1, 1.0)
    assert c.analysis.heads.on == "grafted" and c.analysis.neurons.on == "finetuned"
    assert study_config(None, _write(tmp_path, "[analysis]\nablation_k = 2\n")).analysis == \
        study_config(None, _write(tmp_path, "[analysis.ablation]\nk = 2\n")).analysis
    for text, message in (("[analysis]\nablation_k = 2\n[analysis.ablation]\nk = 3\n", "ablation.k is given twice"),
                          ("[analysis.ablation]\nkk = 2\n", "'ablation.kk' (did you mean 'ablation.k'?)"),
                          ("[analysis.ablation]\nk = 'x'\n", "'ablation.k' must be float"),
                          ("[analysis.nothing]\nk = 1\n", "study.toml: analysis setting 'nothing'; known: ablation.eval_people")):
        with pytest.raises(UserError, match=re.escape(message)):
            study_config(None, _write(tmp_path, text))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_validates(name):
    c = study_config(name)
    assert c.preset == name and c.train.model
    assert c.data.people >= 2


@pytest.mark.parametrize("text, message", [
    ("[train]\nlrr = 1\n", r"unknown .*train setting 'lrr' \(did you mean 'lr'\?\); known: .*lr"),
    ("[train]\nlr = 'fast'\n", "train setting 'lr' must be float"),
    ("[data]\npeople = 1.5\n", "data setting 'people' must be int"),
    ("[data]\npermute = 1\n", "data setting 'permute' must be bool"),
    ("[analysis]\nsweep = 1\n", "analysis setting 'shared.sweep' must be a list of float"),
    ("[analysis]\nsweep = [1, 'x']\n", r"analysis setting 'shared.sweep'\[1\] must be float"),
    ("[model]\nname = 'x'\n", "unknown section or key 'model'"),
    ("[train]\nstrategy = 'mix'\n", "train.strategy cannot be set"),
    ("preset = 'paper'\n", "preset must name one of default, small, smoke"),
    ("[data]\npeople = 1\n", "--people must be at least 2"),
    ("[train\n", "is not valid TOML"),
    ("train = 3\n", r"\[train\] must be a table"),
    ("[data]\nqa_train_fraction = 1.0\n", r"study\.toml: data\.qa_train_fraction must be below 1 in a study"),
    ("[analysis]\nk = 0\n", r"study\.toml: analysis\.shared\.k must"),
    ("[train]\nlr = nan\n", r"study\.toml: train\.lr must be positive"),
    ("[base]\nepochs = 0\n", r"study\.toml: base\.epochs must be an integer ≥ 1"),
    ("[base]\nseed = -1\n", r"base\.seed must be an integer ≥ 0 and ≤ 4294967295"),
])
def test_bad_config_files_name_the_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        study_config(None, _write(tmp_path, text))


def test_missing_config_file_and_conflicting_preset(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        study_config(None, tmp_path / "nope.toml")
    with pytest.raises(UserError, match="disagrees"):
        study_config("default", _write(tmp_path, 'preset = "smoke"\n'))


# text without control characters or lone surrogates: TOML cannot hold those (a DEL once made the test itself fail)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=5)
_values = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), _text, st.booleans(),
                    st.lists(st.integers(0, 3), max_size=3))


@settings(max_examples=60, deadline=None)
@given(section=st.sampled_from(["data", "train", "analysis"]),
       key=st.sampled_from(["people", "lr", "seed", "sweep", "permute", "model", "heads_on", "graft_steps"]),
       value=_values)
def test_any_config_value_is_accepted_or_refused_cleanly(tmp_path_factory, section, key, value):
    """Whatever a file holds, the result is a config or a UserError, never another exception."""
    import json
    import tomllib

    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(f"[{section}]\n{key} = {json.dumps(value, ensure_ascii=False)}\n")  # JSON scalars and lists are TOML too
    assert tomllib.loads(path.read_text())[section][key] == value
    try:
        c = study_config(None, path)
    except UserError as e:
        assert "\n" not in str(e)
    else:
        owner, _, name = FLAT_KEYS[key][0].rpartition(".") if section == "analysis" else ("", "", key)
        config = getattr(c, section)
        assert getattr(getattr(config, owner) if owner else config, name) == (
            tuple(value) if isinstance(value, list) else value)


def test_two_base_directories_of_one_folder_name_are_refused(tmp_path):
    """Each base's study is bases/<name>/ (a directory's name is its folder's): two `model` folders would share it."""
    from factrecall.models.tiny import build_tiny_model
    from factrecall.models.tokenizer import word_tokenizer

    tokenizer = word_tokenizer(["a", "b"])
    for parent in ("one", "two"):
        model = build_tiny_model("tiny-llama", tokenizer, seed=0)
        model.save_pretrained(tmp_path / parent / "model")
    text = f'bases = ["random", "{tmp_path / "one" / "model"}", "{tmp_path / "two" / "model"}"]\n'
    with pytest.raises(UserError, match="two bases are named 'model'"):
        study_config(None, _write(tmp_path, text))
