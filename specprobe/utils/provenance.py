"""Library versions and environment facts recorded with every result, so a number can be traced."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata

_PACKAGES = ("specprobe", "torch", "transformers", "tokenizers", "peft", "transformer-lens", "nnsight", "numpy")
NOT_INSTALLED = "not installed"


def library_versions(
    extra: Sequence[str] = (), *, defaults: bool = True, missing: str | None = NOT_INSTALLED
) -> dict[str, str]:
    """Installed versions, in order: python, platform and the core packages (unless `defaults=False`),
    then the `extra` packages. `missing`: the value recorded for a package that is not installed
    (None leaves it out)."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()} if defaults else {}
    for name in (_PACKAGES if defaults else ()) + tuple(extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
