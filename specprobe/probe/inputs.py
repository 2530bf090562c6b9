"""Normalise what users pass as terms and texts into the two shapes compare works on.

Terms: a `Lexicon` (anything with `term_specialties()`), a mapping term -> specialties, a plain list,
or a table with a term column and an optional specialty column (`terms_from_frame`).
Texts: strings, `TextRecord`/`QARecord`s, dicts with id/text/specialty, a mapping id -> text, or a
table with id/text/specialty columns (`texts_from_frame`); when omitted, a lexicon's own
contexts, and for plain terms a neutral template.

A table is a pandas DataFrame, a Hugging Face `datasets.Dataset` (one split), anything with
`to_pandas()` and `columns` (pyarrow, polars), or the path of a .parquet, .jsonl/.ndjson or .csv/.tsv
file (a `Path`, or a string with one of those endings). Its columns are the default names, matched
exactly then case-insensitively; other names are given to `terms_from_frame(source, term=...,
specialty=...)` / `texts_from_frame(source, text=..., id=..., specialty=...)`, whose results
compare() takes as they are. A table is never iterated as its column names.

Both are read more than once (compare() validates them before loading a model, then prepares
them), so a one-shot iterator (a generator, `iter(...)`, a file object) is refused with a clear
error unless it was materialised first with `materialize` (compare() and prepare() may call it).

Terms that match the same text under the matching options are merged into one (the first spelling
is kept, the specialties are united, and a warning names them): `Seizure`/`seizure` under
case-insensitive matching, `Sjo\\u0308gren`/`Sjögren` always (matching is under NFC), and
`heart  failure`/`heart failure` with flexible whitespace. Otherwise they would be counted twice.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from specprobe.probe.occurrences import MatchOptions, _fold
from specprobe.terms.datasets import QARecord, TextRecord, unique_ids
from specprobe.terms.extract.normalise import ascii_apostrophes
from specprobe.terms.records import first_repeat
from specprobe.utils.tables import TABLE_SUFFIXES, read_table, table_suffix

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Here is a word that appears in the text: {term}."
UNASSIGNED = "unassigned"
SPECIALTY_COLUMNS = ("specialty", "specialties")  # tried in order when no specialty column is named


# ---------------------------------------------------------------------------------------- helpers
def _is_one_shot(obj: Any) -> bool:
    """A one-shot iterator: iterating it consumes it (generators, iter(list), map objects, files)."""
    return isinstance(obj, Iterator) or (hasattr(obj, "__next__") and iter(obj) is obj)


def materialize(obj: Any) -> Any:
    """A list of a one-shot iterator's items (read once, here); anything else is returned unchanged.

    Call it on `terms` and `texts` before they are validated and then used (compare() reads them
    twice), so that a generator is not consumed by the validation and then reported empty. A table
    file or a Hugging Face dataset is read here once, into a DataFrame."""
    path = _table_path(obj)
    if (path is not None and path.is_file()) or _hf_kind(obj) == "Dataset":
        return _pandas_frame(obj, "input")  # a missing file is left to the caller's error, which names the input
    if obj is None or isinstance(obj, (str, bytes, Mapping)) or not _is_one_shot(obj):
        return obj
    return list(obj)


def _refuse_one_shot(obj: Any, name: str) -> None:
    if _is_one_shot(obj):
        raise TypeError(
            f"{name} is a one-shot iterator ({type(obj).__name__}), which would be used up by the first "
            f"read and then look empty; pass a list instead: {name}=list(...)"
        )


def _has_method(obj: Any, name: str) -> bool:
    """`obj` has a method `name` (a Lexicon's); a DataFrame column of that name does not count."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return False
    return callable(getattr(obj, name, None))


def _table_path(obj: Any) -> Path | None:
    """`obj` as the path of a table file: any `os.PathLike`, or a string ending in a table suffix."""
    if isinstance(obj, os.PathLike):
        return Path(obj)
    if isinstance(obj, str) and table_suffix(obj.strip()) and "\n" not in obj:
        return Path(obj.strip())
    return None


def _hf_kind(obj: Any) -> str | None:
    """ "Dataset", "DatasetDict", "IterableDataset" or "IterableDatasetDict" for Hugging Face datasets, else None."""
    if not type(obj).__module__.startswith("datasets"):
        return None
    names = [c.__name__ for c in type(obj).__mro__]
    return next((k for k in ("IterableDatasetDict", "DatasetDict", "IterableDataset", "Dataset") if k in names), None)


def _hf_dataset(obj: Any, name: str) -> bool:
    """Whether `obj` is a Hugging Face `datasets.Dataset`; a DatasetDict or a streaming dataset is refused."""
    kind = _hf_kind(obj)
    if kind in ("DatasetDict", "IterableDatasetDict"):
        raise TypeError(f"{name} is a {type(obj).__name__}; pick one split, e.g. {name}=ds['test']")
    if kind == "IterableDataset":
        raise TypeError(f"{name} is a streaming IterableDataset; pass a Dataset (load it without streaming=True)")
    return kind == "Dataset"


def _pandas_frame(obj: Any, name: str):
    """The pandas DataFrame `obj` is: a DataFrame, a table file read from its path, a Hugging Face Dataset,
    or anything with columns and to_pandas(); None for anything else."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return obj
    path = _table_path(obj)
    if path is not None:
        return read_table(path, name)
    if _hf_dataset(obj, name):  # through arrow: an integer column with nulls stays integers
        return obj.with_format("arrow")[:].to_pandas(integer_object_nulls=True)
    if isinstance(obj, Mapping) or not hasattr(obj, "columns"):
        return None
    if hasattr(obj, "to_pandas"):  # polars, pyarrow tables
        frame = obj.to_pandas()
        if pd is None:
            pd = sys.modules.get("pandas")
        if pd is not None and isinstance(frame, pd.DataFrame):
            return frame
    raise TypeError(f"{name}: a {type(obj).__name__} table is not supported; pass a pandas DataFrame or a list")


def _required_frame(obj: Any, function: str, name: str):
    """`_pandas_frame(obj)`, or an error saying what `function` takes: a string that names a file of another
    type is told so (the table suffixes), rather than being called "not a DataFrame"."""
    frame = _pandas_frame(obj, name)
    if frame is not None:
        return frame
    if isinstance(obj, str) and "\n" not in obj and Path(obj.strip()).suffix[1:].isalnum():
        return read_table(obj.strip(), name)  # raises: unsupported file type, naming the file and the suffixes
    raise TypeError(
        f"{function} needs a table: a pandas DataFrame, a datasets.Dataset, a pyarrow/polars table or the "
        f"path of a {'/'.join(TABLE_SUFFIXES)} file; got a {type(obj).__name__}"
    )


def _pandas_series(obj: Any, name: str) -> list | None:
    """The values of a pandas Series with a positional (integer) index, as a list; None for anything
    else. A Series indexed by labels is refused: it might mean label -> value or a list of values."""
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(obj, pd.Series):
        return None
    if pd.api.types.is_integer_dtype(obj.index.dtype):
        return obj.tolist()
    raise TypeError(
        f"{name} is a pandas Series indexed by labels ({list(obj.index[:3])}...): pass "
        f"series.to_dict() for a mapping label -> value, or series.tolist() for a list of values"
    )


def _frame_source(frame) -> str | None:
    """The file a frame was read from (`read_table` keeps it in `attrs`), or None."""
    source = getattr(frame, "attrs", {}).get("source")
    return str(source) if source else None


def _frame_name(frame, name: str) -> str:
    """How errors name a frame: the file it was read from, else e.g. "terms DataFrame"."""
    return _frame_source(frame) or f"{name} DataFrame"


def _column(frame, wanted: str | None, candidates: tuple[str, ...], name: str, role: str, required: bool) -> str | None:
    """The frame column for `role`: the one named `wanted` (or the first of `candidates`), matched
    exactly, else case-insensitively; None when not required and absent."""
    cols = [str(c) for c in frame.columns]
    for cand in [wanted] if wanted is not None else list(candidates):
        if cand in cols:
            return cand
        folded = [c for c in cols if c.lower() == cand.lower()]
        if len(folded) == 1:
            return folded[0]
    if required or wanted is not None:
        what = repr(wanted) if wanted is not None else " or ".join(repr(c) for c in candidates)
        hint = (
            "rename it" if _frame_source(frame) else f"rename it or name it with {name}_from_frame(frame, {role}=...)"
        )
        raise ValueError(f"{_frame_name(frame, name)} has no {role} column {what} (columns: {cols}); {hint}")
    return None


def _missing(value: Any) -> bool:
    """None, NaN, or a pandas missing value (pd.NA, NaT): an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    pd = sys.modules.get("pandas")
    return pd is not None and pd.api.types.is_scalar(value) and bool(pd.isna(value))


# the rows the summaries add themselves: a specialty of one of these names would merge with them
RESERVED_SPECIALTIES = ("control", UNASSIGNED)


def _specialties(value: Any, where: str, sep: str | None = None) -> tuple[str, ...]:
    """Specialties from a cell or mapping value: none, one string (split on `sep` if given), or strings."""
    if _missing(value):
        return ()
    if isinstance(value, str):
        parts = value.split(sep) if sep else [value]
        return tuple(p.strip() for p in parts if p.strip())
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        items = list(value)
        if all(isinstance(v, str) for v in items):
            return tuple(v.strip() for v in items if v.strip())
    raise TypeError(
        f"{where}: specialties must be a string or a list of strings, got {type(value).__name__}: {value!r:.60}"
    )


def _unreserved(specs: tuple[str, ...], where: str) -> tuple[str, ...]:
    """A term's specialties, refusing the names of the rows the summaries add themselves."""
    clash = [v for v in specs if v.casefold() in RESERVED_SPECIALTIES]
    if clash:
        raise ValueError(
            f"{where}: specialty {clash[0]!r} is reserved (the summaries' rows for control words and for "
            "terms without a specialty are named 'control' and 'unassigned'); rename it"
        )
    return specs


# ---------------------------------------------------------------------------------------- terms
def terms_from_frame(
    frame, term: str = "term", specialty: str | None = None, sep: str = ";"
) -> dict[str, tuple[str, ...]]:
    """term -> specialties from a DataFrame: one row per term; `specialty` names the column of its
    specialties (default: 'specialty' or 'specialties' when present, else none), one string split on
    `sep` (as `Lexicon.to_pandas` writes them) or a list. Rows of the same term are united."""
    frame = _required_frame(frame, "terms_from_frame", "terms")
    tcol = _column(frame, term, (), "terms", "term", required=True)
    scol = _column(frame, specialty, SPECIALTY_COLUMNS, "terms", "specialty", required=False)
    out: dict[str, tuple[str, ...]] = {}
    for pos, (label, row) in enumerate(frame.iterrows()):
        where = f"{_frame_name(frame, 'terms')} row {pos} (index {label!r})"
        value = row[tcol]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: column {tcol!r} must be a non-empty string, got {value!r:.60}")
        specs = _specialties(row[scol], f"{where}, column {scol!r}", sep) if scol else ()
        out[value] = tuple(dict.fromkeys(out.get(value, ()) + specs))
    return out


def _show(term: str) -> str:
    return repr(term) if unicodedata.is_normalized("NFC", term) else f"{ascii(term)} (not NFC)"


def _match_key(term: str, opts: MatchOptions) -> str:
    """Terms with equal keys find the same spans in every text under `opts` (either apostrophe: `find_spans`)."""
    key = ascii_apostrophes(unicodedata.normalize("NFC", term))
    if opts.flexible_whitespace:
        key = " ".join(key.split())
    return _fold(key, opts.case_sensitive)


#: the hint for objects given as terms: QA records (a QA file given as --terms) are the texts, not the terms
_RECORDS_HINT = (
    "; objects such as question records are QA data, not terms: build a lexicon from them "
    "(specprobe terms build, specprobe.build_lexicon) and give the QA file as the texts (--data)"
)


def _terms_mapping(terms: Any, term_column: str, specialty_column: str | None) -> Mapping:
    """The given terms, whatever their container, as a mapping term -> specialties (not yet checked)."""
    lexicon = _has_method(terms, "term_specialties")
    frame = None if lexicon else _pandas_frame(terms, "terms")
    series = _pandas_series(terms, "terms")
    if lexicon:
        mapping = terms.term_specialties()
    elif frame is not None:
        mapping = terms_from_frame(frame, term_column, specialty_column)
    elif isinstance(terms, Mapping):
        mapping = dict(terms)
    elif series is not None:
        mapping = {t: () for t in series}
    elif isinstance(terms, Iterable):
        _refuse_one_shot(terms, "terms")
        mapping = {}
        for t in terms:
            if isinstance(t, Mapping):
                raise TypeError(f"terms must be strings, got an object with keys {list(t)[:6]}{_RECORDS_HINT}")
            if not isinstance(t, str):
                hint = (
                    "; for term -> specialty pairs pass a mapping or a DataFrame"
                    if isinstance(t, (list, tuple))
                    else ""
                )
                raise TypeError(f"terms must be strings, got {type(t).__name__}: {t!r:.60}{hint}")
            mapping.setdefault(t, ())
    else:
        raise TypeError(
            f"terms must be a Lexicon, a mapping term -> specialties, a list, or a DataFrame; "
            f"got {type(terms).__name__}"
        )
    return mapping


def normalize_terms(
    terms: Any, *, match: MatchOptions | None = None, term_column: str = "term", specialty_column: str | None = None
) -> dict[str, tuple[str, ...]]:
    """term -> specialties (empty tuple when unknown); raises on empty or non-string terms.

    Terms that match the same spans under `match` (default `MatchOptions()`: case-insensitive, under
    NFC) are merged into the first spelling with the union of their specialties, with a warning.
    A DataFrame's columns are named by `term_column`/`specialty_column` (see `terms_from_frame`)."""
    opts = match or MatchOptions()
    if terms is None:
        raise ValueError("terms is required (a Lexicon, a mapping term -> specialties, a list, or a DataFrame)")
    if isinstance(terms, (str, bytes)) and _table_path(terms) is None:
        raise TypeError("terms must be a list, mapping or Lexicon, not a single string; wrap it in a list")
    mapping = _terms_mapping(terms, term_column, specialty_column)
    out: dict[str, tuple[str, ...]] = {}
    keys: dict[str, tuple[str, str]] = {}  # match key -> (the kept term, its spelling as given)
    merged: dict[str, list[str]] = {}  # kept term -> the other spellings given
    for term, specs in mapping.items():
        if not isinstance(term, str):
            raise TypeError(f"terms must be strings, got {type(term).__name__}: {term!r}")
        if not term.strip():
            raise ValueError("terms contain an empty or whitespace-only term")
        specs = _unreserved(_specialties(specs, f"term {term!r}"), f"term {term!r}")
        given = term.strip()
        kept, first = keys.setdefault(_match_key(given, opts), (unicodedata.normalize("NFC", given), given))
        if given != first and given not in merged.get(kept, []):
            merged.setdefault(kept, [first]).append(given)
        out[kept] = tuple(dict.fromkeys(out.get(kept, ()) + specs))
    if not out:
        raise ValueError("no terms given: pass at least one term")
    if merged:
        how = ("case-insensitive " if not opts.case_sensitive else "") + "NFC matching, either apostrophe"
        pairs = "; ".join(
            f"{' / '.join(_show(s) for s in v)} -> {k!r} {list(out[k])}" for k, v in list(merged.items())[:10]
        )
        more = f" (and {len(merged) - 10} more)" if len(merged) > 10 else ""
        log.warning(
            "%d term(s) match the same text as another under %s and are counted once, with their "
            "specialties united: %s%s",
            sum(len(v) - 1 for v in merged.values()),
            how,
            pairs,
            more,
        )
    return out


# ---------------------------------------------------------------------------------------- texts
def texts_from_frame(
    frame, id: str | None = "id", text: str = "text", specialty: str | None = None, sep: str = ";"
) -> list[TextRecord]:
    """Text records from a DataFrame: the `text` column, ids from the `id` column (default 'id' when
    present, else "text<row>"), specialties from `specialty` (default 'specialty' or 'specialties'
    when present), one string split on `sep` or a list."""
    frame = _required_frame(frame, "texts_from_frame", "texts")
    xcol = _column(frame, text, (), "texts", "text", required=True)
    icol = None if id is None else _column(frame, None if id == "id" else id, ("id",), "texts", "id", required=False)
    scol = _column(frame, specialty, SPECIALTY_COLUMNS, "texts", "specialty", required=False)
    records = []
    for pos, (label, row) in enumerate(frame.iterrows()):
        where = f"{_frame_name(frame, 'texts')} row {pos} (index {label!r})"
        value = row[xcol]
        if not isinstance(value, str):
            raise TypeError(f"{where}: column {xcol!r} must be a string, got {type(value).__name__}: {value!r:.60}")
        rid = f"text{pos}" if icol is None or _missing(row[icol]) else _id_text(row[icol])
        specs = _specialties(row[scol], f"{where}, column {scol!r}", sep) if scol else ()
        records.append(TextRecord(rid, value, specs))
    return records


def _id_text(value: Any) -> str:
    """A text id as written: a whole-number float (an integer id column pandas made float by a missing
    value) without its ".0", so that ids join back to the caller's data."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _record(obj: Any, index: int) -> TextRecord:
    if isinstance(obj, TextRecord):
        return obj
    if isinstance(obj, QARecord):
        return obj.as_text_record()
    if isinstance(obj, str):
        return TextRecord(f"text{index}", obj, ())
    if isinstance(obj, Mapping):
        if "text" not in obj:
            raise ValueError(f"texts[{index}]: a text record needs a 'text' field (got keys {sorted(map(str, obj))})")
        text = obj["text"]
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}]['text'] must be a string, got {type(text).__name__}")
        specs = _specialties(obj.get("specialties", obj.get("specialty", ())), f"texts[{index}]", None)
        rid = obj.get("id")
        return TextRecord(f"text{index}" if _missing(rid) else str(rid), text, specs)
    raise TypeError(
        f"texts[{index}] must be a string or a record with id, text, specialty; got {type(obj).__name__}: {obj!r:.60}"
    )


def _fill(template: str, term: str) -> str:
    """`template` (a `str.format` string) with `{term}` filled; another field is an error naming the template."""
    try:
        return template.format(term=term)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"template {template!r}: only {{term}} is filled ({type(exc).__name__}: {exc}); "
            "write other braces doubled, {{ and }}"
        ) from exc


def normalize_texts(
    texts: Any,
    terms: Any,
    term_map: dict[str, tuple[str, ...]],
    template: str = DEFAULT_TEMPLATE,
    *,
    id_column: str | None = "id",
    text_column: str = "text",
    specialty_column: str | None = None,
) -> list[TextRecord]:
    """The context texts: given ones, else the lexicon's own contexts, else one template text per term.

    Given texts must have unique ids (a duplicate is refused, naming both positions); a lexicon's
    contexts are made unique (see `unique_ids`). A DataFrame's columns are named by the `*_column`
    arguments (see `texts_from_frame`)."""
    if texts is None:
        if _has_method(terms, "contexts"):
            return unique_ids(terms.contexts(), "the lexicon's contexts")
        if "{term}" not in template:
            raise ValueError(f"template {template!r} must contain '{{term}}'")
        return [TextRecord(f"template:{t}", _fill(template, t), specs) for t, specs in term_map.items()]
    if isinstance(texts, (str, bytes)) and _table_path(texts) is None:
        raise TypeError("texts must be a list of strings or records, not a single string")
    frame = _pandas_frame(texts, "texts")
    series = _pandas_series(texts, "texts")
    if frame is not None:
        records = texts_from_frame(frame, id_column, text_column, specialty_column)
    elif isinstance(texts, Mapping):
        if isinstance(texts.get("text"), str):
            raise TypeError("texts is a single record (it has a 'text' field); wrap it in a list: texts=[record]")
        records = []
        for rid, text in texts.items():
            if not isinstance(text, str):
                raise TypeError(
                    f"texts is a mapping, read as id -> text, but texts[{rid!r}] is a "
                    f"{type(text).__name__}; pass a list of records instead"
                )
            records.append(TextRecord(str(rid), text, ()))
    elif series is not None:
        records = [_record(t, i) for i, t in enumerate(series)]
    elif isinstance(texts, Iterable):
        _refuse_one_shot(texts, "texts")
        records = [_record(t, i) for i, t in enumerate(texts)]
    else:
        raise TypeError(
            f"texts must be a list of strings or records, a mapping id -> text, or a DataFrame; "
            f"got {type(texts).__name__}"
        )
    if repeat := first_repeat(r.id for r in records):
        a, b, rid = repeat
        raise ValueError(f"duplicate text id {rid!r} (texts[{a}] and texts[{b}]); text ids must be unique")
    if not records:
        raise ValueError("texts is empty")
    return records
