"""Parsers for the QA file formats `datasets.load_qa` accepts; each yields one thunk per item that returns a
`QARecord` or raises `DataError` naming the file, the item index and the field.

Formats:

- ``smedqa``: a JSON list of {"Question", "Specialty" (string or list), "Options" (list), "Answer" (text)}.
- ``medqa``: JSON lines of {"question", "options": {"A": ..., ...}, "answer_idx": "A", optional "answer",
  "specialty"}.
- ``medmcqa``: JSON lines (or a JSON list) of {"question", "opa", "opb", "opc", "opd", "cop", "subject_name",
  "id"}; ``cop`` is 1-based (1-4) as in the original release; pass ``mapping={"cop_base": 0}`` for the
  0-based copies (e.g. the Hugging Face one).
- ``instruction``: JSON/JSON lines of {"instruction", "input", "output"}: the options are the lettered lines
  ("A. ...", "(B) ...") of ``input`` (or of ``instruction`` when ``input`` has none); lines lettered past J
  count only as the next lines after "J. ..." (K, L, ..., Z); the question is the text before them;
  ``output`` is the answer letter or text; optional "specialty".
- ``csv`` / ``jsonl``: any columns, named by ``mapping``: {"question": col, "options": [cols] or col
  (a JSON list or a "||"-separated string), "answer": col, "answer_format": "text" | "letter" | "index",
  "specialty": col (";"-separated for several), "id": col}.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specprobe.utils.io import parse_jsonl_line

from .records import OPTION_LETTERS, DataError, QARecord, _as_specialties, read_text

FORMATS = ("auto", "smedqa", "medqa", "medmcqa", "instruction", "csv", "jsonl")
LETTERS = OPTION_LETTERS  # A-Z, as the prompts letter options
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[\).:]\s+(.+?)\s*$")
# a line lettered K-Z is an option only where it continues the letters of the option lines before it (after
# "J. ..."): on its own, "S. aureus grew in culture" is a line of the question, not option S
_LATER_OPTION_LINE = re.compile(r"^\s*\(?([K-Z])[\).:]\s+(.+?)\s*$")

Thunk = Callable[[], QARecord]


def _err(path: Path, i: int, msg: str) -> DataError:
    return DataError(f"{path}: item {i}: {msg}")


@dataclass(frozen=True)
class BadLine:
    """A JSON line that does not parse: its item raises `error` when read (skipped with skip_bad)."""

    error: DataError


def _read_json_items(path: Path) -> list:
    """A JSON list, or JSON lines (one object per line, blank lines ignored; a line that is not a JSON
    object becomes a `BadLine` item, so that skip_bad can skip it)."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        return items
    items: list = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines: a U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            items.append(parse_jsonl_line(line, path, lineno))
        except ValueError as exc:
            items.append(BadLine(DataError(str(exc))))
    if items and all(isinstance(x, BadLine) for x in items):
        raise items[0].error  # nothing parses: not a JSON-lines file at all
    return items


def _checked(parse: Callable, path: Path, i: int, obj, *args) -> QARecord:
    if isinstance(obj, BadLine):
        raise obj.error
    return parse(path, i, obj, *args)


def detect_format(path: Path, mapping: dict | None = None) -> str:
    """Guess the format from the extension and the first record's keys."""
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if mapping:
        return "jsonl"
    items = _read_json_items(path)
    first = next((x for x in items if isinstance(x, dict)), None) if isinstance(items, list) else None
    if first is None:
        raise DataError(f"{path}: cannot tell the format: no JSON object found")
    keys = set(first)
    if {"Question", "Options"} <= keys:
        return "smedqa"
    if "answer_idx" in keys or isinstance(first.get("options"), dict):
        return "medqa"
    if {"opa", "cop"} <= keys:
        return "medmcqa"
    if "instruction" in keys and "output" in keys:
        return "instruction"
    raise DataError(f"{path}: cannot tell the format from keys {sorted(keys)}; pass format= and mapping=")


def _need_str(path, i, obj, key) -> str:
    if key not in obj:
        raise _err(path, i, f"missing field {key!r}")
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise _err(path, i, f"field {key!r} must be a non-empty string")
    return v


def _need_obj(path, i, obj):
    if not isinstance(obj, dict):
        raise _err(path, i, f"expected an object, got {type(obj).__name__}")


def _medqa(path: Path, i: int, obj) -> QARecord:
    _need_obj(path, i, obj)
    q = _need_str(path, i, obj, "question")
    opts = obj.get("options")
    if not isinstance(opts, dict) or not opts or not all(isinstance(v, str) for v in opts.values()):
        raise _err(path, i, "field 'options' must be an object of letter -> option text")
    letters = sorted(opts)
    options = tuple(opts[k] for k in letters)
    idx = obj.get("answer_idx")
    if idx not in opts:
        raise _err(path, i, f"field 'answer_idx' {idx!r} is not one of the option letters {letters}")
    spec = _as_specialties(obj.get("specialty", obj.get("Specialty", ())), path, i)
    return QARecord(
        str(obj.get("id", f"{path.stem}:{i}")),
        q,
        options,
        opts[idx],
        spec,
        {"meta_info": obj["meta_info"]} if "meta_info" in obj else {},
    )


