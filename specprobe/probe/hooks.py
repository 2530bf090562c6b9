"""The hook layer shared by the layer views: which submodules of a decoder layer write its attention and
MLP outputs to the residual stream, and context managers that capture or replace those outputs on a
`SplitModel`'s own modules.

Like nnterp, we find the pieces structurally and check them on load instead of re-implementing models:
hooks go on the Hugging Face modules that `compare` already runs, so the lens, patching and direct
logit attribution use the same loading (`ModelPair`) and forward path (`score_items`).

Discovery (`layer_modules`): the blocks are `SplitModel.layers` (the backbone's ModuleList of blocks);
in each block, candidate attention writers (a child named `self_attn`/`attn`/`attention`/..., or typed
`*Attention*`; a post-attention norm, as in Gemma 2/3 and OLMo 2; the last linear layer inside the
attention, as in BLOOM whose attention adds the residual itself) and MLP writers (`mlp`,
`feed_forward`, `block_sparse_moe`, `ffn`, ..., a post-feed-forward norm, the block's last linear
child as OPT's `fc2`) are hooked during one forward pass of a short probe input, and the first pair
for which `block output == block input + scale * (attn + mlp)` holds is kept. Sequential blocks
(`h + attn(norm(h))` then `+ mlp(norm(.))`) and parallel ones (GPT-J, GPT-NeoX with
`use_parallel_residual`, Phi, Falcon, Cohere, StableLM: `h + attn(norm(h)) + mlp(norm(h))`) both
satisfy it, so a component's output is exactly what it adds to the residual stream, which patching
and direct logit attribution rely on. The same pass checks that the final norm (and OPT's
`project_out`) then the head, applied to the last block's output, reproduces the model's logits.

Exceptions stay in small tables: `WRITE_SCALE_ATTRS` (Granite's `residual_multiplier`); the head's
logit scaling and soft-capping and the final norm's lookup live in `specprobe.core.architecture`.
An architecture whose blocks do not write to the residual stream this way (post-LN OPT/BERT-style
blocks, say) is refused with an `UnsupportedArchitectureError` that says which part is missing.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from specprobe.core.architecture import SplitModel, UnsupportedArchitectureError, is_norm, unwrap_peft

COMPONENTS = ("attn", "mlp", "layer")

#: children of a decoder block that are its attention / MLP, by name (then by type name)
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn_block", "mixer")
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn", "moe", "mlp_block", "ff")
#: norms applied to a component's output before the residual add (Gemma 2/3, OLMo 2)
POST_ATTN_NORMS = ("post_attention_layernorm", "post_attn_norm", "post_attention_norm", "post_self_attn_layernorm")
POST_MLP_NORMS = ("post_feedforward_layernorm", "post_mlp_layernorm", "post_ffn_norm", "post_mlp_norm")
#: config attributes that scale both components' residual writes (Granite: h + residual_multiplier * attn)
WRITE_SCALE_ATTRS = ("residual_multiplier",)
#: length of the probe input the structure is checked on
PROBE_TOKENS = 6


class LayerIndexError(IndexError, ValueError):
    """A layer index outside the model's layers."""


def model_type(split: SplitModel) -> str:
    return str(getattr(getattr(unwrap_peft(split.causal_lm), "config", None), "model_type", None))


def supported_message() -> str:
    return (
        "decoder-only models whose blocks add their attention and MLP outputs to the residual stream "
        "(h + attn + mlp, sequential or parallel), with a final norm before the unembedding"
    )


@dataclass(eq=False)
class Site:
    """A module whose output is one component's residual write. `flat`: its output is (batch*seq, d)
    (OPT's MLP), viewed as (batch, seq, d) through the shape of `layer`'s input."""

    module: nn.Module
    layer: nn.Module
    flat: bool = False


@dataclass
class LayerModules:
    """One decoder layer's hookable modules; `scale` multiplies attn/mlp outputs into residual writes."""

    layer: nn.Module
    attn: Site
    mlp: Site
    scale: float = 1.0

    def get(self, component: str) -> Site | nn.Module:
        return self.layer if component == "layer" else getattr(self, component)


@dataclass
class _Found:
    attn: list[str]
    mlp: list[str]
    flat: list[tuple[bool, bool]]
    scale: float


_FOUND: weakref.WeakKeyDictionary[nn.Module, _Found] = weakref.WeakKeyDictionary()


def _describe(split: SplitModel) -> str:
    return f"{type(unwrap_peft(split.causal_lm)).__name__} (model_type {model_type(split)!r})"


