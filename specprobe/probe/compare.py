"""`compare(base, tuned, terms)`: in-context log-probabilities of terms (and control words) under a
base and a fine-tuned model, one row per occurrence, through the shared scoring core.

Under an initialised torch.distributed process group the ranks share the scoring (data-parallel,
see `specprobe.core.distributed`) and each returns the same `Comparison`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from specprobe.core.checkpoint import remove_checkpoint, view_checkpoint
from specprobe.core.items import check_max_length
from specprobe.core.scoring import batch_rows, score_items
from specprobe.probe.comparison import Comparison, occurrence_rows
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
    batch_size: int | None = None,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    options: ProbeOptions | None = None,
    checkpoint: str | os.PathLike | None = None,
    keep_checkpoint: bool = False,
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
    value as well is an error). `checkpoint`: a folder where finished batches are kept while scoring, so
    that the same call, rerun after a crash or kill, resumes there (`specprobe.core.checkpoint`: the
    batches are checked against the models before they are used); its batches are removed once the
    comparison is made, unless `keep_checkpoint` (for a caller that removes them after saving the result,
    as `specprobe compare` does: a failed save then loses no scoring).
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
    return _compare(base, tuned, terms, texts, opts, checkpoint, keep_checkpoint)


def _compare(
    base: Any,
    tuned: Any,
    terms: Any,
    texts: Any,
    opts: ProbeOptions,
    checkpoint: str | os.PathLike | None = None,
    keep_checkpoint: bool = False,
) -> Comparison:
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
    checkpoints = {}
    if checkpoint is not None:
        checkpoints = {v: view_checkpoint(checkpoint, pair.metadata, v) for v in pair.variants}
    for variant in pair.variants:
        with pair.view(variant) as split:
            scored[variant] = score_items(
                split,
                prep.items,
                batch_size=opts.batch_size,
                progress=opts.progress,
                desc=f"scoring {variant}",
                distribute=True,
                checkpoint=checkpoints.get(variant),
            )
    frame = pd.DataFrame(occurrence_rows(prep, scored), columns=Comparison.columns)
    found = {o.term for o in prep.occs if not o.is_control}
    missing = sorted(t for t in prep.term_map if t not in found)
    if missing:
        log.warning("%d of %d terms occur in no text (see Comparison.missing)", len(missing), len(prep.term_map))
    meta = dict(pair.metadata)
    meta.update(options_meta(prep, batch_rows(pair.device, opts.batch_size)))
    meta["offsets_source"] = prep.offsets_source
    meta["texts_in_training_data"] = _texts_in_training_data(pair, prep)
    comparison = Comparison(
        frame, meta, {"missing": missing, "term_specialties": {t: list(s) for t, s in prep.term_map.items()}}
    )
    if checkpoint is not None and not keep_checkpoint:
        remove_checkpoint(checkpoint)  # every run's batches, stale keys' too; the folder if that empties it
    return comparison


def _texts_in_training_data(pair: Any, prep: Prepared) -> int | None:
    """How many scored texts are questions the tuned adapter was trained on (its manifest, checked), with a
    warning: there the delta mixes memorisation of the training questions with any shift; None when it
    cannot be known (no adapter, no manifest, the training data not here)."""
    from specprobe.probe.training_data import training_texts

    adapter = pair.metadata.get("tuned") if getattr(pair, "adapter_mode", False) else None
    trained = training_texts(adapter) if isinstance(adapter, str) else None
    if trained is None:
        return None
    n = sum(rec.text in trained for rec in prep.records)
    if n:
        log.warning(
            "%d of %d texts are questions the adapter was trained on: their deltas mix memorisation with the "
            "shift; score held-out questions (specprobe run splits them), or compare the groups with seen_unseen",
            n,
            len(prep.records),
        )
    return n
