"""Normalise what users pass as terms and texts into the two shapes compare works on.

Terms: a `Lexicon` (anything with `term_specialties()`), a mapping term -> specialties, or a plain
list. Texts: strings, `TextRecord`/`QARecord`s, or dicts with id/text/specialty; when omitted, a
lexicon's own contexts, and for plain terms a neutral template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from specprobe.terms.datasets import QARecord, TextRecord

DEFAULT_TEMPLATE = "Here is a word that appears in the text: {term}."
UNASSIGNED = "unassigned"


def normalize_terms(terms: Any) -> dict[str, tuple[str, ...]]:
    """term -> specialties (empty tuple when unknown); raises on empty or non-string terms."""
    if hasattr(terms, "term_specialties"):
        mapping = terms.term_specialties()
    elif isinstance(terms, Mapping):
        mapping = dict(terms)
    elif isinstance(terms, str):
        raise TypeError("terms must be a list, mapping or Lexicon, not a single string; wrap it in a list")
    elif isinstance(terms, Iterable):
        mapping = {t: () for t in terms}
    else:
        raise TypeError(f"terms must be a Lexicon, a mapping term -> specialties, or a list; got {type(terms).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for term, specs in mapping.items():
        if not isinstance(term, str):
            raise TypeError(f"terms must be strings, got {type(term).__name__}: {term!r}")
        if not term.strip():
            raise ValueError("terms contain an empty or whitespace-only term")
        if isinstance(specs, str):
            specs = (specs,)
        specs = tuple(str(s) for s in (specs or ()))
        key = term.strip()
        out[key] = tuple(dict.fromkeys(out.get(key, ()) + specs))
    if not out:
        raise ValueError("no terms given: pass at least one term")
    return out


def _record(obj: Any, index: int) -> TextRecord:
    if isinstance(obj, TextRecord):
        return obj
    if isinstance(obj, QARecord):
        return obj.as_text_record()
    if isinstance(obj, str):
        return TextRecord(f"text{index}", obj, ())
    if isinstance(obj, Mapping):
        if "text" not in obj:
            raise ValueError(f"texts[{index}]: a text record needs a 'text' field (got keys {sorted(obj)})")
        text = obj["text"]
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}]['text'] must be a string, got {type(text).__name__}")
        specs = obj.get("specialties", obj.get("specialty", ()))
        specs = (specs,) if isinstance(specs, str) else tuple(specs or ())
        return TextRecord(str(obj.get("id", f"text{index}")), text, specs)
    raise TypeError(f"texts[{index}] must be a string or a record with id, text, specialty; got {type(obj).__name__}: {obj!r:.60}")


def normalize_texts(texts: Any, terms: Any, term_map: dict[str, tuple[str, ...]], template: str = DEFAULT_TEMPLATE) -> list[TextRecord]:
    """The context texts: given ones, else the lexicon's own contexts, else one template text per term."""
    if texts is None:
        if hasattr(terms, "contexts"):
            return list(terms.contexts())
        if "{term}" not in template:
            raise ValueError(f"template {template!r} must contain '{{term}}'")
        return [TextRecord(f"template:{t}", template.format(term=t), specs) for t, specs in term_map.items()]
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings or records, not a single string")
    records = [_record(t, i) for i, t in enumerate(texts)]
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise ValueError(f"duplicate text id {r.id!r}")
        seen.add(r.id)
    if not records:
        raise ValueError("texts is empty")
    return records
