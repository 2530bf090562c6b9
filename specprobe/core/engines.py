"""Models held by the interpretability tools people already use: TransformerLens and nnsight.

`unwrap_engine` turns such an object into what `ModelPair` runs: the Hugging Face causal LM inside
(nnsight `LanguageModel` and nnterp's `StandardizedTransformer`: `._module`; TransformerLens
`TransformerBridge`: `.original_model`), or, for a TransformerLens `HookedTransformer`, which holds
no Hugging Face model, `HookedTransformerLM`: a thin module shaped like one (backbone returning the
final-normed residual stream, head = TL's unembed) so the one forward path (`score_items`) runs it.
The tokenizer comes from the object (for TransformerLens, without the BOS that TL invents for a model it
runs without one: `tl_tokenizer`). A PEFT model inside an nnsight or bridge object stays a
PeftModel, so its adapter gives the base and tuned views as usual.

Objects are recognised by class; transformer_lens and nnsight are imported only when the object's
class comes from them (transformer-lens is the optional `tl` extra).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from specprobe.core.architecture import HFModel

ENGINE_PACKAGES = ("transformer_lens", "nnsight", "nnterp")


def _packages(obj: Any) -> set[str]:
    return {c.__module__.split(".")[0] for c in type(obj).__mro__}


def _class_named(obj: Any, name: str, package: str) -> bool:
    return any(c.__name__ == name and c.__module__.startswith(package) for c in type(obj).__mro__)


def engine_kind(obj: Any) -> str | None:
    """ "hooked_transformer", "transformer_bridge", "nnsight" (nnterp's StandardizedTransformer included:
    a LanguageModel subclass) or None (not an engine object)."""
    pkgs = _packages(obj)
    if not pkgs & set(ENGINE_PACKAGES):
        return None  # never import the engines for other objects
    if "transformer_lens" in pkgs:
        import transformer_lens.model_bridge as bridge_mod

        if isinstance(obj, bridge_mod.TransformerBridge):
            return "transformer_bridge"
        if _class_named(obj, "HookedTransformer", "transformer_lens"):  # removed in TransformerLens 4
            return "hooked_transformer"
    if pkgs & {"nnsight", "nnterp"}:
        from nnsight import LanguageModel

        if isinstance(obj, LanguageModel):
            return "nnsight"
    return None


def unwrap_engine(obj: Any) -> tuple[HFModel | None, Any, str]:
    """(model for `ModelPair`, tokenizer or None, description) for an engine object; (None, None, "")
    for anything else. For a HookedTransformer the model is a `HookedTransformerLM` adapter."""
    kind = engine_kind(obj)
    name = type(obj).__name__
    if kind == "nnsight":
        if not getattr(obj, "dispatched", True):
            obj.dispatch()  # a LanguageModel built from a name holds meta weights until dispatched
        model = obj.__dict__.get("_module")
        model = obj.__dict__.get("_model") if model is None else model  # nnsight < 0.5
        if not isinstance(model, nn.Module):
            raise TypeError(f"nnsight {name}: found no wrapped torch module (._module)")
        tool = "nnterp" if "nnterp" in _packages(obj) else "nnsight"  # StandardizedTransformer: a LanguageModel
        return model, getattr(obj, "tokenizer", None), f"{tool} {name} around {type(model).__name__}"
    if kind == "transformer_bridge":
        try:
            model = obj.original_model
        except AttributeError as exc:  # RemoteBridge / vLLM drivers hold no local module
            raise TypeError(f"TransformerBridge without a local torch model cannot be probed: {exc}") from exc
        return (
            model,
            tl_tokenizer(obj)[0],
            f"TransformerLens TransformerBridge around {type(model).__name__}",
        )
    if kind == "hooked_transformer":
        return HookedTransformerLM(obj), tl_tokenizer(obj)[0], f"TransformerLens {name}"
    return None, None, ""


def tl_tokenizer(obj: Any) -> tuple[Any, bool]:
    """(the tokenizer to score a TransformerLens object with, whether its BOS was dropped).

    TransformerLens gives a tokenizer without a BOS token its EOS as BOS (and does so on the tokenizer it
    was handed). specprobe conditions the first token on the tokenizer's BOS when the tokenizer does not
    add one itself, so for a model TL runs without BOS (`cfg.default_prepend_bos=False`, e.g. Qwen) that
    invented BOS would change every log-prob. Then a copy of the tokenizer without a BOS token is used."""
    tok = getattr(obj, "tokenizer", None)
    cfg = getattr(obj, "cfg", None)
    if tok is None or getattr(cfg, "default_prepend_bos", True) is not False:
        return tok, False
    if getattr(tok, "bos_token_id", None) is None or len(tok.encode("")) > 0:  # no BOS, or the tokenizer adds it
        return tok, False
    tok = copy.deepcopy(tok)
    tok.bos_token = None
    return tok, True


def engine_metadata(obj: Any) -> dict[str, Any] | None:
    """What the result's metadata records about an engine object (None for other objects).

    TransformerLens weight processing (fold_ln, center_writing_weights, center_unembed) rewrites the
    weights: logits change, residual streams are in TL's basis, and log-probs are meant to change by float
    error only, which specprobe does not check (a TL processing bug on one layout moved them by 0.1)."""
    kind = engine_kind(obj)
    if kind is None:
        return None
    meta: dict[str, Any] = {"engine": kind, "class": f"{type(obj).__module__}.{type(obj).__name__}"}
    if kind == "nnsight":
        return meta
    if kind == "transformer_bridge":
        processed = bool(getattr(obj, "_weights_processed", False))
        meta["compatibility_mode"] = bool(getattr(obj, "compatibility_mode", False))
        meta["weights_processed"] = processed
        meta["default_prepend_bos"] = getattr(obj.cfg, "default_prepend_bos", None)
        meta["bos_dropped"] = tl_tokenizer(obj)[1]
    else:
        processing = hooked_transformer_processing(obj)
        meta.update(
            processing=processing,
            weights_processed=any(processing.values()),
            default_prepend_bos=getattr(obj.cfg, "default_prepend_bos", None),
            bos_dropped=tl_tokenizer(obj)[1],
        )
    if meta["weights_processed"]:
        meta["note"] = (
            "TransformerLens weight processing is on: logits and residual streams differ from the "
            "Hugging Face model's; log-probs are meant to differ by float error only, which is not checked "
            "(for results to publish, pass the model without processing)"
        )
    return meta


@torch.no_grad()
def hooked_transformer_processing(ht: Any, atol: float = 1e-5) -> dict[str, bool]:
    """Which TransformerLens weight processing a HookedTransformer went through. fold_ln is read from
    the config (LNPre / RMSPre norms); TL records no centering flags, so centering is detected from
    the weights (rows of W_E and columns of W_U with zero mean)."""
    cfg = ht.cfg
    fold_ln = str(getattr(cfg, "normalization_type", "")).endswith("Pre")
    w_e = ht.embed.W_E.float()
    w_u = ht.unembed.W_U.float()
    centered_write = bool(w_e.mean(-1).abs().max().item() < atol * max(1.0, w_e.abs().max().item()))
    centered_unembed = bool(w_u.mean(-1).abs().max().item() < atol * max(1.0, w_u.abs().max().item()))
    return {"fold_ln": fold_ln, "center_writing_weights": centered_write, "center_unembed": centered_unembed}


@dataclass
class _BackboneOutput:
    last_hidden_state: torch.Tensor


class _TLEmbedding(nn.Module):
    """TL's embed, with the `.weight` (vocab x d_model) that Hugging Face input embeddings have."""

    def __init__(self, embed: nn.Module):
        super().__init__()
        self.embed = embed

    @property
    def weight(self) -> torch.Tensor:
        return self.embed.W_E  # type: ignore[return-value]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class _TLUnembed(nn.Module):
    """TL's unembed as an output embedding: `.weight` is W_U transposed (vocab x d_model, a view)."""

    def __init__(self, unembed: nn.Module):
        super().__init__()
        self.unembed = unembed

    @property
    def weight(self) -> torch.Tensor:
        return self.unembed.W_U.T  # type: ignore[union-attr]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.unembed(hidden)


