"""A TransformerLens `TransformerBridge` over a loaded `ModelPair`, for `engine="transformer_lens"`.

The bridge runs the pair's own weights: TransformerLens wraps a Hugging Face model's modules in
place (and switches it to eager attention), so the bridge is booted on a *structural copy* of the
pair's model whose parameters and buffers are the original tensors (`shared_copy`): no weight is
copied, and the caller's model is left exactly as it was. With a PEFT adapter the copy is a
PeftModel too, its LoRA layers sharing the adapter's weights, so the base and tuned views are that
one module with the adapter switched off (`disable_adapter()`) and on, as in `ModelPair.view`.

Checked on boot (`_check_bridge`), per view, on a probe input: the bridge's log-softmax equals the
pair's own, and each block's output is its input plus the attention and MLP outputs at TL's hook
points (`hook_resid_post = hook_resid_pre + hook_attn_out + hook_mlp_out`), which patching and
attribution rely on. A TL architecture adapter that rebuilds a module carrying a LoRA layer from its
weights (GPT-2's fused `c_attn`, split into q, k and v) would silently drop that adapter: refused,
naming the module. transformer-lens is the optional `tl` extra, imported only here.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from specprobe.core.architecture import SplitModel, UnsupportedArchitectureError, unwrap_peft
from specprobe.core.engines import engine_kind
from specprobe.core.models import ModelPair

#: `engine=` values of the layer views: torch hooks on the Hugging Face modules (the default, fastest) or TL
ENGINES = ("hooks", "transformer_lens")
TL_ENGINE = "transformer_lens"
INSTALL_HINT = "pip install specprobe[tl]"
PROBE_TEXT_TOKENS = 8


def check_engine(engine: str) -> None:
    """A `ValueError` naming the choices for an unknown engine; for "transformer_lens", an ImportError
    naming the extra when TransformerLens is missing (before any model loads)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == TL_ENGINE:
        require_transformer_lens()


def require_transformer_lens() -> Any:
    """The `TransformerBridge` class; a one-line ImportError naming the `tl` extra when TL is missing."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:
        raise ImportError(
            f"engine='transformer_lens' needs TransformerLens >= 3 (TransformerBridge): {INSTALL_HINT} ({exc})"
        ) from None
    return TransformerBridge


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model`'s module tree whose parameters and buffers *are* the original tensors."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def _lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The LoRA layers inside `model`, by path (none when peft is not installed or not used)."""
    try:
        from peft.tuners.lora.layer import LoraLayer
    except ImportError:
        return {}
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer) and isinstance(m, nn.Module)}


@contextlib.contextmanager
def _idle_lora(model: nn.Module, paths: dict[int, str], idle: set[str]) -> Iterator[None]:
    """While active, `idle` holds the paths (before bridging, from `paths`) of the LoRA layers not run yet."""
    layers = {paths.get(id(m), name): m for name, m in _lora_modules(model).items()}
    idle.update(layers)
    handles = [m.register_forward_hook(lambda *_a, name=name: idle.discard(name)) for name, m in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _tl_tokenizer(tokenizer: Any) -> Any:
    """A copy for TL, which edits the tokenizer it gets (pad/eos tokens) and reloads it by name to add
    BOS unless it already does; the engine hands TL token ids only, so the copy just needs to exist."""
    tok = copy.deepcopy(tokenizer)
    tok.init_kwargs.setdefault("name_or_path", getattr(tok, "name_or_path", "") or "local")
    tok.init_kwargs["add_bos_token"] = True
    return tok


def boot_bridge(model: nn.Module, tokenizer: Any) -> Any:
    """A TransformerBridge around `model` (a Hugging Face causal LM, possibly with LoRA layers inside)."""
    bridge_cls = require_transformer_lens()
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    try:
        bridge = bridge_cls.boot_transformers(name, hf_model=model, tokenizer=_tl_tokenizer(tokenizer))
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: TransformerLens cannot bridge this model ({str(exc).split('. ')[0][:160]}); "
            "use engine='hooks'"
        ) from exc
    return bridge.eval()


@dataclass
class BridgedPair:
    """A `ModelPair` over shared copies of the pair's models, and one bridge per distinct model."""

    pair: ModelPair
    bridges: dict[int, Any]  # id(unwrapped causal LM) -> its TransformerBridge
    lora_paths: dict[int, str]  # id(LoRA layer) -> its path before TL wrapped the modules

    @contextlib.contextmanager
    def view(self, variant: str) -> Iterator[tuple[SplitModel, Any]]:
        """(split model, bridge) in state `variant`: the adapter off or on, as `ModelPair.view`."""
        with self.pair.view(variant) as split:
            yield split, self.bridges[id(unwrap_peft(split.causal_lm))]

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.bridges.values())).cfg.n_layers)


#: id(pair) -> its bridged copy, dropped when the pair is collected (a dataclass is not hashable)
_CACHE: dict[int, BridgedPair] = {}


