"""`layers(base, tuned, terms)`: the logit lens, per layer, for every occurrence compare() scores.

Occurrences are found by the same pieces as `compare` (`locate`, `build_items`), and the forward
pass is the same scoring core with its layer hooks (`score_items(capture_layers=True)`): one pass
per batch of texts and model, whatever the number of layers. Each layer's residual stream at the
positions that predict the term's tokens goes through the final norm (fresh statistics) and head,
batch by batch; under a process group the batches are shared out between the ranks as compare's.
The table and its result class (`lens_frame`, `LayerView`) live in `specprobe.probe.lens`, shared
with the nnsight engine (`specprobe.probe.remote`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from specprobe.core.architecture import SplitModel
from specprobe.core.checkpoint import ScoreCheckpoint, remove_checkpoint, view_checkpoint
from specprobe.core.scoring import batch_rows, plan_device_batches, score_items
from specprobe.probe.hooks import pair_depth, resolve_layers
from specprobe.probe.inputs import DEFAULT_TEMPLATE
from specprobe.probe.lens import LayerView, lens_frame, lens_logprobs
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions

# OCCURRENCE_COLUMNS: still importable from here, as before
from specprobe.probe.prepare import OCCURRENCE_COLUMNS, Prepared, load_pair, options_meta, prepare  # noqa: F401
from specprobe.probe.remote import remote_layers
from specprobe.probe.tl_bridge import TL_ENGINE, bridged_pair, check_engine, engine_description
from specprobe.probe.tl_engine import lens_items as tl_lens_items


def layers(
    base: Any,
    tuned: Any = None,
    terms: Any = None,
    texts: Any = None,
    *,
    layer_ids: Sequence[int] | int | None = None,
    controls: str | Sequence[str] | None = "auto",
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    remote: bool | str = False,
    options: ProbeOptions | None = None,
    engine: str = "hooks",
    checkpoint: str | os.PathLike | None = None,
    keep_checkpoint: bool = False,
) -> LayerView:
    """Logit lens of every occurrence of every term (and control word), at every layer, base and tuned.

    Arguments as `compare` (`options`: a `ProbeOptions` in place of the keyword arguments from
    `controls` to `seed`). `layer_ids`: which decoder layers (default all; negative counts from the
    end; out of range is an error). `remote`: run the lens through nnsight instead of local hooks
    (True: NDIF's servers, "local": nnsight's serverless dry run); see `specprobe.probe.remote`.
    `engine`: "hooks" (torch hooks on the Hugging Face modules through the scoring core: the default,
    fastest, data-parallel) or "transformer_lens" (a TransformerBridge's hook points over the same
    weights, `specprobe.probe.tl_engine`; the `tl` extra). `checkpoint`, `keep_checkpoint`: finished
    batches kept on disk so that the same call, rerun after a kill, resumes, as `compare` keeps them
    (the default engine only).
    """
    check_engine(engine)
    if checkpoint is not None and (remote or engine != "hooks"):
        raise ValueError("checkpoint= keeps the batches of the default engine (hooks, not remote)")
    if remote and engine != "hooks":
        raise ValueError(f"remote= runs the lens through nnsight; engine={engine!r} runs locally (pick one)")
    opts = ProbeOptions.resolve(
        options,
        layers,
        controls=controls,
        n_controls=n_controls,
        template=template,
        match=match,
        add_bos=add_bos,
        batch_size=batch_size,
        max_length=max_length,
        long_texts=long_texts,
        device=device,
        dtype=dtype,
        tokenizer=tokenizer,
        progress=progress,
        seed=seed,
    )
    if remote:
        return remote_layers(base, tuned, terms, texts, layer_ids=layer_ids, remote=remote, options=opts)
    view = _local_layers(base, tuned, terms, texts, layer_ids, opts, engine, checkpoint)
    if checkpoint is not None and not keep_checkpoint:
        remove_checkpoint(checkpoint)
    return view


def _local_layers(
    base: Any,
    tuned: Any,
    terms: Any,
    texts: Any,
    layer_ids: Sequence[int] | int | None,
    opts: ProbeOptions,
    engine: str,
    checkpoint: str | os.PathLike | None = None,
) -> LayerView:
    """`layers()` with torch hooks on the Hugging Face modules (the scoring core), or through TL."""
    pair = load_pair(base, tuned, opts.tokenizer, opts.device, opts.dtype)
    n_layers = pair_depth(pair)
    chosen = resolve_layers(layer_ids, n_layers)
    bridged = bridged_pair(pair, (base, tuned)) if engine == TL_ENGINE else None
    prep = prepare(pair, terms, texts, opts)
    lens: dict[str, list[np.ndarray]] = {}
    timings = {}
    for variant in pair.variants:
        t0 = time.perf_counter()
        if bridged is not None:
            lens[variant] = tl_lens_items(bridged, variant, prep.items, chosen, opts.batch_size, opts.progress)
        else:
            store = view_checkpoint(checkpoint, pair.metadata, variant, chosen) if checkpoint is not None else None
            with pair.view(variant) as split:
                lens[variant] = _lens_items(split, prep, chosen, opts, desc=f"lens {variant}", checkpoint=store)
        timings[variant] = round(time.perf_counter() - t0, 4)
    frame = lens_frame(prep, chosen, lens)
    meta = dict(pair.metadata)
    meta.update(options_meta(prep, batch_rows(pair.device, opts.batch_size)))
    meta["n_layers"] = n_layers
    meta["layers"] = chosen
    meta["engine"] = engine_description(engine)
    meta["cost"] = {
        "forward_passes_per_model": len(plan_device_batches(prep.items, pair.device, opts.batch_size)),
        "items": len(prep.items),
        "seconds": timings,
    }
    return LayerView(frame, meta, {"term_specialties": {t: list(s) for t, s in prep.term_map.items()}})


def _lens_items(
    split: SplitModel,
    prep: Prepared,
    chosen: list[int],
    opts: ProbeOptions,
    desc: str,
    checkpoint: ScoreCheckpoint | None = None,
) -> list[np.ndarray]:
    """Per item, the (n_chosen, n_positions) lens log-probabilities under one model.

    The lens runs per batch inside the scoring core (`reduce_layers`), so no item's full residual
    stream outlives its batch, and a data-parallel run gathers only these log-probabilities."""

    def lens(states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return lens_logprobs(split, states[chosen], targets)

    scored = score_items(
        split,
        prep.items,
        batch_size=opts.batch_size,
        capture_layers=True,
        reduce_layers=lens,
        progress=opts.progress,
        desc=desc,
        distribute=True,
        checkpoint=checkpoint,
    )
    out = []
    for s in scored:
        assert s.layer_states is not None  # capture_layers=True keeps every item's lens rows
        out.append(s.layer_states.numpy())
    return out
