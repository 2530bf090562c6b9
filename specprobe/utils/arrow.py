"""A result table <-> an Arrow table (and a parquet file), with the result's header in the schema metadata.

Why not `pa.Table.from_pandas`: it turns NaN into null, also inside list columns, so per-token
log-probabilities of `nan` would come back as None. Here every column is converted explicitly:

- numeric and boolean columns as they are (NaN and inf stay NaN and inf);
- columns holding lists or tuples (per-token log-probs, specialties) as Arrow list columns;
- other object/string columns with missing values as nulls.

Reading goes back through `pd.DataFrame({column: values})`, the constructor the JSON reader uses, so a
parquet file and a `.json.gz` file of one result load to equal frames. The header (kind, schema
version, metadata, extras, column order) is one JSON value under the schema metadata key `specprobe`
(in a parquet file, a header over 4 kB is gzipped and base64-encoded under `specprobe.gz`).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.utils.extras import require
from specprobe.utils.io import atomic_write_bytes

HEADER_KEY = b"specprobe"
#: a header longer than this is written to parquet files gzipped and base64-encoded, under `specprobe.gz`
#: (the footer is not compressed; e.g. an accuracy matrix carries every scored question in its extras)
PACKED_KEY = b"specprobe.gz"
PACK_OVER = 4096
PARQUET_MAGIC = b"PAR1"
COMPRESSION = "zstd"


def _pyarrow(purpose: str):
    return require("pyarrow", "parquet", purpose)


def _is_sequence(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _as_list(v: Any) -> list | None:
    """A cell of a list column as a list; a missing cell (None, NaN) as None."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return list(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    raise TypeError(f"a list column holds a {type(v).__name__} value {v!r:.40}")


def _column_array(pa, values: pd.Series):
    """One frame column as an Arrow array (see the module docstring for the rules)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
        return pa.array(values.to_numpy())
    items = values.tolist()
    if any(_is_sequence(v) for v in items):
        return pa.array([_as_list(v) for v in items], from_pandas=False)
    return pa.array(items, from_pandas=True)


def frame_to_arrow(frame: pd.DataFrame, header: dict) -> Any:
    """`frame` as a `pyarrow.Table`, with `header` (JSON-able) stored under the schema metadata key `specprobe`."""
    pa = _pyarrow("an Arrow or parquet table")
    arrays, names = [], []
    for col in frame.columns:
        try:
            arrays.append(_column_array(pa, cast(pd.Series, frame[col])))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(f"column {col!r} cannot be stored as an Arrow column ({exc}); save as .json") from exc
        names.append(str(col))
    table = pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})
    text = json.dumps(header, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    return table.replace_schema_metadata({HEADER_KEY: text.encode("utf-8")})


def _column_values(col) -> Any:
    """An Arrow column's values as the JSON reader would hold them: a numpy array for numbers and booleans
    without nulls, else a list of Python values (lists for list cells, None for nulls). Numpy does the
    conversion where that is exact (it is several times faster than `to_pylist`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if col.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return col.to_numpy()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_numpy(zero_copy_only=False).tolist()
    if pa.types.is_list(t) and pc.list_flatten(col).null_count == 0:  # pyright: ignore[reportAttributeAccessIssue]  # no None inside a list: numpy is exact
        return [None if a is None else a.tolist() for a in col.to_numpy(zero_copy_only=False)]
    return col.to_pylist()


def arrow_to_frame(table, tuple_columns: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """(frame, header) from a table written by `frame_to_arrow`; lists in `tuple_columns` become tuples."""
    meta = table.schema.metadata or {}
    if HEADER_KEY not in meta:
        raise ValueError("no specprobe header in the table's schema metadata")
    header = json.loads(meta[HEADER_KEY].decode("utf-8"))
    columns = list(header.get("columns", table.column_names))
    missing = [c for c in columns if c not in table.column_names]
    if missing:  # else they would come back as columns of NaN (a table read or selected with only some columns)
        raise ValueError(
            f"the table lacks {len(missing)} of the result's columns ({', '.join(map(repr, missing[:5]))}"
            f"{', ...' if len(missing) > 5 else ''}); read or convert the whole table"
        )
    if table.num_rows == 0:  # as the JSON reader builds it: no rows, object columns
        frame = pd.DataFrame([], columns=columns)
    else:
        frame = pd.DataFrame({c: _column_values(table.column(c)) for c in table.column_names}, columns=columns)
    for col in tuple_columns:
        if col in frame and frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: tuple(v) if isinstance(v, list) else v)
    return frame, header


def write_parquet(path: str | os.PathLike, table) -> Path:
    """Write an Arrow table to a parquet file (zstd), atomically."""
    pq = require("pyarrow.parquet", "parquet", f"writing {path}")
    buf = io.BytesIO()
    if not hasattr(pq.ParquetWriter, "add_key_value_metadata"):  # an older pyarrow: the header is kept twice
        pq.write_table(table, buf, compression=COMPRESSION)
        return atomic_write_bytes(path, buf.getvalue())
    meta = _pack(table.schema.metadata or {})
    plain = table.replace_schema_metadata(None)
    # store_schema=False + the header as the file's key-value metadata: pyarrow's default would also keep a
    # base64 copy of the whole schema, header included (twice the header); the column types read back
    # the same from the parquet schema itself (tests/test_interop_parquet.py)
    with pq.ParquetWriter(buf, plain.schema, compression=COMPRESSION, store_schema=False) as writer:
        writer.write_table(plain)
        writer.add_key_value_metadata(meta)
    return atomic_write_bytes(path, buf.getvalue())


def read_parquet(path: str | os.PathLike) -> Any:
    """An Arrow table from a parquet file; damage is a ValueError naming the file."""
    pq = require("pyarrow.parquet", "parquet", f"reading {path}")
    import pyarrow as pa

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    try:
        return unpacked(table)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def unpacked(table: Any) -> Any:
    """`table` with a packed header (`specprobe.gz`: a parquet file's long header, as read by pyarrow itself)
    restored under `specprobe`, where `Result.from_arrow` reads it."""
    return table.replace_schema_metadata(_unpack(table.schema.metadata or {}))


def _pack(meta: dict) -> dict:
    """The file's key-value metadata: a long header gzipped under `specprobe.gz` (see PACK_OVER)."""
    header = meta.get(HEADER_KEY)
    if header is None or len(header) <= PACK_OVER:
        return meta
    rest = {k: v for k, v in meta.items() if k != HEADER_KEY}
    return {**rest, PACKED_KEY: base64.b64encode(gzip.compress(header, mtime=0))}


def _unpack(meta: dict) -> dict:
    """The table's schema metadata with a packed header restored under `specprobe`."""
    if PACKED_KEY not in meta:
        return meta
    rest = {k: v for k, v in meta.items() if k != PACKED_KEY}
    try:
        return {**rest, HEADER_KEY: gzip.decompress(base64.b64decode(meta[PACKED_KEY]))}
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"damaged specprobe header ({exc})") from exc


def is_parquet(path: str | os.PathLike) -> bool:
    """The file starts with the parquet magic bytes (or, when absent, is named *.parquet)."""
    path = Path(path)
    if not path.is_file():  # missing, or a folder (that its reader refuses, naming it)
        return path.suffix.lower() == ".parquet"
    with open(path, "rb") as fh:
        return fh.read(4) == PARQUET_MAGIC