def _candidates(
    layer: nn.Module,
    names: Sequence[str],
    type_words: Sequence[str],
    post_norms: Sequence[str],
    other: nn.Module | None,
    last_child_linear: bool,
) -> list[str]:
    """Dotted paths (relative to `layer`) of modules that may write this component to the residual stream."""
    children = dict(layer.named_children())
    main = [n for n in names if isinstance(children.get(n), nn.Module)]
    main += [
        n
        for n, m in children.items()
        if n not in main
        and m is not other
        and any(w in type(m).__name__.lower() for w in type_words)
        and not is_norm(m)
    ]
    out = list(main)
    out += [n for n in post_norms if isinstance(children.get(n), nn.Module)]
    for n in main:  # the last linear inside (BLOOM's attention and MLP add the residual themselves)
        linears = [f"{n}.{k}" for k, m in children[n].named_modules() if k and isinstance(m, nn.Linear)]
        out += linears[-1:]
    if last_child_linear:  # OPT's fc2: the MLP is no submodule of its own
        out += [n for n, m in children.items() if isinstance(m, nn.Linear)][-1:]
    return list(dict.fromkeys(out))


def tolerance(ref: torch.Tensor) -> float:
    """How far a float64 recomputation may be from `ref`, a result in `ref`'s own dtype (16-bit: its rounding)."""
    eps = torch.finfo(ref.dtype).eps if ref.dtype.is_floating_point else 1e-6
    return max(1e-4, 8 * eps) * max(1.0, ref.abs().max().item())


def _layer_candidates(name: str, layers: list[nn.Module]) -> list[tuple[list[str], list[str]]]:
    """Per layer: the submodule paths that may write its attention and MLP outputs (an error if either is none)."""
    cands: list[tuple[list[str], list[str]]] = []
    for layer in layers:
        attn = _candidates(layer, ATTN_NAMES, ("attention", "attn"), POST_ATTN_NORMS, None, False)
        first = layer.get_submodule(attn[0]) if attn else None
        mlp = _candidates(layer, MLP_NAMES, ("mlp", "moe", "feedforward", "expert"), POST_MLP_NORMS, first, True)
        mlp = [m for m in mlp if m not in attn]
        if not attn or not mlp:
            raise UnsupportedArchitectureError(
                f"{name}: decoder layer {type(layer).__name__} has no {'attention' if not attn else 'MLP'} submodule "
                f"(looked for children named {ATTN_NAMES if not attn else MLP_NAMES} or typed like one); "
                f"supported: {supported_message()}"
            )
        cands.append((attn, mlp))
    return cands


