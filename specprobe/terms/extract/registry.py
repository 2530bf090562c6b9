"""The extraction backends by name (imported lazily: each needs its own heavy dependencies)."""

from __future__ import annotations

from .base import Extractor

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
