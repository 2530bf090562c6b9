"""Optional dependencies: import one, or fail with a one-line error naming the extra that installs it.

`pyarrow` (parquet files) and `datasets` (Hugging Face datasets) are extras, not requirements: only
the features that need them import them, inside the function, through `require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra name -> the pip requirement it installs (kept in step with pyproject.toml)
EXTRAS = {"parquet": "pyarrow>=14", "hf": "datasets>=2.16"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError`: "<purpose> needs <module>: pip install 'specprobe[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: pip install 'specprobe[{extra}]'"
        ) from exc
