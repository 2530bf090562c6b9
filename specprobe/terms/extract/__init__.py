"""Term extraction backends; all return `Mention` records (see `base`)."""

from __future__ import annotations

from .base import Extractor, Mention
from .registry import BACKENDS, get_extractor

__all__ = ["BACKENDS", "Extractor", "Mention", "get_extractor"]