def _probe_forward(
    lm: Any, layers: list[nn.Module], cands: list[tuple[list[str], list[str]]]
) -> tuple[dict, torch.Tensor]:
    """One forward pass on the probe input with every layer and candidate hooked: the captured tensors
    (keys ("in", i), ("out", i) and (path, i)) and the model's logits."""
    store: dict = {}
    handles = []
    for i, (layer, (attn, mlp)) in enumerate(zip(layers, cands)):

        def pre(_m, args, kwargs, i=i):
            store[("in", i)] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        def post(_m, _a, output, i=i):
            store[("out", i)] = _tensor_of(output).detach().clone()

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post))
        for path in attn + mlp:

            def keep(_m, _a, output, key=(path, i)):
                t = _tensor_of(output)
                if isinstance(t, torch.Tensor):
                    store[key] = t.detach().clone()

            handles.append(layer.get_submodule(path).register_forward_hook(keep))
    emb = lm.get_input_embeddings()
    vocab = int(emb.weight.shape[0])
    ids = (torch.arange(PROBE_TOKENS) * 7 + 3) % vocab
    try:
        logits = lm(input_ids=ids[None].to(emb.weight.device), use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return store, logits


def _match_layer(
    store: dict, i: int, attn: list[str], mlp: list[str], scales: list[float], h_out: torch.Tensor, delta: torch.Tensor
) -> tuple[str, str, tuple[bool, bool], float] | None:
    """The first (attention path, MLP path, flat, scale) whose outputs, scaled, sum to layer i's update."""
    for scale in scales:
        for a in attn:
            for m in mlp:
                ta, tm = store.get((a, i)), store.get((m, i))
                if ta is None or tm is None:
                    continue
                flat = (ta.dim() == 2 and h_out.dim() == 3, tm.dim() == 2 and h_out.dim() == 3)
                try:
                    ta, tm = ta.reshape(h_out.shape), tm.reshape(h_out.shape)
                except RuntimeError:
                    continue
                err = (delta - scale * (ta.double().to(delta.device) + tm.double().to(delta.device))).abs().max().item()
                if err <= tolerance(h_out):
                    return (a, m, flat, scale)
    return None


def _check_head(split: SplitModel, name: str, last: torch.Tensor, logits: torch.Tensor) -> None:
    """The final norm and head, on the last block's output, must give the model's logits."""
    device = unwrap_peft(split.causal_lm).get_input_embeddings().weight.device
    try:
        ours = split.head(split.normed(last.to(device))).float()
        err = (ours - logits.float().to(ours.device)).abs().max().item()
    except Exception as exc:  # noqa: BLE001 - any failure means the norm or head is not the one found
        err, ours = float("inf"), exc
    if not err <= 1e-3 * max(1.0, logits.abs().max().item()):
        norm = type(split.final_norm).__name__ if split.final_norm is not None else "no final norm"
        raise UnsupportedArchitectureError(
            f"{name}: the final norm ({norm}) and unembedding applied to the last layer's output do not give the "
            f"model's logits (off by {err:.3g}); the layer views need the final norm the backbone applies after "
            "its blocks"
        )


@torch.no_grad()
def _discover(split: SplitModel) -> _Found:
    name = _describe(split)
    if split.layers is None:
        raise UnsupportedArchitectureError(
            f"{name}: the layer views found no decoder layer list (an nn.ModuleList of blocks under the backbone); "
            f"supported: {supported_message()}"
        )
    lm = unwrap_peft(split.causal_lm)
    layers = list(split.layers)
    cands = _layer_candidates(name, layers)
    store, logits = _probe_forward(lm, layers, cands)
    config = getattr(lm, "config", None)
    scales = [1.0] + [
        float(v) for a in WRITE_SCALE_ATTRS if isinstance(v := getattr(config, a, None), (int, float)) and v != 1
    ]
    found = _Found([], [], [], 1.0)
    for i, (attn, mlp) in enumerate(cands):
        h_in, h_out = store.get(("in", i)), store.get(("out", i))
        if h_in is None or h_out is None:
            raise UnsupportedArchitectureError(f"{name}: decoder layer {i} did not run on the probe input")
        delta = h_out.double() - h_in.to(h_out.device).double()
        best = _match_layer(store, i, attn, mlp, scales, h_out, delta)
        if best is None:
            bridged = type(layers[i]).__name__.endswith("Bridge")  # TransformerLens wrapped the modules in place
            hint = (
                "; these are a TransformerLens TransformerBridge's wrappers of the Hugging Face modules: pass "
                "engine='transformer_lens', or the Hugging Face model itself"
                if bridged
                else f"; supported: {supported_message()}"
            )
            raise UnsupportedArchitectureError(
                f"{name}: decoder layer {i} ({type(layers[i]).__name__}) does not add attention and MLP outputs to "
                f"the residual stream (no pair of attention outputs {attn} and MLP outputs {mlp} sums to the layer's "
                f"update, e.g. post-norm blocks){hint}"
            )
        found.attn.append(best[0])
        found.mlp.append(best[1])
        found.flat.append(best[2])
        found.scale = best[3]
    _check_head(split, name, store[("out", len(layers) - 1)], logits)
    return found


def layer_modules(split: SplitModel) -> list[LayerModules]:
    """Per decoder layer: the layer and the modules writing its attention and MLP outputs (found and checked
    on the first call per model, see the module docstring); a clear error for architectures it cannot hook."""
    lm = unwrap_peft(split.causal_lm)
    found = _FOUND.get(lm)
    if found is None:
        found = _discover(split)
        _FOUND[lm] = found
    assert split.layers is not None  # _discover refuses models without a layer list
    out = []
    for i, layer in enumerate(split.layers):
        fa, fm = found.flat[i]
        out.append(
            LayerModules(
                layer,
                Site(layer.get_submodule(found.attn[i]), layer, fa),
                Site(layer.get_submodule(found.mlp[i]), layer, fm),
                found.scale,
            )
        )
    return out


def check_hookable(split: SplitModel) -> None:
    """Refuse an architecture the layer views cannot read (`layer_modules`' checks). Weights that are not
    here (the meta tensors of nnsight's lazily loaded hub model, run on NDIF) allow no probe forward pass:
    then only the structure is checked (a decoder layer list, each layer's attention and MLP submodules, no
    post-norm blocks by config), as the numbers cannot be."""
    lm = unwrap_peft(split.causal_lm)
    if not any(p.is_meta for p in lm.parameters()):
        layer_modules(split)
        return
    name = _describe(split)
    if split.layers is None:
        raise UnsupportedArchitectureError(
            f"{name}: the layer views found no decoder layer list; {supported_message()}"
        )
    _layer_candidates(name, list(split.layers))
    if getattr(getattr(lm, "config", None), "do_layer_norm_before", True) is False:
        raise UnsupportedArchitectureError(
            f"{name}: post-norm blocks (do_layer_norm_before=False); {supported_message()}"
        )


def pair_depth(pair: Any) -> int:
    """The number of decoder layers of both views of a `ModelPair` (`layer_modules` refuses architectures it
    cannot hook). The layer views read layer k of base against layer k of tuned, so models of different
    depths are refused: the lens read the deeper one's first layers only (its last row was not its output),
    attribution left its last layers out, or an index failed."""
    depths = {}
    for variant in pair.variants:
        with pair.view(variant) as split:
            depths[variant] = len(layer_modules(split))
    return same_depth(depths)


def same_depth(depths: dict[str, int]) -> int:
    """The one number of decoder layers of `depths` ({"base": n, "tuned": m}); different ones are an error."""
    if len(set(depths.values())) > 1:
        raise ValueError(
            f"base has {depths['base']} decoder layers and tuned {depths['tuned']}: the layer views compare "
            "layer k of one with layer k of the other and need models of the same depth (compare() takes any)"
        )
    return depths["base"]


def resolve_layers(layer_ids: Sequence[int] | int | None, n_layers: int) -> list[int]:
    """Layer indices (negative ones count from the end), sorted and unique; out of range or none is an error
    (an empty selection gave a layer view of no rows, whose summary said "no scored occurrences")."""
    if layer_ids is None:
        return list(range(n_layers))
    if isinstance(layer_ids, int):
        layer_ids = [layer_ids]
    if len(layer_ids) == 0:
        raise ValueError("layer_ids is empty: name at least one layer index, or pass None for every layer")
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


def _register(target: Site | nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None], handles: list) -> None:
    """A forward hook passing `target`'s output tensor, as (batch, seq, d), to `fn`; a returned tensor replaces it."""
    if isinstance(target, Site):
        module, flat = target.module, target.flat
        shape: dict = {}
        if flat:

            def pre(_m, args, kwargs):
                shape["s"] = (args[0] if args else kwargs["hidden_states"]).shape

            handles.append(target.layer.register_forward_pre_hook(pre, with_kwargs=True))
    else:
        module, flat, shape = target, False, {}

    def hook(_m, _i, output):
        t = _tensor_of(output)
        new = fn(t.view(shape["s"]) if flat else t)
        if new is None:
            return None
        return _with_tensor(output, new.reshape(t.shape) if flat else new)

    handles.append(module.register_forward_hook(hook))


