"""Which layers of a causal LM get LoRA adapters: `find_lora_targets` picks every linear projection inside
the decoder layers, by structure, so a new architecture needs no table."""

from __future__ import annotations

from collections.abc import Sequence


def find_lora_targets(model) -> list[str]:
    """Names (last component) of every linear projection inside the decoder layers of `model`.

    Works per architecture without a table: Llama/Qwen/Mistral give q,k,v,o,gate,up,down_proj,
    GPT-2 gives its Conv1D c_attn, c_proj, c_fc. Embeddings and the LM head are never targets.
    """
    import torch.nn as nn

    from specprobe.core.architecture import split_model

    try:
        from transformers.pytorch_utils import Conv1D

        linear = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        linear = (nn.Linear,)
    split = split_model(model)
    if split.layers is None:
        raise ValueError(f"{type(split.causal_lm).__name__}: cannot find the decoder layers; pass target_modules")
    names = {name.rsplit(".", 1)[-1] for name, mod in split.layers.named_modules() if isinstance(mod, linear) and name}
    if not names:
        raise ValueError(
            f"{type(split.causal_lm).__name__}: no linear layers in the decoder layers; pass target_modules"
        )
    return sorted(names)


def uses_conv1d(model, targets: Sequence[str]) -> bool:
    """Whether any of `targets` is a GPT-2 style Conv1D (weights stored transposed: LoRA needs fan_in_fan_out)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules())
