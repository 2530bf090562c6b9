"""The logit lens through nnsight, for models too large for the local GPU (NDIF remote execution).

`layers(..., remote=True)` builds, per text and model, one nnsight trace on an
`nnsight.LanguageModel` that reads every chosen layer's output at the scored positions, applies the
model's own final norm (then OPT's `project_out`) and head (with its logit scaling and soft-capping, as
`compare`) inside the trace, and saves only the (n_layers, n_positions)
log-probabilities: the weights never leave the server and only small tensors come back. The trace
body uses torch and the model's modules only, so it serialises for the server.

`remote=True` ships to NDIF (an NDIF API key, a model NDIF hosts, given as a hub id; a tuned
adapter as `peft=` on the server), `remote="local"` runs nnsight's serverless dry run (serialise,
deserialise, execute here), `remote=False` with nnsight objects runs the trace locally.

UNTESTED AGAINST A LIVE SERVICE: the tests run this code path with the NDIF call replaced by
nnsight's local simulation backend (`_ndif_backend` is the mocked boundary) and check that the
numbers equal the local hook engine's.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch

from specprobe.core.architecture import finish_logits, split_model, unwrap_peft
from specprobe.core.engines import engine_kind
from specprobe.core.items import fit_max_length
from specprobe.core.models import (
    ModelLoadError,
    check_adapter_layers_enabled,
    check_same_tokenizer,
    check_weights_loaded,
    model_context_length,
    model_ref,
    model_tokenizer,
    shares_adapted_model,
)
from specprobe.probe.hooks import check_hookable, resolve_layers, same_depth
from specprobe.probe.inputs import DEFAULT_TEMPLATE
from specprobe.probe.lens import LayerView, lens_frame
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions
from specprobe.probe.prepare import options_meta, prepare


def nnsight_model(model: Any, tokenizer: Any = None, peft: str | None = None, revision: str | None = None):
    """An nnsight LanguageModel: given one (nnterp's StandardizedTransformer included) as is; a loaded model
    wrapped; a hub id (at `revision`) without loading weights."""
    import nnsight

    if isinstance(model, nnsight.NNsight) or engine_kind(model) == "nnsight":  # LanguageModel is no NNsight (0.8)
        return model
    if isinstance(model, torch.nn.Module):
        check_weights_loaded(model, "model")  # nnsight failed on it with "Cannot copy out of meta tensor"
    kwargs = {"tokenizer": tokenizer} if tokenizer is not None else {}
    if peft is not None:
        kwargs["peft"] = peft
    if revision is not None:
        kwargs["revision"] = revision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice (0.8 prefers TransformersModel)
        return nnsight.LanguageModel(model, **kwargs)


def _torch_model(lm) -> torch.nn.Module:
    return getattr(lm, "_module", lm)


class ModulePaths(NamedTuple):
    """Where the lens's pieces sit inside an nnsight model, and the head's post-processing."""

    layers: str  # the decoder layer list
    norm: str  # the final norm
    head: str  # the output embedding
    n_layers: int
    proj: str | None = None  # a projection after the final norm (OPT's project_out)
    logit_multiply: float = 1.0  # Cohere's logit scale (`finish_logits`)
    logit_divide: float = 1.0  # Granite's logits scaling
    softcap: float | None = None  # Gemma 2's final logit soft-capping


def module_paths(lm) -> ModulePaths:
    """Dotted paths of the decoder layer list, final norm (and projection after it) and head inside the
    nnsight model, n_layers, and the head's logit scaling and soft-capping (`SplitModel`'s, as compare)."""
    root = _torch_model(lm)
    split = split_model(root)
    check_hookable(split)  # same supported families as the local engine
    assert split.layers is not None  # check_hookable refuses models without a layer list
    names = {id(m): n for n, m in root.named_modules()}
    head = unwrap_peft(root).get_output_embeddings()
    proj = names[id(split.final_proj)] if split.final_proj is not None else None
    return ModulePaths(
        names[id(split.layers)],
        names[id(split.final_norm)],
        names[id(head)],
        len(split.layers),
        proj,
        split.logit_multiply,
        split.logit_divide,
        split.softcap,
    )


def _envoy(lm, path: str):
    obj = lm
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _ndif_backend(lm, remote: bool | str):
    """The boundary with NDIF: nnsight's RemoteBackend for this model (mocked in the tests)."""
    if hasattr(lm, "_remote_backend"):  # nnsight >= 0.8
        return lm._remote_backend(remote, True, None, False)
    from nnsight.intervention.backends.remote import RemoteBackend  # nnsight < 0.8, as its trace(remote=True)

    return RemoteBackend(lm.to_model_key(), blocking=True)