@contextlib.contextmanager
def capture_outputs(modules: dict, store: dict) -> Iterator[None]:
    """Record each named module's (or `Site`'s) output tensor (the first element of a tuple output) into `store`.
    A copy: some blocks add to a component's output in place afterwards (Falcon's parallel MLP)."""
    handles: list = []
    for key, module in modules.items():

        def keep(t, key=key):
            store[key] = t.detach().clone()

        _register(module, keep, handles)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_input(module: nn.Module, store: dict, key) -> Iterator[None]:
    """Record the hidden states a module receives (first positional argument or `hidden_states=`)."""

    def keep(_m, args, kwargs):
        store[key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = module.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_outputs(patches: dict[Site | nn.Module, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """While active, each module's (or `Site`'s) output tensor goes through its function (which returns the new one)."""
    handles: list = []
    for module, fn in patches.items():
        _register(module, fn, handles)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def site_rows(chunk: Sequence[tuple[int, str]], n_layers: int) -> dict[tuple[str, int], list[int]]:
    """For a batch of patch sites (layer, component), one per row: which rows patch each (component, layer).
    The site (-1, "all") patches every layer's attention and MLP output."""
    rows_for: dict[tuple[str, int], list[int]] = {}
    for r, (layer, c) in enumerate(chunk):
        keys = [(cc, k) for k in range(n_layers) for cc in ("attn", "mlp")] if c == "all" else [(c, layer)]
        for key in keys:
            rows_for.setdefault(key, []).append(r)
    return rows_for


def replace_rows(t: torch.Tensor, rows: Sequence[int], cols: Sequence[int], src: torch.Tensor) -> torch.Tensor:
    """A copy of `t` (batch, seq, d) whose `rows` hold `src` (seq, d) at the positions `cols`."""
    t = t.clone()
    idx_r = torch.tensor(list(rows), device=t.device)[:, None]
    idx_c = torch.tensor(list(cols), device=t.device)[None, :]
    t[idx_r, idx_c] = src[list(cols)].to(device=t.device, dtype=t.dtype)
    return t
