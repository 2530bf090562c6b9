"""The mention record and helpers shared by every extraction backend (the registry is `registry`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Mention:
    """One term occurrence in a text.

    `text[start:end] == surface`. `term` is the lexicon key the mention counts for (the commonest lower-cased
    surface form of its normalised form, or for an abbreviation the key of its long form); `canonical` and
    `concept_id` name the ontology concept (the first of `concept_ids` when a string names several), and
    `source` the ontology ("icd10cm", "hpo", "umls", ...).
    """

    surface: str
    start: int
    end: int
    canonical: str
    concept_id: str
    source: str
    concept_ids: tuple[str, ...] = field(default=())
    norm: str = ""  # normalised form used to group surface variants (plural, case)
    abbreviation_of: str | None = None  # the long form when the surface is an abbreviation defined in the text

    def to_dict(self) -> dict:
        return asdict(self)


class Extractor(Protocol):
    """A backend: `name` and `extract(text) -> list[Mention]` (non-overlapping, in text order)."""

    name: str

    def extract(self, text: str) -> list[Mention]: ...

    def extract_many(self, texts: Sequence[str], progress: bool = False) -> list[list[Mention]]: ...


def as_text_list(texts: Iterable[str]) -> list[str]:
    """`texts` as a list (an iterator is read once, here), refusing a single string and non-strings."""
    if isinstance(texts, str):
        raise TypeError("extract_many takes a list of texts, not a single string; use extract(text)")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__}: {t!r:.60}")
    return texts


def iter_progress(items: Iterable, total: int, enabled: bool, desc: str):
    """`items`, with progress shown on stderr when enabled (`specprobe.utils.progress`)."""
    if not enabled:
        return items
    from specprobe.utils.progress import track

    return track(items, total, desc, "text")
