"""The mention record shared by every extraction backend, and the backend registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Protocol, Sequence


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


BACKENDS = ("offline", "scispacy")


def get_extractor(backend: str = "offline", **options) -> Extractor:
    """Build the named backend; `options` go to its constructor (see `offline.OfflineExtractor`,
    `scispacy_backend.ScispacyExtractor`)."""
    if backend == "offline":
        from .offline import OfflineExtractor, default_offline_extractor

        return OfflineExtractor(**options) if options else default_offline_extractor()
    if backend == "scispacy":
        from .scispacy_backend import ScispacyExtractor

        return ScispacyExtractor(**options)
    raise ValueError(f"unknown extraction backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def iter_progress(items: Iterable, total: int, enabled: bool, desc: str):
    """Wrap `items` in a tqdm progress bar (on stderr) when enabled."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="text")
