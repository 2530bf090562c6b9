"""Term extraction backends; all return `Mention` records (see `base`)."""

from __future__ import annotations

from .base import Extractor, Mention, get_extractor

__all__ = ["Extractor", "Mention", "get_extractor"]
