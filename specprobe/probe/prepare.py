"""Locate terms and control words in texts and plan the score items that cover them.

Shared by `compare`, the layer views and patching, so all of them see exactly the same occurrences.
`prepare` takes the analyses' shared `ProbeOptions`; `options_meta` is how every probe result
records those options (and its input counts) in its metadata.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from specprobe.core.encoding import EncodedText, encode
from specprobe.core.items import check_max_length, fit_max_length
from specprobe.core.models import ModelPair, context_length
from specprobe.core.scoring import ScoreItem
from specprobe.probe.controls import choose_controls, given_controls
from specprobe.probe.inputs import materialize, normalize_terms, normalize_texts
from specprobe.probe.occurrences import (
    NO_BOS_AT_START,
    STRADDLES,
    TRUNCATED_CONTEXT,
    MatchOptions,
    TextIndex,
    find_spans,
    token_span,
)
from specprobe.probe.options import ProbeOptions
from specprobe.terms.datasets import TextRecord

log = logging.getLogger(__name__)

OCCURRENCE_COLUMNS = ["text_id", "term", "specialties", "start", "end", "n_tokens", "is_control", "flags"]


@dataclass
class Occurrence:
    """One located occurrence of a term or control word, with its token positions."""

    text_index: int
    term: str
    specialties: tuple[str, ...]
    start: int
    end: int
    is_control: bool
    first: int = -1  # token positions (inclusive) in the encoded text
    last: int = -1
    flags: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return self.last - self.first + 1 if self.first >= 0 else 0

    @property
    def scorable(self) -> bool:
        return self.first >= 1


def locate(
    records: Sequence[TextRecord],
    encodings: Sequence[EncodedText],
    words: dict[str, tuple[str, ...]],
    is_control: bool,
    opts: MatchOptions,
    exclude: dict[int, list[tuple[int, int]]] | None = None,
) -> list[Occurrence]:
    """Every occurrence of every word in every text, mapped to tokens and flagged."""
    occs: list[Occurrence] = []
    for ti, (rec, enc) in enumerate(zip(records, encodings)):
        index = TextIndex(rec.text, opts)  # skips the regex of words that cannot occur in this text
        for word, specs in words.items():
            if not index.may_occur(word):
                continue
            for s, e in find_spans(rec.text, word, opts):
                if exclude and any(s < xe and e > xs for xs, xe in exclude.get(ti, ())):
                    continue
                occ = Occurrence(ti, word, specs, s, e, is_control)
                span = token_span(enc, rec.text, s, e)
                if span is None:
                    occ.flags.append("no_tokens")
                else:
                    occ.first, occ.last = span.first, span.last
                    if span.straddles:
                        occ.flags.append(STRADDLES)
                    if span.first == 0:
                        occ.flags.append(NO_BOS_AT_START)
                occs.append(occ)
    return occs


def build_items(
    encodings: Sequence[EncodedText], occs: Sequence[Occurrence], max_length: int, long_texts: str
) -> tuple[list[ScoreItem], list[tuple[int, list[int]]]]:
    """Score items (one per text, or per window for long texts) and, per occurrence, (item, slots)."""
    by_text: dict[int, list[int]] = defaultdict(list)
    for oi, occ in enumerate(occs):
        if occ.scorable:
            by_text[occ.text_index].append(oi)
    items: list[ScoreItem] = []
    where: list[tuple[int, list[int]]] = [(-1, [])] * len(occs)
    for ti, ois in sorted(by_text.items()):
        enc = encodings[ti]
        needed = max(occs[oi].last for oi in ois) + 1
        if needed <= max_length:
            groups = {0: ois}
        elif long_texts == "error":
            raise ValueError(
                f"text {ti} needs {needed} tokens, more than max_length={max_length} (default: the model's context); "
                "pass long_texts='window' to score it in sliding windows"
            )
        else:
            groups = defaultdict(list)
            keep = max_length - (1 if enc.has_bos else 0)
            for oi in ois:
                occ = occs[oi]
                if occ.n_tokens > max_length - 1:  # no window holds the term and one token of context
                    raise ValueError(
                        f"text {ti}: an occurrence of {occ.term!r} has {occ.n_tokens} tokens, more than fit in "
                        f"a window of max_length={max_length} tokens (default: the model's context) with one token of context before it"
                    )
                # an occurrence whose whole left context fits is not truncated (with BOS: ws = 1 is no cut)
                ws = 0 if occ.last + 1 <= max_length else occ.last + 1 - keep
                if ws > 0 and occ.first - ws < 1 and not enc.has_bos:
                    ws = occ.first - 1
                groups[ws].append(oi)
        for ws, members in sorted(groups.items()):
            if ws == 0:
                ids, shift = enc.ids, 0
            else:
                prefix = (enc.ids[0],) if enc.has_bos else ()
                ids, shift = prefix + enc.ids[ws:], ws - len(prefix)
                for oi in members:
                    occs[oi].flags.append(TRUNCATED_CONTEXT)
            positions = sorted({p - shift for oi in members for p in range(occs[oi].first, occs[oi].last + 1)})
            end = max(positions) + 1
            item = ScoreItem(tuple(ids[:end]), tuple(positions))
            slot = {p: k for k, p in enumerate(positions)}
            for oi in members:
                where[oi] = (len(items), [slot[p - shift] for p in range(occs[oi].first, occs[oi].last + 1)])
            items.append(item)
    return items, where


@dataclass
class Prepared:
    """Occurrences of terms (and control words) and the score items that cover them, as in compare()."""

    records: list[TextRecord]
    term_map: dict[str, tuple[str, ...]]
    occs: list[Occurrence]
    items: list[ScoreItem]
    where: list[tuple[int, list[int]]]  # per occurrence: (item index or -1, slots in that item's positions)
    control_words: list[str]
    options: dict
    offsets_source: dict = field(default_factory=dict)  # how many texts got offsets from the tokenizer / by decoding

    def occurrence_row(self, oi: int) -> dict:
        occ = self.occs[oi]
        return {
            "text_id": self.records[occ.text_index].id,
            "term": occ.term,
            "specialties": occ.specialties,
            "start": occ.start,
            "end": occ.end,
            "n_tokens": occ.n_tokens,
            "is_control": occ.is_control,
            "flags": ",".join(occ.flags),
        }

    def by_item(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for oi, (item_i, _) in enumerate(self.where):
            if item_i >= 0:
                out[item_i].append(oi)
        return out


def check_ready_pair(pair: ModelPair, device: str | None, dtype: str | None) -> None:
    """A loaded pair runs where and in the precision it was loaded: a `device` or `dtype` that asks for
    another is a ValueError (both were dropped: a run asking for bfloat16 on a pair loaded in float32 gave
    float32 numbers under a bfloat16 label). None and "auto" ask for nothing."""
    from specprobe.core.models import SHARD, resolve_device, resolve_dtype

    have_device, have_dtype = str(pair.metadata.get("device", pair.device)), str(pair.metadata.get("dtype"))
    wrong = []
    if device not in (None, "auto"):
        want = resolve_device(device)
        sharded = have_device.startswith(SHARD)
        if (device == SHARD) != sharded or (
            not sharded and (want.type != pair.device.type or want.index not in (None, pair.device.index))
        ):
            wrong.append(f"device={device!r}")
    if dtype not in (None, "auto") and str(resolve_dtype(dtype, pair.device)).replace("torch.", "") != have_dtype:
        wrong.append(f"dtype={dtype!r}")
    if wrong:
        raise ValueError(
            f"the ModelPair given was loaded on {have_device} in {have_dtype}, but {' and '.join(wrong)} asks "
            "otherwise; load the pair with them (ModelPair.load(..., device=, dtype=)) or leave them out"
        )


def load_pair(
    base: Any, tuned: Any, tokenizer: Any, device: str | None, dtype: str | None, purpose: str = "the layer views"
) -> ModelPair:
    """A ready `ModelPair` (passed through, where `device`/`dtype` must not ask for another placement or
    precision: `check_ready_pair`) or one loaded from base/tuned; it must have a tuned view."""
    if isinstance(base, ModelPair):
        check_ready_pair(base, device, dtype)
        pair = base
    else:
        pair = ModelPair.load(base, tuned, tokenizer=tokenizer, device=device, dtype=dtype)
    if len(pair.variants) < 2:
        raise ValueError(f"{purpose} needs a tuned model: pass tuned= (an adapter directory, a model, or a PeftModel)")
    return pair


def prepare(
    pair_or_tokenizer: Any, terms: Any, texts: Any, options: ProbeOptions | None = None, **kwargs: Any
) -> Prepared:
    """Locate terms and control words exactly as compare() does (same functions, same order).

    `options`: the shared `ProbeOptions`; or, without it, its fields as keyword arguments.
    """
    if options is not None and kwargs:
        raise ValueError(f"prepare: pass options= or keyword arguments ({', '.join(kwargs)}), not both")
    opts = options if options is not None else ProbeOptions(**kwargs)
    if terms is None:
        raise ValueError("terms is required (a Lexicon, a mapping term -> specialties, or a list)")
    if opts.long_texts not in ("window", "error"):
        raise ValueError(f"long_texts must be 'window' or 'error', got {opts.long_texts!r}")
    terms, texts = materialize(terms), materialize(texts)
    term_map = normalize_terms(terms, match=opts.match)
    records = normalize_texts(texts, terms, term_map, opts.template)
    if isinstance(pair_or_tokenizer, ModelPair):
        tokenizer, L = pair_or_tokenizer.tokenizer, fit_max_length(opts.max_length, context_length(pair_or_tokenizer))
    else:
        check_max_length(opts.max_length)
        tokenizer, L = pair_or_tokenizer, opts.max_length
        if L is None:
            raise ValueError("max_length is required when no loaded model gives the context length")
    encodings = [encode(tokenizer, r.text, opts.add_bos, label=f"text {r.id!r}") for r in records]
    occs = locate(records, encodings, term_map, False, opts.match)
    if not occs:
        raise ValueError(
            f"none of the {len(term_map)} term(s) occurs in the {len(records)} text(s): nothing to "
            "score (check the terms, the texts, and the matching options)"
        )
    control_words = _control_words(opts, records, term_map, occs)
    if control_words:
        taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for o in occs:
            taken[o.text_index].append((o.start, o.end))
        occs += locate(records, encodings, {w: ("control",) for w in control_words}, True, opts.match, exclude=taken)
    items, where = build_items(encodings, occs, L, opts.long_texts)
    _warn_truncated(occs, L)
    return Prepared(
        records,
        term_map,
        occs,
        items,
        where,
        control_words,
        opts.metadata(L, texts is not None),
        dict(Counter(e.offsets_source for e in encodings)),
    )


def _warn_truncated(occs: Sequence[Occurrence], max_length: int) -> None:
    """Say how many occurrences lost earlier text to a sliding window: a row flag alone is easily missed."""
    cut = [o for o in occs if TRUNCATED_CONTEXT in o.flags]
    if cut:
        log.warning(
            "%d of %d occurrence(s), in %d text(s) longer than the context of %d tokens, were scored without "
            "the start of their text (sliding windows; flag %s)",
            len(cut),
            len(occs),
            len({o.text_index for o in cut}),
            max_length,
            TRUNCATED_CONTEXT,
        )


def _control_words(
    opts: ProbeOptions, records: Sequence[TextRecord], term_map: dict[str, tuple[str, ...]], occs: Sequence[Occurrence]
) -> list[str]:
    """The control words: chosen to match the terms' frequencies ("auto"), given, or none."""
    controls = opts.controls
    if controls == "auto":
        term_counts = Counter(o.term for o in occs)
        return choose_controls(
            [r.text for r in records],
            {t: term_counts.get(t, 0) for t in term_map},
            n=opts.n_controls,
            seed=opts.seed,
            case_sensitive=opts.match.case_sensitive,
        )
    if controls:
        if isinstance(controls, str):
            raise TypeError("controls must be 'auto', None, or a list of words")
        return given_controls(controls, term_map, opts.match)
    return []


def options_meta(prep: Prepared, batch_size: int | None = None) -> dict:
    """The options and input counts a probe result records in its metadata: the same keys, values and
    order as always (caches and saved results depend on them). `batch_size` where the analysis batches."""
    opts = dict(prep.options)
    if batch_size is not None:
        opts["batch_size"] = batch_size
    return {
        "options": opts,
        "n_texts": len(prep.records),
        "n_terms": len(prep.term_map),
        "control_words": prep.control_words,
    }
