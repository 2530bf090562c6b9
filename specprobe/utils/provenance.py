"""Library versions and environment facts recorded with every result, so a number can be traced."""

from __future__ import annotations

import functools
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
        found = installed_version(name)
        if found is not None:
            versions[name] = found
        elif missing is not None:
            versions[name] = missing
    return versions


@functools.cache
def installed_version(name: str) -> str | None:
    """A package's installed version (None if absent), read once per process: every result records the
    versions, and each lookup scans the installed packages' metadata (milliseconds each on a slow disk)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
