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
    """A causal LM seen as backbone (ids -> final hidden states) and head (hidden -> logits).

    `layers` is the decoder's block list and `final_norm` (then `final_proj`, OPT's `project_out`)
    what the backbone applies to the last block's output; `logit_multiply`, `logit_divide` and
    `softcap` the head's post-processing after the output embedding (`finish_logits`).
    """

    causal_lm: HFModel
    backbone: HFModel
    head: Callable[[torch.Tensor], torch.Tensor]
    layers: nn.ModuleList | None
    final_norm: nn.Module | None
    final_proj: nn.Module | None = None
    logit_multiply: float = 1.0
    logit_divide: float = 1.0
    softcap: float | None = None

    @property
    def logit_scale(self) -> float:
        """The one factor the output embedding's logits are scaled by before any soft-capping."""
        return self.logit_multiply / self.logit_divide

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the backbone applies after its last block: the final norm (fresh statistics per row), then any projection."""
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if self.final_proj is not None:
            hidden = self.final_proj(hidden)
        return hidden

    def raw_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output embedding times the model's logit scale: the logits before any soft-capping."""
        logits = self.causal_lm.get_output_embeddings()(hidden)
        return finish_logits(logits, self.logit_multiply, self.logit_divide, None)


def finish_logits(logits: Any, multiply: float = 1.0, divide: float = 1.0, softcap: float | None = None) -> Any:
    """The head's post-processing after the output embedding, in the order and form the models' own
    forwards apply it: Cohere's `logit_scale` multiplies, Granite's `logits_scaling` divides, Gemma 2's
    `final_logit_softcapping` caps. One function for the local head and the nnsight lens (`logits` may be
    an nnsight proxy there), so the two cannot drift apart."""
    if multiply != 1.0:
        logits = logits * multiply
    if divide != 1.0:
        logits = logits / divide
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def unwrap_peft(model: HFModel) -> HFModel:
    """The Hugging Face causal LM inside a PEFT model (adapter layers stay injected), else the model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_layers(backbone: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The decoder's blocks: the ModuleList of same-typed modules under the backbone holding the most
    parameters (structural discovery: `layers`, `h`, `blocks`, `decoder.layers` alike); its dotted path."""
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, mod in backbone.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0 or len({type(m) for m in mod}) != 1:
            continue
        key = (_n_params(mod), -name.count("."))
        if best is None or key > best[:2]:
            best = (key[0], key[1], name, mod)
    return (best[2], best[3]) if best is not None else None


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and the architectures' own norm classes (`GemmaRMSNorm`, `CohereLayerNorm`, ...),
    also inside peft's `modules_to_save` wrapper (which runs the adapter's copy, or the original when disabled)."""
    module = getattr(module, "original_module", module)
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


#: backbone children that are norms but not the final one (applied to the embeddings)
EMBEDDING_NORMS = ("word_embeddings_layernorm", "emb_ln", "embed_layer_norm", "embedding_norm", "ln_emb", "emb_norm")
#: projections the backbone applies after the final norm (OPT with word_embed_proj_dim != hidden_size)
FINAL_PROJECTIONS = ("project_out",)


def find_final_norm(backbone: nn.Module, layers_path: str) -> tuple[nn.Module | None, nn.Module | None]:
    """(final norm, projection after it): the last norm-like child of the module that holds the blocks
    (else of the backbone), embedding norms excluded; checked numerically by `specprobe.probe.hooks`."""
    parent_path = layers_path.rpartition(".")[0]
    owners = [backbone.get_submodule(parent_path)] if parent_path else []
    owners.append(backbone)
    for owner in owners:
        norms = [
            (n, m)
            for n, m in owner.named_children()
            if m is not None and is_norm(m) and n not in EMBEDDING_NORMS and "emb" not in n
        ]
        if norms:
            proj = next(
                (m for n, m in owner.named_children() if n in FINAL_PROJECTIONS and isinstance(m, nn.Module)), None
            )
            return norms[-1][1], proj
    return None, None


def split_model(model: HFModel) -> SplitModel:
    """Take a (possibly PEFT-wrapped) causal LM apart into backbone and head."""
    lm = unwrap_peft(model)
    prefix = getattr(lm, "base_model_prefix", None)
    backbone = getattr(lm, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module):  # Llama4ForCausalLM: prefix "language_model", backbone `.model`
        backbone = getattr(lm, "model", None)  # check_split verifies that backbone + head give the model's logits
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
    multiply = float(scale) if isinstance(scale, (int, float)) else 1.0
    div = float(divide) if isinstance(divide, (int, float)) else 1.0
    cap = float(softcap) if isinstance(softcap, (int, float)) and softcap else None

    def head(hidden: torch.Tensor) -> torch.Tensor:
        return finish_logits(lm_head(hidden), multiply, div, cap)

    found = find_layers(backbone)
    if found is None:
        return SplitModel(lm, backbone, head, None, None, None, multiply, div, cap)
    norm, proj = find_final_norm(backbone, found[0])
    return SplitModel(lm, backbone, head, found[1], norm, proj, multiply, div, cap)


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