def _backend(lm, remote: bool | str):
    if not remote:
        return None
    if remote == "local":
        try:
            from nnsight.intervention.backends.local import LocalSimulationBackend
        except ImportError:  # nnsight < 0.8 (the nnterp extra pins it): same class, other module
            from nnsight.intervention.backends.local_simulation import (  # pyright: ignore[reportMissingImports]
                LocalSimulationBackend,
            )

        return LocalSimulationBackend(lm)
    return _ndif_backend(lm, remote)


def trace_lens(
    lm,
    ids: Sequence[int],
    positions: Sequence[int],
    layer_ids: Sequence[int],
    *,
    remote: bool | str = False,
    paths: ModulePaths | None = None,
) -> np.ndarray:
    """(len(layer_ids), len(positions)) log p(ids[p] | ids[:p]) read off each layer, in one nnsight trace."""
    paths = paths or module_paths(lm)
    layers = _envoy(lm, paths.layers)
    norm = _envoy(lm, paths.norm)
    proj = _envoy(lm, paths.proj) if paths.proj is not None else None
    head = _envoy(lm, paths.head)
    rows = [p - 1 for p in positions]
    targets = [ids[p] for p in positions]
    chosen = list(layer_ids)
    inputs = torch.tensor([list(ids[: max(positions) + 1])])
    with torch.no_grad(), lm.trace(inputs, backend=_backend(lm, remote)):
        outs = []
        for layer in chosen:
            h = layers[layer].output
            h = h[0] if isinstance(h, tuple) else h
            x = norm(h[0, rows])
            if proj is not None:
                x = proj(x)
            # the head's post-processing, the function `SplitModel.head` (compare) runs
            logits = finish_logits(head(x), paths.logit_multiply, paths.logit_divide, paths.softcap).float()
            outs.append(torch.log_softmax(logits, dim=-1)[torch.arange(len(rows)), targets])
        # detached: nnsight < 0.8 runs this body in a thread of its own, where no_grad does not hold
        lens = torch.stack(outs).detach().cpu().save()  # pyright: ignore[reportAttributeAccessIssue]  # nnsight adds .save() in a trace
    return lens.double().numpy()


def _load_models(base: Any, tuned: Any, tokenizer: Any, remote: bool | str) -> tuple[Any, Any, Any]:
    """The base and tuned nnsight models (a tuned adapter id is attached to the base on the server), in
    eval mode (dropout off, as `ModelPair` runs them), and the tokenizer to use (the one given, else the
    base model's), which the tuned model's own must match. Run here (`remote` False or "local"), a lazily
    loaded model gets its weights first, so that eval mode holds for the modules that run (nnsight's
    `peft=` attaches a LoRA in train mode: dropout made two identical calls differ by 0.12)."""
    if base is None:
        raise ValueError(
            "the nnsight lens (remote=) needs base=: a hub id, folder or loaded model without the adapter (to "
            "score a lone PeftModel, whose base view is its adapter disabled, leave remote= off)"
        )
    base, tuned = (os.fspath(m) if isinstance(m, os.PathLike) else m for m in (base, tuned))  # as ModelPair takes them
    # a hub id pinned as "org/name@<revision>" (`core.models.model_ref`, as ModelPair.load reads it): nnsight
    # takes the revision apart; given whole, it looked for a repository named "name@<revision>"
    (base, base_rev), (tuned, tuned_rev) = (model_ref(m) if isinstance(m, str) else (m, None) for m in (base, tuned))
    given, tokenizer = tokenizer, _own_tokenizer(base, tokenizer, base_rev)
    base_lm = nnsight_model(base, tokenizer, revision=base_rev)
    if isinstance(tuned, str) and _is_adapter(tuned):
        if not isinstance(base, str):
            raise ValueError(
                f"tuned {tuned!r} is an adapter: with remote=, give the base as a hub id or folder (nnsight "
                "attaches the adapter to it), or pass tuned as an nnsight model with the adapter loaded"
            )
        if importlib.util.find_spec("nnsight.modeling.peft") is None:
            raise ValueError(
                f"tuned {tuned!r} is an adapter: this nnsight (< 0.8) cannot attach one (no peft=); pass tuned as a "
                "loaded PeftModel, or install nnsight >= 0.8"
            )
        tuned_lm = nnsight_model(base, tokenizer, peft=tuned, revision=base_rev)
    else:
        own = _own_tokenizer(tuned, None if isinstance(tuned, str) else given, tuned_rev)
        tuned_lm = nnsight_model(tuned, own, revision=tuned_rev)
    tok = tokenizer if tokenizer is not None else getattr(base_lm, "tokenizer", None)
    if tok is None:
        raise ValueError("pass tokenizer= (the nnsight model has none)")
    check_same_tokenizer(tok, getattr(tuned_lm, "tokenizer", None), "the tuned nnsight model")
    for lm in (base_lm, tuned_lm):
        if remote is not True and not getattr(lm, "dispatched", True):
            lm.dispatch()  # the real weights, now: loaded at the first trace, the module would run in train mode
        _torch_model(lm).eval()
    _check_views(_torch_model(base_lm), _torch_model(tuned_lm))
    return base_lm, tuned_lm, tok


