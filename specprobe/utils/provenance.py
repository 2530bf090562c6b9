"""Library versions and environment facts recorded with every result, so a number can be traced."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

_PACKAGES = ("specprobe", "torch", "transformers", "tokenizers", "peft", "transformer-lens", "nnsight", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