def bridged_pair(pair: ModelPair, given: tuple[Any, ...] = ()) -> BridgedPair:
    """The pair's models bridged once (cached for the pair's lifetime); `given`: the caller's base and
    tuned objects, whose TransformerBridges are used as they are (their weight processing included)."""
    cached = _CACHE.get(id(pair))
    if cached is not None and _same(cached.pair, pair):
        return cached
    own = {id(obj.original_model): obj for obj in given if engine_kind(obj) == "transformer_bridge"}
    copies: dict[int, nn.Module] = {}
    for model in (pair.base_model, pair.tuned_model):
        if model is not None and id(unwrap_peft(model)) not in own:
            copies[id(model)] = shared_copy(model)
    copied = replace(
        pair,
        base_model=copies.get(id(pair.base_model), pair.base_model),
        tuned_model=copies.get(id(pair.tuned_model), pair.tuned_model) if pair.tuned_model is not None else None,
    )
    bridges, paths = {}, {}
    for model in (copied.base_model, copied.tuned_model):
        if model is None:
            continue
        lm = unwrap_peft(model)
        paths.update({id(m): name for name, m in _lora_modules(lm).items()})
        bridges[id(lm)] = own.get(id(lm)) or boot_bridge(lm, pair.tokenizer)
    out = BridgedPair(copied, bridges, paths)
    _check_bridge(pair, out)
    if id(pair) not in _CACHE:
        weakref.finalize(pair, _CACHE.pop, id(pair), None)
    _CACHE[id(pair)] = out
    return out


def _same(copied: ModelPair, pair: ModelPair) -> bool:
    return copied.adapter_name == pair.adapter_name and copied.fold_mode == pair.fold_mode


def probe_ids(split: SplitModel) -> torch.Tensor:
    """A short deterministic input on the model's device (as `specprobe.probe.hooks` probes with)."""
    emb = unwrap_peft(split.causal_lm).get_input_embeddings().weight
    return ((torch.arange(PROBE_TEXT_TOKENS) * 7 + 3) % int(emb.shape[0]))[None].to(emb.device)


@torch.no_grad()
def _check_bridge(pair: ModelPair, bridged: BridgedPair) -> None:
    """Per view: the bridge runs every LoRA layer of the tuned view, reproduces the pair's log-probs (within
    float error of eager vs fused attention: 1e-3 in float32, 0.1 in 16 bits), and its blocks write attn +
    mlp to the residual stream."""
    for variant in pair.variants:
        with pair.view(variant) as split:
            ids = probe_ids(split)
            want = split.causal_lm(input_ids=ids).logits.float().log_softmax(-1)
        with bridged.view(variant) as (split, bridge):
            names = [f"blocks.{i}.{h}" for i in range(bridge.cfg.n_layers) for h in RESID_HOOKS]
            idle: set[str] = set()
            with _idle_lora(unwrap_peft(split.causal_lm), bridged.lora_paths, idle):
                logits, cache = bridge.run_with_cache(ids, names_filter=names)
            name = type(unwrap_peft(split.causal_lm)).__name__
            if variant == "tuned" and idle:
                raise UnsupportedArchitectureError(
                    f"{name}: the TransformerLens bridge bypasses the LoRA layers {sorted(idle)[:4]} (its "
                    f"{type(bridge.adapter).__name__} recomputes those modules from copies of their weights), so "
                    "its tuned view would not be the tuned model; use engine='hooks', or an adapter on other modules"
                )
            err = (logits.float().log_softmax(-1) - want).abs().max().item()
            if not err <= (1e-3 if logits.dtype == torch.float32 else 0.1):
                raise UnsupportedArchitectureError(
                    f"{name}: the TransformerLens bridge's {variant} log-probabilities differ from the model's by "
                    f"{err:.3g}; use engine='hooks'"
                )
            _check_decomposition(split, cache, bridge.cfg.n_layers)


RESID_HOOKS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


def _check_decomposition(split: SplitModel, cache: Any, n_layers: int) -> None:
    for i in range(n_layers):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        parts = cache[f"blocks.{i}.hook_attn_out"] + cache[f"blocks.{i}.hook_mlp_out"]
        err = (post.double() - pre.double() - parts.double()).abs().max().item()
        if not err <= max(1e-4, 8 * torch.finfo(post.dtype).eps) * max(1.0, post.abs().max().item()):
            raise UnsupportedArchitectureError(
                f"{type(unwrap_peft(split.causal_lm)).__name__}: at TransformerLens's hook points block {i}'s output "
                f"is not its input + hook_attn_out + hook_mlp_out (off by {err:.3g}; e.g. norms after the attention "
                "or MLP, or a residual scale); use engine='hooks'"
            )


def engine_description(engine: str) -> str:
    """What a result's metadata says about the engine that computed it."""
    if engine != TL_ENGINE:
        return "torch hooks on the Hugging Face modules (scoring core)"
    from importlib.metadata import PackageNotFoundError, version

    try:
        tl_version = version("transformer-lens")
    except PackageNotFoundError:
        tl_version = "?"
    return f"TransformerLens {tl_version} TransformerBridge hook points (run_with_cache, run_with_hooks)"
