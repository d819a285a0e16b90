"""Reading one forward pass: residual stream, attention patterns, logit lens, direct contributions.

Analysis models load with eager attention (fast kernels never materialise attention weights);
training keeps the fast kernel. Hooks sit on the real Hugging Face modules: nothing is converted.

**Logit lens.** The residual stream x_l after layer l (x_0 = the embeddings) read out through the
model's own final norm and unembedding:

    lens_l = W_U · norm_f(x_l)        l = 0 … L, and lens_L is the model's logits

**Direct contributions.** The final residual x_L is a sum of components: the embeddings, every
head's output (its `head_dim` slice of the output projection's *input* times its columns of the
projection), the projection's bias and every MLP's output. With the final norm's scale frozen at
its value on the actual x_L (σ = standard deviation for LayerNorm, root mean square for RMSNorm)
the readout is linear, and component c contributes

    W_U · (w ⊙ (c − mean(c)) / σ)     LayerNorm;   W_U · (w ⊙ c / σ)   RMSNorm

The contributions plus the norm's bias term W_U·b and the unembedding's bias sum exactly to the
logits. Freezing σ is the linearisation: a component's share is what it adds at the actual
normalisation, not what the logits would be without it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from factrecall.errors import UserError
from factrecall.models.adapters import adapter_for, geometry, tensor_units
from factrecall.models.hooks import temporary_hooks


@dataclass(frozen=True)
class Readout:
    """What one forward pass over a batch [B, T] left behind (all on the CPU, float32).

    `residual` [L+1, B, T, D]: x_0 (embeddings) … x_L (before the final norm); `head_inputs`
    [L, B, T, H·d]: the output projection's input; `attn_out`, `mlp_out` [L, B, T, D]: what each
    block's attention and MLP add to the residual; `attentions` [L, B, H, T, T] (when asked for);
    `logits` [B, T, V].
    """
    residual: torch.Tensor
    head_inputs: torch.Tensor
    attn_out: torch.Tensor
    mlp_out: torch.Tensor
    attentions: torch.Tensor | None
    logits: torch.Tensor


@contextmanager
def _hooks(model, record: dict[str, list]):
    a = adapter_for(model.config)
    layers = model.get_submodule(a.layers)
    mlp_out = next(m for m, role in a.mlp.items() if role == "out")

    def first_input(module, args, kwargs):
        record["residual"].append(args[0] if args else kwargs["hidden_states"])

    def output(key):
        def hook(module, args, out):
            record[key].append(out[0] if isinstance(out, tuple) else out)
        return hook

    hooks = [(layers[0], "pre_kwargs", first_input)]
    for layer in layers:
        hooks += [(layer, "forward", output("residual")),
                  (layer.get_submodule(a.attn_out), "pre", lambda m, args: record["head_inputs"].append(args[0])),
                  (layer.get_submodule(a.attn_out), "forward", output("attn_out")),
                  (layer.get_submodule(mlp_out), "forward", output("mlp_out"))]
    with temporary_hooks(hooks):
        yield


@torch.no_grad()
def read(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
         attentions: bool = True) -> Readout:
    """One forward pass over `input_ids` [B, T] with everything `Readout` holds recorded."""
    device = next(model.parameters()).device
    record: dict[str, list] = {"residual": [], "head_inputs": [], "attn_out": [], "mlp_out": []}
    with _hooks(model, record):
        out = model(input_ids=input_ids.to(device),
                    attention_mask=None if attention_mask is None else attention_mask.to(device),
                    output_attentions=attentions, use_cache=False)

    def stack(key):
        return torch.stack([t.float().cpu() for t in record[key]])

    return Readout(stack("residual"), stack("head_inputs"), stack("attn_out"), stack("mlp_out"),
                   torch.stack([t.float().cpu() for t in out.attentions]) if attentions else None,
                   out.logits.float().cpu())


def _final_norm(model):
    return model.get_submodule(adapter_for(model.config).final_norm)


@torch.no_grad()
def logit_lens(model, x: torch.Tensor) -> torch.Tensor:
    """W_U · norm_f(x) for residual vectors x [..., D] → logits [..., V]."""
    p = next(model.parameters())
    return model.get_output_embeddings()(_final_norm(model)(x.to(p.device, p.dtype))).float().cpu()


def head_outputs(model, readout: Readout, layer: int, b: int, t: int) -> torch.Tensor:
    """[H, D]: each head's output at (b, t) — its slice of the output projection's input times its columns."""
    config = model.config
    a, g = adapter_for(config), geometry(config)
    name = f"{a.layers}.{layer}.{a.attn_out}.weight"
    weight = model.get_parameter(name).detach().float().cpu()
    w_in_out = weight if a.transposed else weight.T  # [H·d, D]
    owner = tensor_units(config, name).feature_unit  # input feature → head (the adapter's slices)
    z = readout.head_inputs[layer, b, t]
    return torch.stack([z[owner == h] @ w_in_out[owner == h] for h in range(g.n_heads)])


@torch.no_grad()
def direct_contributions(model, readout: Readout, b: int, t: int) -> dict[str, torch.Tensor]:
    """{component: logits [V]} at position (b, t), summing to the model's logits there (see the module doc).

    Components: `embeddings`, `L{l}.H{h}` per head, `L{l}.attn_bias`, `L{l}.mlp`, `final_norm_bias`,
    `unembedding_bias` (the last three only when the model has those biases).
    """
    norm, unembed = _final_norm(model), model.get_output_embeddings()
    x = readout.residual[-1, b, t]
    weight = norm.weight.detach().float().cpu()
    if isinstance(norm, torch.nn.LayerNorm):
        sigma = torch.sqrt(x.var(unbiased=False) + norm.eps)
        linear = lambda c: weight * (c - c.mean(-1, keepdim=True)) / sigma  # noqa: E731
    elif hasattr(norm, "variance_epsilon"):  # RMSNorm (Llama, Mistral, Qwen2)
        sigma = torch.sqrt(x.pow(2).mean() + norm.variance_epsilon)
        linear = lambda c: weight * c / sigma  # noqa: E731
    else:
        raise UserError(f"final norm {type(norm).__name__} is neither LayerNorm nor RMSNorm; direct contributions "
                        f"need one of them")
    w_u = unembed.weight.detach().float().cpu()  # [V, D]
    a = adapter_for(model.config)
    parts = {"embeddings": readout.residual[0, b, t]}
    for layer in range(readout.head_inputs.shape[0]):
        parts.update({f"L{layer}.H{h}": out for h, out in enumerate(head_outputs(model, readout, layer, b, t))})
        bias = model.get_submodule(f"{a.layers}.{layer}.{a.attn_out}").bias
        if bias is not None:
            parts[f"L{layer}.attn_bias"] = bias.detach().float().cpu()
        parts[f"L{layer}.mlp"] = readout.mlp_out[layer, b, t]
    logits = {name: w_u @ linear(c) for name, c in parts.items()}
    if getattr(norm, "bias", None) is not None:
        logits["final_norm_bias"] = w_u @ norm.bias.detach().float().cpu()
    if getattr(unembed, "bias", None) is not None:
        logits["unembedding_bias"] = unembed.bias.detach().float().cpu()
    return logits
