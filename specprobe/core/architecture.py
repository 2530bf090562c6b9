"""Find the pieces of any Hugging Face causal LM that the forward path needs: backbone, head, layers.

Like nnterp's standardized transformer, we rename instead of re-implementing: the backbone returns
the final (normed) hidden states; the head maps gathered hidden states to logits, including the
few architecture-specific post-processing steps (logit soft-capping, logit scaling). `check_split`
verifies on a real input that backbone+head reproduces the model's own logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: A Hugging Face causal LM or a PeftModel around one. Typed Any on purpose: their attributes are
#: created at run time (config, get_base_model, active_adapters), and torch's `Module.__getattr__`
#: would type every one of them `Tensor | Module`.
HFModel = Any


class UnsupportedArchitectureError(ValueError):
    """The model's structure is not one the probe engine can take apart."""


@dataclass
class SplitModel:
    """A causal LM seen as backbone (ids -> final hidden states) and head (hidden -> logits)."""

    causal_lm: HFModel
    backbone: HFModel
    head: Callable[[torch.Tensor], torch.Tensor]
    layers: nn.ModuleList | None
    final_norm: nn.Module | None


def unwrap_peft(model: HFModel) -> HFModel:
    """The Hugging Face causal LM inside a PEFT model (adapter layers stay injected), else the model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _find_layers(backbone: HFModel) -> nn.ModuleList | None:
    for name in ("layers", "h", "blocks", "decoder.layers", "encoder.layers"):
        obj = backbone
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    return None


def _find_final_norm(backbone: HFModel) -> nn.Module | None:
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f"):
        mod = getattr(backbone, name, None)
        if isinstance(mod, nn.Module):
            return mod
    return None


def split_model(model: HFModel) -> SplitModel:
    """Take a (possibly PEFT-wrapped) causal LM apart into backbone and head."""
    lm = unwrap_peft(model)
    prefix = getattr(lm, "base_model_prefix", None)
    backbone = getattr(lm, prefix, None) if prefix else None
    lm_head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if not isinstance(backbone, nn.Module) or lm_head is None:
        raise UnsupportedArchitectureError(
            f"{type(lm).__name__} is not a Hugging Face causal LM with a `{prefix}` backbone and an output "
            "embedding; supported: decoder-only *ForCausalLM models (GPT-2, Llama, Mistral, Qwen2, Gemma, Phi, ...)"
        )
    config = getattr(lm, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)  # Cohere multiplies
    divide = getattr(config, "logits_scaling", None)  # Granite divides

    def head(hidden: torch.Tensor) -> torch.Tensor:
        logits = lm_head(hidden)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        if isinstance(divide, (int, float)) and divide != 1:
            logits = logits / divide
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return SplitModel(lm, backbone, head, _find_layers(backbone), _find_final_norm(backbone))


@torch.no_grad()
def check_split(split: SplitModel, input_ids: torch.Tensor, atol: float = 1e-3) -> float:
    """Assert backbone+head reproduces the model's own logits on `input_ids`; returns the max difference."""
    full = split.causal_lm(input_ids=input_ids).logits.float()
    hidden = split.backbone(input_ids=input_ids).last_hidden_state
    ours = split.head(hidden).float()
    diff = (full - ours).abs().max().item()
    tol = atol * max(1.0, full.abs().max().item())
    if not diff <= tol:
        raise UnsupportedArchitectureError(
            f"{type(split.causal_lm).__name__}: backbone+head logits differ from the model's own by {diff:.3g}; "
            "this architecture post-processes logits in a way specprobe does not know"
        )
    return diff
