"""The hook layer shared by the layer views: which submodules of a decoder layer are its attention and
MLP, and context managers that capture or replace their outputs on a `SplitModel`'s own modules.

Like nnterp, a small table names the submodules per architecture family instead of re-implementing
models: hooks go on the Hugging Face modules that `compare` already runs, so the lens, patching and
direct logit attribution use the same loading (`ModelPair`) and forward path (`score_items`).

Supported families are those whose decoder layer is `h + attn(norm(h))` then `+ mlp(norm(.))`, so
a component's output is exactly what it adds to the residual stream (direct logit attribution
relies on it, and checks it: the parts must add up to the last layer's output).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from specprobe.core.architecture import SplitModel, UnsupportedArchitectureError, unwrap_peft

# model_type -> (attention submodule, MLP submodule) of each decoder layer
FAMILIES: dict[str, tuple[str, str]] = {
    "gpt2": ("attn", "mlp"),
    "llama": ("self_attn", "mlp"),
    "mistral": ("self_attn", "mlp"),
    "qwen2": ("self_attn", "mlp"),
    "qwen3": ("self_attn", "mlp"),
    "phi3": ("self_attn", "mlp"),
    "gemma": ("self_attn", "mlp"),
}
COMPONENTS = ("attn", "mlp", "layer")


class LayerIndexError(IndexError, ValueError):
    """A layer index outside the model's layers."""


def model_type(split: SplitModel) -> str:
    return str(getattr(getattr(unwrap_peft(split.causal_lm), "config", None), "model_type", None))


def supported_message() -> str:
    return ", ".join(sorted(FAMILIES))


@dataclass
class LayerModules:
    """One decoder layer's hookable modules."""

    layer: nn.Module
    attn: nn.Module
    mlp: nn.Module

    def get(self, component: str) -> nn.Module:
        return getattr(self, component)


def layer_modules(split: SplitModel) -> list[LayerModules]:
    """Per decoder layer: the layer, its attention and its MLP; a clear error for other architectures."""
    mtype = model_type(split)
    name = type(unwrap_peft(split.causal_lm)).__name__
    if mtype not in FAMILIES or split.layers is None or split.final_norm is None:
        raise UnsupportedArchitectureError(
            f"{name} (model_type {mtype!r}): the layer views cannot hook this architecture; "
            f"supported families: {supported_message()}"
        )
    attn_name, mlp_name = FAMILIES[mtype]
    out = []
    for i, layer in enumerate(split.layers):
        attn, mlp = getattr(layer, attn_name, None), getattr(layer, mlp_name, None)
        if not isinstance(attn, nn.Module) or not isinstance(mlp, nn.Module):
            raise UnsupportedArchitectureError(
                f"{name} (model_type {mtype!r}): layer {i} has no `{attn_name}`/`{mlp_name}` submodule; "
                f"supported families: {supported_message()}"
            )
        out.append(LayerModules(layer, attn, mlp))
    return out


def resolve_layers(layer_ids: Sequence[int] | int | None, n_layers: int) -> list[int]:
    """Layer indices (negative ones count from the end), sorted and unique; out of range is an error."""
    if layer_ids is None:
        return list(range(n_layers))
    if isinstance(layer_ids, int):
        layer_ids = [layer_ids]
    out = set()
    for i in layer_ids:
        if isinstance(i, bool) or not isinstance(i, (int,)) and not hasattr(i, "__index__"):
            raise TypeError(f"layer indices must be integers, got {i!r}")
        i = int(i)
        if not -n_layers <= i < n_layers:
            raise LayerIndexError(
                f"layer index {i} is out of range for a model with {n_layers} layers "
                f"(valid: 0..{n_layers - 1}, or -{n_layers}..-1 from the end)"
            )
        out.add(i % n_layers)
    return sorted(out)


def _tensor_of(output):
    return output[0] if isinstance(output, tuple) else output


def _with_tensor(output, tensor):
    return (tensor,) + tuple(output[1:]) if isinstance(output, tuple) else tensor


@contextlib.contextmanager
def capture_outputs(modules: dict, store: dict) -> Iterator[None]:
    """Record each named module's output tensor (the first element of a tuple output) into `store`."""
    handles = []
    for key, module in modules.items():
        def keep(_m, _i, output, key=key):
            store[key] = _tensor_of(output).detach()

        handles.append(module.register_forward_hook(keep))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_input(module: nn.Module, store: dict, key) -> Iterator[None]:
    """Record the hidden states a module receives (first positional argument or `hidden_states=`)."""
    def keep(_m, args, kwargs):
        store[key] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = module.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_outputs(patches: dict[nn.Module, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """While active, each module's output tensor goes through its function (which returns the new one)."""
    handles = []
    for module, fn in patches.items():
        def swap(_m, _i, output, fn=fn):
            return _with_tensor(output, fn(_tensor_of(output)))

        handles.append(module.register_forward_hook(swap))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
