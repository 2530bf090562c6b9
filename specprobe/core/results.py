"""The base of every public result: a table plus provenance, with to_pandas / save / load / report.

Modelled on inseq's attribution outputs: results are plain data you can save, reload on another
machine without the model, aggregate and render.
"""

from __future__ import annotations

import hashlib
import importlib
import json
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
    "seen_unseen": "specprobe.probe.analyses.seen_unseen",
    "accuracy_link": "specprobe.probe.analyses.accuracy_link",
    "trajectory": "specprobe.probe.analyses.trajectory",
    "general_text_shift": "specprobe.probe.analyses.general_text",
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
    def _header(self) -> dict:
        """Everything but the rows: kind, schema version, metadata, extras and the column order."""
        return {
            "specprobe_result": self.kind,
            "schema_version": SCHEMA_VERSION,
            "metadata": self.metadata,
            "extras": self.extras,
            "columns": list(self._frame.columns),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write data and metadata to one file, atomically: JSON (gzipped when the name ends in .gz), or
        parquet when it ends in .parquet (list columns stay lists; metadata in the schema metadata;
        needs the `parquet` extra)."""
        if str(path).lower().endswith(".parquet"):
            from specprobe.utils.arrow import write_parquet

            return write_parquet(path, self.to_arrow())
        payload = dict(self._header(), rows=self._frame.to_dict(orient="records"))
        return write_json(path, _jsonable(payload))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Load any saved result (JSON, .json.gz or parquet); called on a subclass it checks the kind matches."""
        from specprobe.utils.arrow import is_parquet, read_parquet

        if is_parquet(path):
            table = read_parquet(path)  # its errors name the file
            try:
                return cls.from_arrow(table)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
        payload = read_json(path)
        target = cls._target(payload, str(path))
        if not isinstance(payload.get("rows"), list) or not isinstance(payload.get("columns"), list):
            raise ValueError(f"{path}: a damaged {target.__name__} file: no 'rows' or 'columns' list")
        frame = pd.DataFrame(payload["rows"], columns=payload["columns"])
        for col in target.tuple_columns:
            if col in frame:
                frame[col] = frame[col].map(lambda v: tuple(v) if isinstance(v, list) else v)
        return target(frame, payload.get("metadata"), payload.get("extras"))

    @classmethod
    def _target(cls, header: Any, where: str) -> type[Result]:
        """The result class a stored header names, checked against `cls` and the schema version."""
        kind = header.get("specprobe_result") if isinstance(header, dict) else None
        if kind in _KIND_MODULES and kind not in _RESULT_TYPES:
            importlib.import_module(_KIND_MODULES[kind])
        if kind is None and isinstance(header, dict) and header.get("schema") == "specprobe.terms.lexicon":
            raise ValueError(f"{where}: holds a specprobe Lexicon, not a result; read it with specprobe.Lexicon.load")
        if kind not in _RESULT_TYPES:
            raise ValueError(f"{where}: not a specprobe result file (kind {kind!r})")
        if header.get("schema_version", 0) > SCHEMA_VERSION:
            raise ValueError(f"{where}: written by a newer specprobe (schema {header['schema_version']})")
        target = _RESULT_TYPES[kind]
        if cls is not Result and not issubclass(target, cls):
            raise ValueError(f"{where}: holds a {target.__name__}, not a {cls.__name__}")
        return target

    # -- Arrow, parquet and Hugging Face datasets ------------------------------------------------
    def to_arrow(self) -> Any:
        """The table as a `pyarrow.Table`; the header (kind, metadata, extras) is in its schema metadata
        under `specprobe`. Needs the `parquet` extra."""
        from specprobe.utils.arrow import frame_to_arrow

        return frame_to_arrow(self._frame, _jsonable(self._header()))

    @classmethod
    def from_arrow(cls, table: Any) -> Result:
        """The result a `to_arrow()` table (or a parquet file read with pyarrow) holds."""
        from specprobe.utils.arrow import HEADER_KEY, arrow_to_frame, unpacked

        table = unpacked(table)
        header = json.loads((table.schema.metadata or {}).get(HEADER_KEY, b"null"))
        target = cls._target(header, "arrow table")
        frame, header = arrow_to_frame(table, target.tuple_columns)
        return target(frame, header.get("metadata"), header.get("extras"))

    def to_hf(self) -> Any:
        """The table as a Hugging Face `datasets.Dataset` (list columns as sequences); the header is JSON
        in `dataset.info.description`, so `Result.from_hf(dataset)` rebuilds the result. Needs the `hf` extra."""
        from specprobe.utils.extras import require

        datasets = require("datasets", "hf", "Result.to_hf()")
        header = json.dumps(_jsonable(self._header()), ensure_ascii=False, allow_nan=True)
        return datasets.Dataset(self.to_arrow(), info=datasets.DatasetInfo(description=header))

    @classmethod
    def from_hf(cls, dataset: Any) -> Result:
        """The result a `to_hf()` dataset holds (also after `save_to_disk` / `load_from_disk`)."""
        from specprobe.utils.arrow import HEADER_KEY

        try:
            header = json.loads(dataset.info.description or "null")
        except (AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a dataset written by Result.to_hf(): no specprobe header ({exc})") from exc
        if not isinstance(header, dict) or "specprobe_result" not in header:
            raise ValueError(
                "the dataset has no specprobe header (its info.description): datasets keeps the one Result.to_hf() "
                "writes through save_to_disk/load_from_disk only, not push_to_hub, to_parquet or load_dataset; "
                "share result.save('x.parquet') instead (load_result reads it)"
            )
        cls._target(header, "dataset")
        table = dataset.with_format("arrow")[:]
        text = json.dumps(header, ensure_ascii=False, allow_nan=True).encode("utf-8")
        return cls.from_arrow(table.replace_schema_metadata({HEADER_KEY: text}))

    # -- display ---------------------------------------------------------------------------------
    def chart(self, **options: Any) -> Any:
        """The result's main chart as an altair chart, to restyle or save (see `specprobe.reports.notebook`)."""
        from specprobe.reports.notebook import main_chart

        return main_chart(self, **options)

    def _repr_html_(self) -> str:
        """Notebook display: a compact summary table and the main chart as inline SVG (no network)."""
        from specprobe.reports.notebook import repr_html

        return repr_html(self)

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


def result_data_digest(path: str | os.PathLike) -> str:
    """sha256 of what a saved result computed (its columns, rows and extras), not of its metadata
    (creation time, library versions): two runs that computed the same numbers give the same digest,
    whatever their time stamps (compare digests of files of one format: JSON and parquet differ)."""
    from specprobe.utils.arrow import is_parquet

    if is_parquet(path):
        result = Result.load(path)
        frame = result.to_pandas()
        payload = _jsonable(
            {"columns": list(frame.columns), "rows": frame.to_dict(orient="records"), "extras": result.extras}
        )
    else:
        doc = read_json(path)
        if not isinstance(doc, dict) or "rows" not in doc:
            raise ValueError(f"{path}: not a specprobe result file")
        payload = {key: doc.get(key) for key in ("columns", "rows", "extras")}
    blob = json.dumps(payload, sort_keys=True, allow_nan=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
