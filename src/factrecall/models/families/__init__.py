"""Every supported model family, one module each (`family.Family`): adding a family is its module, one entry
here and its tests (tests/test_adapters.py, tests/test_plan.py)."""

from __future__ import annotations

from factrecall.errors import UserError
from factrecall.models.families import gpt2, gpt_neox, llama
from factrecall.models.family import Family

FAMILIES: tuple[Family, ...] = (llama.FAMILY, gpt_neox.FAMILY, gpt2.FAMILY)
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
_BY_MODEL_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def family_for(config) -> Family:
    """The family of a model config (`config.model_type`); an unsupported one is a UserError."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise UserError(f"model family {model_type!r} is not supported; supported: {', '.join(sorted(_BY_MODEL_TYPE))}")
    return _BY_MODEL_TYPE[model_type]