def _check_views(base: torch.nn.Module, tuned: torch.nn.Module) -> None:
    """Refused as `ModelPair.load` refuses them: a tuned PeftModel whose adapter layers are switched off, and
    a base that is the tuned PeftModel (or the model peft injected it into), which would run the adapter too:
    either way every delta came out 0."""
    check_adapter_layers_enabled(tuned)
    if shares_adapted_model(base, tuned):
        raise ModelLoadError(
            "base and tuned are the same PeftModel (or base is the model it was made from, which peft changed in "
            "place): the nnsight lens would run the adapter for both; give the base as a model without it (its "
            "hub id or folder, or a copy loaded apart), or leave remote= off and pass base=None"
        )


def _own_tokenizer(model: Any, tokenizer: Any, revision: str | None = None) -> Any:
    """The tokenizer to give nnsight for `model`: `core.models.model_tokenizer` (the one given, else a hub
    id's, folder's or loaded model's own: nnsight cannot guess it for a local folder and failed with
    'Impossible to guess which tokenizer to use'), but None for an nnsight model given without one (its own)."""
    hf_model = isinstance(model, torch.nn.Module) and engine_kind(model) is None
    if tokenizer is None and not (isinstance(model, (str, os.PathLike)) or hf_model):
        return None
    return model_tokenizer(model, tokenizer, revision=revision)


def _trace_both(
    base_lm: Any, tuned_lm: Any, prep: Any, layer_ids: Any, remote: bool | str
) -> tuple[dict[str, list], dict[str, float], int, list]:
    """The logit lens of every prepared item through both models: (lens per variant, seconds per variant,
    the number of layers, the layers chosen)."""
    lms = {"base": base_lm, "tuned": tuned_lm}
    paths = {variant: module_paths(lm) for variant, lm in lms.items()}
    n_layers = same_depth({variant: p.n_layers for variant, p in paths.items()})
    chosen = resolve_layers(layer_ids, n_layers)
    lens, timings = {}, {}
    for variant, lm in lms.items():
        t0 = time.perf_counter()
        lens[variant] = [
            trace_lens(lm, item.ids, item.positions, chosen, remote=remote, paths=paths[variant]) for item in prep.items
        ]
        timings[variant] = round(time.perf_counter() - t0, 4)
    return lens, timings, n_layers, chosen


def remote_layers(
    base: Any,
    tuned: Any,
    terms: Any,
    texts: Any = None,
    *,
    layer_ids=None,
    controls: str | Sequence[str] | None = "auto",
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    max_length: int | None = None,
    long_texts: str = "window",
    tokenizer: Any = None,
    seed: int = 0,
    remote: bool | str = True,
    options: ProbeOptions | None = None,
) -> LayerView:
    """`layers()` through nnsight: base/tuned are nnsight models, loaded models or hub ids (tuned may be a
    PEFT adapter id, attached on the server with nnsight's `peft=`). Same occurrences and table.
    `options`: a `ProbeOptions` in place of the keyword arguments from `controls` to `seed` (of which
    this engine uses these; batch size, device, dtype and progress do not apply)."""
    opts = ProbeOptions.resolve(
        options,
        remote_layers,
        controls=controls,
        n_controls=n_controls,
        template=template,
        match=match,
        add_bos=add_bos,
        max_length=max_length,
        long_texts=long_texts,
        tokenizer=tokenizer,
        seed=seed,
    )
    if tuned is None:
        raise ValueError("the layer views need a tuned model: pass tuned=")
    base_lm, tuned_lm, tok = _load_models(base, tuned, opts.tokenizer, remote)
    opts = replace(opts, max_length=fit_max_length(opts.max_length, model_context_length(_torch_model(base_lm), tok)))
    prep = prepare(tok, terms, texts, opts)
    lens, timings, n_layers, chosen = _trace_both(base_lm, tuned_lm, prep, layer_ids, remote)
    meta: dict[str, Any] = {
        "base": str(getattr(base_lm, "repo_id", None) or type(_torch_model(base_lm)).__name__),
        "tuned": str(tuned if isinstance(tuned, str) else type(_torch_model(tuned_lm)).__name__),
    }
    meta.update(options_meta(prep))
    meta.update(
        {
            "n_layers": n_layers,
            "layers": chosen,
            "engine": f"nnsight trace (remote={remote!r}; live NDIF service untested)",
            "cost": {"traces_per_model": len(prep.items), "seconds": timings},
        }
    )
    return LayerView(
        lens_frame(prep, chosen, lens), meta, {"term_specialties": {t: list(s) for t, s in prep.term_map.items()}}
    )


def _is_adapter(name: str) -> bool:
    from specprobe.core.models import is_adapter_dir

    return is_adapter_dir(name)  # a hub adapter id: pass tuned=nnsight.LanguageModel(base_id, peft=adapter_id)
