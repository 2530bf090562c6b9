"""Read a table file (parquet, JSON lines, CSV/TSV) into a pandas DataFrame, for terms and texts inputs.

Every cell is kept as written: CSV cells stay strings (an id "007" is not turned into 7; only empty
cells are missing), JSON lines keep their JSON types, parquet its column types (lists included).
Damage is one `ValueError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from specprobe.utils.extras import require
from specprobe.utils.io import iter_jsonl

#: file name endings read as tables (compared case-insensitively)
TABLE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv", ".tsv")


def table_suffix(path: str | os.PathLike) -> str | None:
    """The table suffix `path` ends with, or None."""
    name = str(path).lower()
    return next((s for s in TABLE_SUFFIXES if name.endswith(s)), None)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One row per JSON object line (`iter_jsonl`: a bad line names the file and the line)."""
    # object columns: an integer column with a missing value stays integers (pandas made it float: id 1 -> "1.0")
    return pd.DataFrame([row for _, row in iter_jsonl(path)], dtype=object)


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: not a readable {'TSV' if sep == chr(9) else 'CSV'} file ({exc})") from exc


def read_table(path: str | os.PathLike, what: str = "table") -> pd.DataFrame:
    """The rows of a .parquet, .jsonl/.ndjson or .csv/.tsv file; `what` names the input in errors. The
    frame's `attrs["source"]` is the file's path, so that errors about its rows or columns name the file."""
    path = Path(path)
    frame = _read_rows(path, what)
    frame.attrs["source"] = str(path)
    return frame


def _read_rows(path: Path, what: str) -> pd.DataFrame:
    suffix = table_suffix(path)
    if suffix is None:
        raise ValueError(f"{what} file {path}: unsupported file type; use one of {', '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if suffix == ".parquet":
        pq = require("pyarrow.parquet", "parquet", f"reading {path}")
        try:
            return pq.read_table(path).to_pandas(integer_object_nulls=True)  # ints with nulls stay ints
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
            raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    return _read_csv(path, "\t" if suffix == ".tsv" else ",")
