"""A model directory's tensors under the names the loaded model gives them.

transformers 5 stores some tensors under other names than the module's (GPT-NeoX: `embed_out.weight`
on disk, `lm_head.weight` in the model); analyses that read θ_pre and θ_ft from the files must map them.
"""

import pytest
import torch
from safetensors import safe_open

from factrecall.analysis.ablation import ablate_run
from factrecall.analysis.graft import graft_run
from factrecall.analysis.run import load_pair
from factrecall.analysis.shared import analyze_run
from factrecall.analysis.weights import analysis_model
from factrecall.config.presets import train_config
from factrecall.errors import UserError
from factrecall.models.tensor_files import checkpoint_keys, model_weights
from factrecall.training.loop import train

CASES = [  # (parameters, stored, expected map or error)
    ({"a.weight": (2, 3)}, {"a.weight": (2, 3)}, {"a.weight": "a.weight"}),
    ({"lm_head.weight": (9, 4), "embed_in.weight": (9, 4)}, {"embed_out.weight": (9, 4), "embed_in.weight": (9, 4)},
     {"lm_head.weight": "embed_out.weight", "embed_in.weight": "embed_in.weight"}),
    ({"layers.1.norm.weight": (4,)}, {"layers.1.ln.weight": (4,), "layers.2.ln.weight": (4,)},
     {"layers.1.norm.weight": "layers.1.ln.weight"}),  # the layer number decides
    ({"head.weight": (9, 4)}, {"out.weight": (4, 9)}, "has no tensor"),  # another shape
    ({"x.weight": (4,), "y.weight": (4,)}, {"p.weight": (4,), "q.weight": (4,)}, "has no unique tensor"),
]


@pytest.mark.parametrize("parameters, stored, expected", CASES)
def test_checkpoint_keys(parameters, stored, expected):
    if isinstance(expected, str):
        with pytest.raises(UserError, match=expected):
            checkpoint_keys(parameters, stored, "here")
    else:
        assert checkpoint_keys(parameters, stored, "here") == expected


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-neox", "tiny-gpt2"])
def test_analyses_read_theta_pre_and_theta_ft_by_parameter_name(preset, small_data, tmp_path):
    run = tmp_path / "run"
    train(train_config("smoke", strategy="mix", model=preset, max_steps=2, eval_people=2, checkpoint_every=0),
          small_data, run)
    model, _, pre = load_pair(run, "test", device="cpu")
    params = dict(model.named_parameters())
    assert pre.keys() == params.keys()
    ft = model_weights(run / "model", "θ_ft")
    for name, p in params.items():  # the files' tensors are the loaded model's, name for name
        assert torch.equal(ft[name], p.detach()), name
    with safe_open(str(run / "model" / "model.safetensors"), framework="pt") as st:
        stored = set(st.keys())
    if preset == "tiny-neox":  # the case this exists for
        assert "embed_out.weight" in stored and "lm_head.weight" in params
    analyze_run(run)
    ablate_run(run, k=5, seeds=1, eval_people=2, device="cpu")
    graft_run(run, sparsity=0.5, steps=1, eval_people=2, device="cpu")
    grafted, _ = analysis_model(run, "grafted", device="cpu")
    assert {n for n, _ in grafted.named_parameters()} == params.keys()


def test_an_untied_unembedding_can_be_traced():
    from factrecall.models.adapters import tracked_parameter_names
    from factrecall.models.tiny import build_tiny_model
    from factrecall.models.tokenizer import word_tokenizer

    model = build_tiny_model("tiny-neox", word_tokenizer(["a b c"]), seed=0)  # the only untied preset
    extra = set(tracked_parameter_names(model, ("unembedding",))) - set(tracked_parameter_names(model))
    assert len(extra) == 1 and model.get_parameter(extra.pop()) is model.get_output_embeddings().weight