class _TLBackbone(nn.Module):
    """input ids -> residual stream after the last block and ln_final (the hidden state before the head,
    as a Hugging Face backbone returns it). `blocks` and `norm` are the TL modules themselves."""

    def __init__(self, ht: Any):
        super().__init__()
        self.ht = ht
        self.blocks = ht.blocks
        self.norm = ht.ln_final
        self.embed_tokens = _TLEmbedding(ht.embed)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> _BackboneOutput:
        if position_ids is not None or (attention_mask is not None and attention_mask.dim() != 2):
            raise NotImplementedError(
                "a TransformerLens HookedTransformer takes no position ids or segment masks (share_prefixes); "
                "turn share_prefixes off, or pass the Hugging Face model or a TransformerBridge"
            )
        resid = self.ht(
            input_ids, attention_mask=_tl_mask(input_ids, attention_mask), stop_at_layer=self.ht.cfg.n_layers
        )
        return _BackboneOutput(self.norm(resid))


def _tl_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mask to hand a HookedTransformer: all ones where none is given. Without one, TL masks a left-padding
    tokenizer's leading pad tokens itself, and with `default_prepend_bos=False` and pad == BOS (GPT-2's
    tokenizers) that is the BOS specprobe puts first: log-probs off by up to 0.26 from the Hugging Face model's."""
    return torch.ones_like(input_ids) if attention_mask is None else attention_mask


class HookedTransformerLM(nn.Module):
    """A TransformerLens HookedTransformer shaped like a Hugging Face causal LM for `split_model`:
    `model` (backbone), `lm_head` (TL's unembed), `config` (context length, logit soft-cap)."""

    base_model_prefix = "model"

    def __init__(self, ht: Any):
        super().__init__()
        cfg = ht.cfg
        self.hooked = ht
        self.model = _TLBackbone(ht)
        self.lm_head = _TLUnembed(ht.unembed)
        softcap = getattr(cfg, "output_logits_soft_cap", -1.0)
        self.config = SimpleNamespace(
            model_type=f"transformer_lens:{getattr(cfg, 'original_architecture', None) or cfg.model_name}",
            _name_or_path=getattr(cfg, "model_name", type(ht).__name__),
            n_positions=int(cfg.n_ctx),
            vocab_size=int(cfg.d_vocab_out),
            final_logit_softcapping=float(softcap) if softcap and softcap > 0 else None,
        )

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.hooked(input_ids, attention_mask=_tl_mask(input_ids, attention_mask)))
