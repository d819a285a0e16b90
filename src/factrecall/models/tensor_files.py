"""The one reader of safetensors files: model weights, traces and checkpoints, a tensor at a time.

At 3 B parameters one float32 copy of a model is 12.9 GB and its trace 21 GB, so nothing reads a
whole file: `TensorFiles` reads the headers on opening and one tensor per lookup. A model directory's
tensors are offered under the names the loaded model gives its parameters (`model_weights`), which
transformers 5 does not always store them under (GPT-NeoX: `embed_out.weight` on disk for the module's
`lm_head.weight`); `save_pretrained` writes the stored names back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from factrecall.errors import UserError
from factrecall.models.loading import check_model_dir, parameter_shapes

_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class TensorFiles(Mapping):
    """The tensors of safetensors files by name (one file, or a directory's `*.safetensors`), each
    read from disk when asked for; opening reads the headers only (`shapes`, `dtypes`). `keys`
    ({name: stored key}) offers stored tensors under other names (`model_weights`)."""

    def __init__(self, location: Path, what: str = "weights", keys: dict[str, str] | None = None):
        location, self.what = Path(location), what
        stored: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}  # stored key -> safetensors dtype ("BF16", "F32", …)
        self._file: dict[str, Path] = {}
        for f in [location] if location.is_file() else sorted(location.glob("*.safetensors")):
            try:
                with safe_open(str(f), framework="pt") as st:
                    for key in st.keys():
                        header = st.get_slice(key)
                        stored[key], self.dtypes[key] = tuple(header.get_shape()), header.get_dtype()
                        self._file[key] = f
            except Exception as e:  # safetensors raises its own error types for damaged headers
                raise UserError(f"{what}: {f} is not a readable safetensors file ({e})") from None
        self._key = keys if keys is not None else {key: key for key in stored}
        self.shapes = {name: stored[key] for name, key in self._key.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        key = self._key[name]  # KeyError for a name it does not offer
        try:
            with safe_open(str(self._file[key]), framework="pt") as st:
                return st.get_tensor(key)
        except Exception as e:
            raise UserError(f"{self.what}: {self._file[key]} is damaged or truncated at {key} ({e})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def checkpoint_dtype(path: Path) -> str:
    """The floating dtype(s) the weights of model directory `path` are stored in, e.g. "bfloat16"
    ("bfloat16+float32" for a mixed checkpoint); from the headers only."""
    check_model_dir(path)
    found = set(TensorFiles(path, f"model directory {path}").dtypes.values())
    return "+".join(sorted(_DTYPE_NAMES[d] for d in found if d in _DTYPE_NAMES)) or "none"


def checkpoint_keys(parameters: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]], where: str
                    ) -> dict[str, str]:
    """{parameter name: its key in the checkpoint files} from both sides' names and shapes: a parameter
    whose name is not stored takes the one unclaimed stored tensor of its shape, layer numbers and final
    name part."""
    keys = {name: name for name in parameters if name in stored}
    unclaimed = set(stored) - set(keys.values())

    def signature(name: str, shape) -> tuple:
        return tuple(shape), re.findall(r"\d+", name), name.rsplit(".", 1)[-1]

    for name in parameters.keys() - keys.keys():
        match = [k for k in unclaimed if signature(k, stored[k]) == signature(name, parameters[name])]
        if len(match) != 1:
            raise UserError(f"{where}: parameter {name} {tuple(parameters[name])} has no "
                            f"{'unique ' if match else ''}tensor in the checkpoint files; the files belong to "
                            f"another model or another transformers version wrote them")
        keys[name] = match[0]
        unclaimed.discard(match[0])
    return keys


def model_weights(path: Path, what: str, parameters: dict[str, tuple[int, ...]] | None = None) -> TensorFiles:
    """The parameters of model directory `path` under the names the loaded model gives them, read a tensor
    at a time. `parameters` ({name: shape}, e.g. of a model already loaded) saves building the model's
    skeleton on the meta device to learn them."""
    stored = TensorFiles(path, what).shapes
    parameters = parameters if parameters is not None else parameter_shapes(path)
    return TensorFiles(path, what, checkpoint_keys(parameters, stored, f"{what} in {path}"))