def _medmcqa(path: Path, i: int, obj, base: int) -> QARecord:
    _need_obj(path, i, obj)
    q = _need_str(path, i, obj, "question")
    options = []
    for key in ("opa", "opb", "opc", "opd"):
        v = obj.get(key)
        if not isinstance(v, str):
            raise _err(path, i, f"field {key!r} must be a string")
        options.append(v)
    cop = obj.get("cop")
    if isinstance(cop, bool) or not isinstance(cop, int) or not 0 <= cop - base < 4:  # true is not option 1
        raise _err(path, i, f"field 'cop' {cop!r} must be an option number {base}..{base + 3}")
    subject = obj.get("subject_name")
    spec = (subject.strip(),) if isinstance(subject, str) and subject.strip() else ()
    return QARecord(str(obj.get("id", f"{path.stem}:{i}")), q, tuple(options), options[cop - base], spec)


def _instruction(path: Path, i: int, obj) -> QARecord:
    _need_obj(path, i, obj)
    out = _need_str(path, i, obj, "output").strip()
    for field in ("input", "instruction"):
        text = obj.get(field) or ""
        if not isinstance(text, str):
            raise _err(path, i, f"field {field!r} must be a string")
        lines = text.splitlines()
        opt_idx = _option_lines(lines)
        if len(opt_idx) >= 2:
            break
    else:
        raise _err(path, i, "field 'input': no lettered options (lines like 'A. ...') found")
    question = "\n".join(lines[: opt_idx[0]]).strip()
    if not question and field == "input":
        question = (obj.get("instruction") or "").strip()
    if not question:
        raise _err(path, i, f"field {field!r}: no question text before the options")
    pairs: list[tuple[str, str]] = []
    for k in opt_idx:
        m = _OPTION_LINE.match(lines[k]) or _LATER_OPTION_LINE.match(lines[k])
        assert m is not None  # opt_idx holds the lines that match
        pairs.append((m.group(1), m.group(2)))
    options = tuple(t for _, t in pairs)
    by_letter = dict(pairs)
    m = re.match(r"^\(?([A-Z])(?:[\).:]|\s|$)", out)
    if out in options and not re.fullmatch(r"\(?[A-Z][\).:]?", out):  # an option's text, "A ruptured spleen"
        answer = out
    elif m and m.group(1) in by_letter:
        answer = by_letter[m.group(1)]
    else:
        hit = [o for o in options if o.lower() == out.lower() or out.lower().endswith(o.lower())]
        if len(hit) != 1:
            raise _err(path, i, f"field 'output' {out[:60]!r} names none of the options")
        answer = hit[0]
    spec = _as_specialties(obj.get("specialty", obj.get("Specialty", ())), path, i)
    return QARecord(str(obj.get("id", f"{path.stem}:{i}")), question, options, answer, spec)


def _option_lines(lines: Sequence[str]) -> list[int]:
    """The indices of the option lines: those lettered A-J, then K, L, ... each on the line after the
    option lettered just before it."""
    idx = [k for k, ln in enumerate(lines) if _OPTION_LINE.match(ln)]
    while idx and idx[-1] + 1 < len(lines):
        last = _OPTION_LINE.match(lines[idx[-1]]) or _LATER_OPTION_LINE.match(lines[idx[-1]])
        more = _LATER_OPTION_LINE.match(lines[idx[-1] + 1])
        if last is None or more is None or ord(more.group(1)) != ord(last.group(1)) + 1:
            break
        idx.append(idx[-1] + 1)
    return idx


def _mapped_answer(value: Any, options: Sequence[str], fmt: str, index_base: int) -> str | None:
    """The option a mapped answer names, or None: a letter must be exactly one of the options' letters
    ("B", "(b)", "B."), an index a whole number within the options (no negative or wrapped index)."""
    if fmt == "letter":
        letter = str(value).strip().strip("().").upper()
        k = LETTERS.find(letter) if len(letter) == 1 else -1
    elif fmt == "index":
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
        k = int(number) - index_base if number.is_integer() else -1
    else:
        answer = str(value).strip()
        return answer if answer in options else None
    return options[k] if 0 <= k < len(options) else None


