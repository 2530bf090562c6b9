"""`compare(base, tuned, terms)`: in-context log-probabilities of terms (and control words) under a
base and a fine-tuned model, one row per occurrence, through the shared scoring core."""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from specprobe.probe.comparison import Comparison
from specprobe.probe.controls import choose_controls
from specprobe.probe.encoding import EncodedText, encode
from specprobe.probe.inputs import DEFAULT_TEMPLATE, normalize_terms, normalize_texts
from specprobe.probe.models import ModelPair
from specprobe.probe.occurrences import (
    NO_BOS_AT_START,
    STRADDLES,
    TRUNCATED_CONTEXT,
    MatchOptions,
    find_spans,
    token_span,
)
from specprobe.probe.scoring import ScoreItem, score_items
from specprobe.terms.datasets import TextRecord

log = logging.getLogger(__name__)


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


def context_length(pair: ModelPair) -> int:
    """The longest input the model takes (its position table), capped by the tokenizer's limit."""
    from specprobe.probe.architecture import unwrap_peft

    cfg = unwrap_peft(pair.base_model).config
    limits = [getattr(cfg, a) for a in ("max_position_embeddings", "n_positions", "seq_length") if isinstance(getattr(cfg, a, None), int)]
    tok_limit = getattr(pair.tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 10**7:
        limits.append(tok_limit)
    return min(limits) if limits else 2048


def locate(records: Sequence[TextRecord], encodings: Sequence[EncodedText], words: dict[str, tuple[str, ...]],
           is_control: bool, opts: MatchOptions, exclude: dict[int, list[tuple[int, int]]] | None = None) -> list[Occurrence]:
    """Every occurrence of every word in every text, mapped to tokens and flagged."""
    occs: list[Occurrence] = []
    for ti, (rec, enc) in enumerate(zip(records, encodings)):
        for word, specs in words.items():
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


def build_items(encodings: Sequence[EncodedText], occs: Sequence[Occurrence], max_length: int,
                long_texts: str) -> tuple[list[ScoreItem], list[tuple[int, list[int]]]]:
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
            raise ValueError(f"text {ti} needs {needed} tokens, more than the model's context of {max_length}; "
                             "pass long_texts='window' to score it in sliding windows")
        else:
            groups = defaultdict(list)
            keep = max_length - (1 if enc.has_bos else 0)
            for oi in ois:
                ws = max(0, occs[oi].last + 1 - keep)
                if ws > 0 and occs[oi].first - ws < 1 and not enc.has_bos:
                    ws = occs[oi].first - 1
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
) -> Comparison:
    """Log-probabilities of every occurrence of every term, under base and tuned, with control words.

    `base`/`tuned`: hub ids, local directories (tuned may be a PEFT adapter directory), loaded
    models, or pass a ready `ModelPair` as `base` and leave `tuned` None. `terms`: a Lexicon, a
    mapping term -> specialties, or a list. `texts`: strings or records; default: the lexicon's
    contexts, or `template` filled with each term. `controls`: "auto" (frequency-matched ordinary
    words), a list of words, or None. Long texts: "window" scores each occurrence with as much
    left context as fits (flagged `truncated_context`); "error" refuses.
    """
    if terms is None:
        raise ValueError("terms is required (a Lexicon, a mapping term -> specialties, or a list)")
    if long_texts not in ("window", "error"):
        raise ValueError(f"long_texts must be 'window' or 'error', got {long_texts!r}")
    term_map = normalize_terms(terms)
    records = normalize_texts(texts, terms, term_map, template)
    pair = base if isinstance(base, ModelPair) else ModelPair.load(base, tuned, tokenizer=tokenizer, device=device, dtype=dtype)
    if len(pair.variants) < 2:
        raise ValueError("compare needs a tuned model: pass tuned= (an adapter directory, a model, or a PeftModel)")
    L = max_length or context_length(pair)
    encodings = [encode(pair.tokenizer, r.text, add_bos) for r in records]

    occs = locate(records, encodings, term_map, False, match)
    term_counts = Counter(o.term for o in occs)
    control_words: list[str] = []
    if controls == "auto":
        control_words = choose_controls([r.text for r in records], {t: term_counts.get(t, 0) for t in term_map},
                                        n=n_controls, seed=seed)
    elif controls:
        if isinstance(controls, str):
            raise TypeError("controls must be 'auto', None, or a list of words")
        control_words = [str(c) for c in controls]
    if control_words:
        taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for o in occs:
            taken[o.text_index].append((o.start, o.end))
        occs += locate(records, encodings, {w: ("control",) for w in control_words}, True, match, exclude=taken)

    items, where = build_items(encodings, occs, L, long_texts)
    scored: dict[str, list] = {}
    for variant in pair.variants:
        with pair.view(variant) as split:
            scored[variant] = score_items(split, items, batch_size=batch_size, progress=progress, desc=f"scoring {variant}")

    rows = []
    for oi, occ in enumerate(occs):
        rec = records[occ.text_index]
        item_i, slots = where[oi]
        if item_i >= 0:
            tok_b = scored["base"][item_i].logps[slots]
            tok_t = scored["tuned"][item_i].logps[slots]
            lb, lt = float(tok_b.sum()), float(tok_t.sum())
        else:
            tok_b = tok_t = np.array([])
            lb = lt = math.nan
        rows.append({
            "text_id": rec.id,
            "term": occ.term,
            "specialties": occ.specialties,
            "text_specialties": rec.specialties,
            "surface": rec.text[occ.start:occ.end],
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
        })
    frame = pd.DataFrame(rows, columns=Comparison.columns)
    found = {o.term for o in occs if not o.is_control}
    missing = sorted(t for t in term_map if t not in found)
    if missing:
        log.warning("%d of %d terms occur in no text (see Comparison.missing)", len(missing), len(term_map))
    meta = dict(pair.metadata)
    meta["options"] = {
        "match": asdict(match), "add_bos": add_bos, "batch_size": batch_size, "max_length": L,
        "long_texts": long_texts, "controls": controls if isinstance(controls, (str, type(None))) else "given",
        "n_controls": n_controls, "template": template if texts is None else None, "seed": seed,
    }
    meta["n_texts"] = len(records)
    meta["n_terms"] = len(term_map)
    meta["control_words"] = control_words
    meta["offsets_source"] = dict(Counter(e.offsets_source for e in encodings))
    return Comparison(frame, meta, {"missing": missing, "term_specialties": {t: list(s) for t, s in term_map.items()}})
