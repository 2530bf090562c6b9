"""`compare(base, tuned, terms)`: in-context log-probabilities of terms (and control words) under a
base and a fine-tuned model, one row per occurrence, through the shared scoring core.

Under an initialised torch.distributed process group the ranks share the scoring (data-parallel,
see `specprobe.core.distributed`) and each returns the same `Comparison`."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from specprobe.core.items import check_max_length
from specprobe.core.scoring import score_items
from specprobe.probe.comparison import Comparison
from specprobe.probe.inputs import DEFAULT_TEMPLATE, materialize, normalize_terms, normalize_texts
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions
from specprobe.probe.prepare import Prepared, load_pair, options_meta, prepare

log = logging.getLogger(__name__)


def compare(
    base: Any,
    tuned: Any = None,
    terms: Any = None,
    texts: Any = None,
    *,
    controls: str | Sequence[str] | None = "auto",
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    options: ProbeOptions | None = None,
) -> Comparison:
    """Log-probabilities of every occurrence of every term, under base and tuned, with control words.

    `base`/`tuned`: hub ids, local directories (tuned may be a PEFT adapter directory), loaded
    models, or pass a ready `ModelPair` as `base` and leave `tuned` None. `terms`: a Lexicon, a
    mapping term -> specialties, or a list. `texts`: strings or records; default: the lexicon's
    contexts, or `template` filled with each term. `controls`: "auto" (frequency-matched ordinary
    words), a list of words, or None. `max_length`: the context length (None: the model's; more
    than the model's is an error). Long texts: "window" scores each occurrence with as much
    left context as fits (flagged `truncated_context`); "error" refuses. `options`: a `ProbeOptions`
    in place of the keyword arguments from `controls` to `seed` (a keyword argument set to another
    value as well is an error).
    """
    opts = ProbeOptions.resolve(
        options,
        compare,
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
    return _compare(base, tuned, terms, texts, opts)


def _compare(base: Any, tuned: Any, terms: Any, texts: Any, opts: ProbeOptions) -> Comparison:
    if terms is None:
        raise ValueError("terms is required (a Lexicon, a mapping term -> specialties, or a list)")
    # validate cheap inputs before loading any model (quietly: prepare() repeats it and warns once)
    check_max_length(opts.max_length)
    terms, texts = materialize(terms), materialize(texts)
    inputs_log = logging.getLogger("specprobe.probe.inputs")
    level = inputs_log.level
    inputs_log.setLevel(logging.ERROR)
    try:
        term_map = normalize_terms(terms, match=opts.match)
        normalize_texts(texts, terms, term_map, opts.template)  # given, the lexicon's, or the template's
    finally:
        inputs_log.setLevel(level)
    pair = load_pair(base, tuned, opts.tokenizer, opts.device, opts.dtype, purpose="compare")
    prep = prepare(pair, terms, texts, opts)
    scored: dict[str, list] = {}
    for variant in pair.variants:
        with pair.view(variant) as split:
            scored[variant] = score_items(
                split,
                prep.items,
                batch_size=opts.batch_size,
                progress=opts.progress,
                desc=f"scoring {variant}",
                distribute=True,
            )
    frame = pd.DataFrame(_occurrence_rows(prep, scored), columns=Comparison.columns)
    found = {o.term for o in prep.occs if not o.is_control}
    missing = sorted(t for t in prep.term_map if t not in found)
    if missing:
        log.warning("%d of %d terms occur in no text (see Comparison.missing)", len(missing), len(prep.term_map))
    meta = dict(pair.metadata)
    meta.update(options_meta(prep, opts.batch_size))
    meta["offsets_source"] = prep.offsets_source
    return Comparison(
        frame, meta, {"missing": missing, "term_specialties": {t: list(s) for t, s in prep.term_map.items()}}
    )


def _occurrence_rows(prep: Prepared, scored: dict[str, list]) -> list[dict]:
    """One row per occurrence: its log-probability under base and tuned (NaN where not scorable)."""
    rows = []
    for oi, occ in enumerate(prep.occs):
        rec = prep.records[occ.text_index]
        item_i, slots = prep.where[oi]
        if item_i >= 0:
            tok_b = scored["base"][item_i].logps[slots]
            tok_t = scored["tuned"][item_i].logps[slots]
            lb, lt = float(tok_b.sum()), float(tok_t.sum())
        else:
            tok_b = tok_t = np.array([])
            lb = lt = math.nan
        rows.append(
            {
                "text_id": rec.id,
                "term": occ.term,
                "specialties": occ.specialties,
                "text_specialties": rec.specialties,
                "surface": rec.text[occ.start : occ.end],
                "start": occ.start,
                "end": occ.end,
                "n_tokens": occ.n_tokens,
                "logp_base": lb,
                "logp_tuned": lt,
                "delta": lt - lb,
                "delta_per_token": (lt - lb) / occ.n_tokens if occ.n_tokens else math.nan,
                "token_logp_base": [float(x) for x in tok_b],
                "token_logp_tuned": [float(x) for x in tok_t],
                "is_control": occ.is_control,
                "flags": ",".join(occ.flags),
            }
        )
    return rows