def _mapped(path: Path, i: int, row, mapping: dict) -> QARecord:
    _need_obj(path, i, row)
    qcol = mapping.get("question", "question")
    q = _need_str(path, i, row, qcol)
    ocols = mapping.get("options", "options")
    if isinstance(ocols, (list, tuple)):
        options = []
        for c in ocols:
            v = row.get(c)
            if not isinstance(v, str) or not v.strip():
                raise _err(path, i, f"field {c!r} (an option) must be a non-empty string")
            options.append(v)
    else:
        v = row.get(ocols)
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip().startswith("[") else v.split("||")
            except json.JSONDecodeError:
                raise _err(path, i, f"field {ocols!r}: not a JSON list") from None
        if isinstance(v, dict):
            v = [v[k] for k in sorted(v)]
        if not isinstance(v, list) or len(v) < 2 or not all(isinstance(o, str) and o.strip() for o in v):
            raise _err(path, i, f"field {ocols!r} must hold a list of at least 2 non-empty option strings")
        options = [o.strip() for o in v]
    acol = mapping.get("answer", "answer")
    if acol not in row:
        raise _err(path, i, f"missing field {acol!r}")
    a, fmt = row[acol], mapping.get("answer_format", "text")
    answer = _mapped_answer(a, options, fmt, int(mapping.get("index_base", 0)))
    if answer is None:
        raise _err(path, i, f"field {acol!r} {a!r} is not one of the options ({fmt})")
    scol = mapping.get("specialty")
    spec: tuple[str, ...] = ()
    if scol and row.get(scol) not in (None, ""):
        v = row[scol]
        spec = _as_specialties(v.split(";") if isinstance(v, str) else v, path, i)
    icol = mapping.get("id")
    rid = str(row[icol]) if icol and row.get(icol) not in (None, "") else f"{path.stem}:{i}"
    return QARecord(rid, q, tuple(options), answer, spec)


def _csv_row(path: Path, i: int, line: int, row: dict, mapping: dict) -> QARecord:
    """A CSV row as `_mapped` reads it, once it has one cell per column of the header: with more (an
    unquoted delimiter inside a cell) or fewer, its values would sit under the wrong columns or be missing."""
    extra, n_columns = row.get(None), sum(k is not None for k in row)
    if extra is not None:  # csv.DictReader's restkey
        raise _err(
            path, i, f"line {line} has {n_columns + len(extra)} cells for {n_columns} columns (quote the delimiter)"
        )
    short = [k for k, v in row.items() if v is None]  # csv.DictReader's restval
    if short:
        raise _err(path, i, f"line {line} has {n_columns - len(short)} cells for {n_columns} columns (no {short[0]!r})")
    return _mapped(path, i, row, mapping)


def _smedqa_record(obj: dict, path: Path, index: int) -> QARecord:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: item {index}: expected an object, got {type(obj).__name__}")
    for key in ("Question", "Options", "Answer"):
        if key not in obj:
            raise DataError(f"{path}: item {index}: missing field {key!r}")
    question, options, answer = obj["Question"], obj["Options"], obj["Answer"]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{path}: item {index}: field 'Question' must be a non-empty string")
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise DataError(f"{path}: item {index}: field 'Options' must be a non-empty list of strings")
    if answer not in options:
        raise DataError(f"{path}: item {index}: field 'Answer' {answer!r} is not one of the options")
    specialties = _as_specialties(obj.get("Specialty", ()), path, index)
    rid = str(obj.get("id", obj.get("ID", f"{path.stem}:{index}")))
    return QARecord(rid, question, tuple(options), answer, specialties)


def _smedqa_items(path: Path) -> list:
    try:
        items = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of question objects")
    return items


def parse_file(path: Path, format: str = "auto", mapping: dict | None = None) -> Iterator[Thunk]:
    """Yield one thunk per item of `path`; calling it parses the item (so a caller can skip bad ones)."""
    if format not in FORMATS:
        raise ValueError(f"unknown QA format {format!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path, mapping) if format == "auto" else format
    columns: dict = dict(mapping or {})
    if fmt == "smedqa":
        items = _smedqa_items(path)
        yield from (lambda o=o, i=i: _smedqa_record(o, path, i) for i, o in enumerate(items))
    elif fmt == "csv":
        delim = "\t" if path.suffix.lower() == ".tsv" else columns.get("delimiter", ",")
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delim)
        try:
            rows = [(reader.line_num, r) for r in reader]
        except csv.Error as exc:
            raise DataError(f"{path}: not valid CSV ({exc})") from exc
        yield from (lambda r=r, i=i, n=n: _csv_row(path, i, n, r, columns) for i, (n, r) in enumerate(rows))
    else:
        items = _read_json_items(path)
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON list or JSON lines")
        if fmt == "medqa":
            yield from (lambda o=o, i=i: _checked(_medqa, path, i, o) for i, o in enumerate(items))
        elif fmt == "medmcqa":
            base = int(columns.get("cop_base", 1))
            yield from (lambda o=o, i=i: _checked(_medmcqa, path, i, o, base) for i, o in enumerate(items))
        elif fmt == "instruction":
            yield from (lambda o=o, i=i: _checked(_instruction, path, i, o) for i, o in enumerate(items))
        else:  # jsonl with a mapping
            yield from (lambda o=o, i=i: _checked(_mapped, path, i, o, columns) for i, o in enumerate(items))
