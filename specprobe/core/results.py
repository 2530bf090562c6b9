"""The base of every public result: a table plus provenance, with to_pandas / save / load / report.

Modelled on inseq's attribution outputs: results are plain data you can save, reload on another
machine without the model, aggregate and render.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from specprobe.utils.io import read_json, write_json
from specprobe.utils.provenance import library_versions, now_iso

SCHEMA_VERSION = 1
_RESULT_TYPES: dict[str, type[Result]] = {}
#: where each built-in result kind is defined, so that `Result.load` reads any saved file without the
#: caller importing its class first (a plugin-style lookup: core names no class of the layers above)
_KIND_MODULES = {
    "comparison": "specprobe.probe.comparison",
    "layers": "specprobe.probe.lens",
    "patching": "specprobe.probe.patching",
    "logit_attribution": "specprobe.probe.patching",
    "mc_evaluation": "specprobe.finetune.evaluation",
    "accuracy_matrix": "specprobe.finetune.accuracy_matrix",
    "experiment": "specprobe.app.experiment_result",
}


class Result:
    """A table (`to_pandas`) plus metadata (models, hashes, versions, options)."""

    kind: ClassVar[str] = "result"
    #: columns holding tuples (JSON turns them into lists; restored on load)
    tuple_columns: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _RESULT_TYPES[cls.kind] = cls

    def __init__(self, frame: pd.DataFrame, metadata: dict | None = None, extras: dict | None = None):
        self._frame = frame.reset_index(drop=True)
        self.metadata: dict = dict(metadata or {})
        self.metadata.setdefault("created", now_iso())
        if "versions" not in self.metadata:  # not setdefault: collecting versions costs ~40 ms
            self.metadata["versions"] = library_versions()
        self.extras: dict = dict(extras or {})

    def to_pandas(self) -> pd.DataFrame:
        """A copy of the result's main table, one row per observation."""
        return self._frame.copy()

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows, columns={list(self._frame.columns)})"

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write data and metadata to one JSON file (gzipped when the name ends in .gz), atomically."""
        payload = {
            "specprobe_result": self.kind,
            "schema_version": SCHEMA_VERSION,
            "metadata": self.metadata,
            "extras": self.extras,
            "columns": list(self._frame.columns),
            "rows": self._frame.to_dict(orient="records"),
        }
        return write_json(path, _jsonable(payload))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Load any saved result; called on a subclass it checks the kind matches."""
        payload = read_json(path)
        kind = payload.get("specprobe_result") if isinstance(payload, dict) else None
        if kind in _KIND_MODULES and kind not in _RESULT_TYPES:
            importlib.import_module(_KIND_MODULES[kind])
        if kind not in _RESULT_TYPES:
            raise ValueError(f"{path}: not a specprobe result file (kind {kind!r})")
        if payload.get("schema_version", 0) > SCHEMA_VERSION:
            raise ValueError(f"{path}: written by a newer specprobe (schema {payload['schema_version']})")
        target = _RESULT_TYPES[kind]
        if cls is not Result and not issubclass(target, cls):
            raise ValueError(f"{path}: holds a {target.__name__}, not a {cls.__name__}")
        frame = pd.DataFrame(payload["rows"], columns=payload["columns"])
        for col in target.tuple_columns:
            if col in frame:
                frame[col] = frame[col].map(lambda v: tuple(v) if isinstance(v, list) else v)
        return target(frame, payload.get("metadata"), payload.get("extras"))

    def report(self, path: str | os.PathLike) -> Path:
        """Render a self-contained HTML report of this result (see `specprobe.reports`)."""
        from specprobe.reports import render

        return render(self, path)


def _jsonable(obj: Any) -> Any:
    """Convert numpy / pandas scalars and tuples into JSON-native values, recursively."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def load_result(path: str | os.PathLike) -> Result:
    """Load any saved specprobe result (Comparison, LayerView, MCEvaluation, ...) as its own class."""
    return Result.load(path)
