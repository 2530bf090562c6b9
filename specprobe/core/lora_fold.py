"""Run a LoRA-adapted model with each adapter folded into its layer's weight, for the duration of a pass.

Unmerged LoRA costs two thin matmuls, a scale and an add per adapted layer and token: 25-30% of the
forward time of a 50M-parameter model on a CPU. Folding computes W + scaling * B @ A once per layer
and batch (rank / tokens of the layer's matmul work) and runs the base layer with it, so the tuned
pass costs what the base pass costs. The base weights are never modified (unlike peft's
merge/unmerge, whose round trip leaves rounding error behind), and nothing is kept afterwards.

Folding equals peft's merged model exactly; it differs from the unmerged forward by rounding
(peft #1836): about 1e-6 in float32, but visibly in 16-bit weights, so `fold_mode="auto"` folds
float32 models only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from specprobe.core.architecture import HFModel

FOLD_MODES = ("auto", "fold", "unmerged")


def _foldable(module: nn.Module) -> bool:
    """A plain peft LoRA Linear (nn.Linear or GPT-2 Conv1D base), active, unmerged, without DoRA-like
    variants or a LoRA bias (`lora_bias=True`: lora_B's bias, which `get_delta_weight` leaves out)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(module) is not LoraLinear or module.disable_adapters or module.merged:
        return False
    active = [a for a in module.active_adapters if a in module.lora_A]
    lora_bias = getattr(module, "lora_bias", {})  # peft >= 0.14
    return bool(active) and not any(a in module.lora_variant or lora_bias.get(a) for a in active)


def foldable_layers(model: HFModel) -> list[Any]:
    return [m for m in model.modules() if _foldable(m)]


def _folded_weight(module: Any) -> torch.Tensor:
    """A foldable LoRA layer's base weight plus its active adapters' deltas (in the base's layout)."""
    weight = module.base_layer.weight
    for name in module.active_adapters:
        if name in module.lora_A:
            weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight


def _folded_forward(module: Any) -> Any:
    base = module.base_layer

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.func.functional_call(base, {"weight": _folded_weight(module)}, (x, *args), kwargs)

    return forward


def linear_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias) a linear layer applies as the current view runs it: a plain layer's own,
    a foldable LoRA layer's base weight plus its active adapters' deltas, a `modules_to_save` copy's.
    Direct logit attribution reads the head this way, so a LoRA on `lm_head` is attributed through the
    tuned head; a layer whose effective weight cannot be read is a `ValueError` naming it."""
    from peft.tuners.lora.layer import LoraLayer

    active = getattr(module, "modules_to_save", None)  # peft's ModulesToSaveWrapper
    if isinstance(active, nn.ModuleDict) and hasattr(module, "original_module"):
        names = [a for a in getattr(module, "active_adapters", ()) if a in active]
        disabled = getattr(module, "disable_adapters", False)
        module = cast(nn.Module, module.original_module if disabled or not names else active[names[0]])
    if isinstance(module, LoraLayer):
        lora = cast(Any, module)
        if lora.disable_adapters or lora.merged or not any(a in lora.lora_A for a in lora.active_adapters):
            module = lora.get_base_layer()
        elif _foldable(module):
            base = lora.get_base_layer()
            return _as_out_in(base, _folded_weight(lora)), getattr(base, "bias", None)
        else:
            raise ValueError(f"{type(module).__name__}: the effective weight of this adapter layer cannot be read")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{type(module).__name__} is not a linear layer")
    return _as_out_in(module, weight), getattr(module, "bias", None)


def _as_out_in(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D stores (in, out); everything else (out, in)."""
    return weight.T if type(module).__name__ == "Conv1D" else weight


def check_fold_mode(mode: str) -> None:
    """A `ValueError` naming the choices for an unknown fold mode."""
    if mode not in FOLD_MODES:
        raise ValueError(f"fold_mode must be one of {FOLD_MODES}, got {mode!r}")


def should_fold(model: HFModel, mode: str) -> bool:
    """Whether `mode` folds this model: "fold" always, "unmerged" never, "auto" for float32 weights."""
    check_fold_mode(mode)
    if mode == "auto":
        params = next(model.parameters(), None)
        return params is not None and params.dtype == torch.float32
    return mode == "fold"


@contextlib.contextmanager
def folded_lora(model: HFModel) -> Iterator[int]:
    """Within the block every foldable LoRA layer of `model` runs as one folded matmul; yields how many."""
    layers = foldable_layers(model)
    for m in layers:
        m.forward = _folded_forward(m)
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward
