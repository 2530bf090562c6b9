"""Parsers for the QA file formats `datasets.load_qa` accepts; each yields one thunk per item that returns a
`QARecord` or raises `DataError` naming the file, the item index and the field.

Formats:

- ``smedqa``: a JSON list (or JSON lines) of {"Question", "Specialty" (string or list), "Options" (list),
  "Answer" (text)}.

Whatever the format and the file's suffix, a file that is not a JSON list is read as JSON lines, one object
per line (blank lines ignored): a line that does not parse is an error naming its line, and a record's error
names its line too. A JSON document that is no list (a lexicon, an object wrapping the questions) is an
error saying so.
- ``medqa``: JSON lines of {"question", "options": {"A": ..., ...}, "answer_idx": "A", optional "answer",
  "specialty"}; an "answer" that is not the text of the option "answer_idx" names is an error.
- ``medmcqa``: JSON lines (or a JSON list) of {"question", "opa", "opb", "opc", "opd", "cop", "subject_name",
  "id"}; ``cop`` counts the options from 1 (1-4) in the original release and from 0 (0-3) in the Hugging
  Face copy: the file's own numbers tell which (a 0 and no 4: from 0; a 4 and no 0: from 1). A file whose
  numbers cannot tell (only 1-3) is refused unless ``mapping={"cop_base": 0}`` (or 1) says.
- ``instruction``: JSON/JSON lines of {"instruction", "input", "output"}: the options are the last run of
  lines lettered A, B, C, ... in order ("A. ...", "(B) ...") of ``input`` (or of ``instruction`` when
  ``input`` has none), so a question line such as "E. coli grew ..." stays question text; the question is
  the text before them; ``output`` is the answer letter, the option's text (trailing punctuation and case
  aside), or both ("C. Rest"; naming two options is an error); optional "specialty".
- ``csv`` / ``jsonl``: any columns, named by ``mapping``: {"question": col, "options": [cols] or col
  (a JSON list or a "||"-separated string), "answer": col, "answer_format": "text" | "letter" | "index",
  "index_base": 0 | 1 (an index's first option; default: as the file's numbers show, a file that cannot
  tell is refused), "specialty": col (";"-separated for several), "id": col}.
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

from .records import LEXICON_SCHEMA, OPTION_LETTERS, DataError, QARecord, _as_specialties, read_text, record_id

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


#: what a JSON QA file holds, for the errors about one that holds something else
_EXPECTED = "a JSON list of question objects, or JSON Lines (one question object per line)"


def _read_json_items(path: Path) -> tuple[list, list[int] | None]:
    """The items of a JSON QA file and, when it is JSON Lines, each item's 1-based line (else None).

    A JSON list is one document; anything else is read as JSON Lines (one object per line, blank lines
    ignored), whatever the file's suffix: a line that is not a JSON object becomes a `BadLine` item, so
    that skip_bad can skip it. A file that is one JSON document but no list (a lexicon, an object
    wrapping the questions) is a `DataError` saying what it is and what was expected."""
    text = read_text(path)
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
    whole_error: json.JSONDecodeError | None = None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:  # JSON Lines of two or more lines, or broken
        whole_error = exc
    else:  # one document: a question object on one line is a JSON Lines file of one line
        if "\n" in stripped or _is_lexicon(whole):
            _not_qa_data(path, whole)
    items: list = []
    lines: list[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines: a U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            items.append(parse_jsonl_line(line, path, lineno))
        except ValueError as exc:
            items.append(BadLine(DataError(str(exc))))
        lines.append(lineno)
    if items and all(isinstance(x, BadLine) for x in items):  # nothing parses: not a JSON-lines file at all
        first = items[0].error
        if whole_error is not None and stripped.startswith("{") and len(items) > 1:  # a broken JSON document
            raise DataError(
                f"{path}: not valid JSON ({whole_error}), nor JSON Lines ({str(first).removeprefix(f'{path}: ')})"
            ) from None
        raise first
    return items, lines


def _is_lexicon(value: Any) -> bool:
    return isinstance(value, dict) and value.get("schema") == LEXICON_SCHEMA


def _not_qa_data(path: Path, value: Any) -> None:
    """The `DataError` for a JSON document that is not a list of questions, naming what it is instead."""
    if _is_lexicon(value):
        raise DataError(
            f"{path}: a specprobe term lexicon, not QA data (expected {_EXPECTED}); "
            "a lexicon is what compare and layers take as --terms"
        )
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:6]) + (", ..." if len(value) > 6 else "")
        lists = [k for k, v in value.items() if isinstance(v, list)]
        hint = f"; the questions may be the list under {lists[0]!r}: save that list as the file" if lists else ""
        raise DataError(f"{path}: the JSON is one object (keys {keys}), not QA data: expected {_EXPECTED}{hint}")
    kind = {str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(type(value), "null")
    raise DataError(f"{path}: the JSON is {kind}, not QA data: expected {_EXPECTED}")


def _checked(parse: Callable, path: Path, i: int, obj, *args, line: int | None = None) -> QARecord:
    """`parse(path, i, obj, *args)`; in a JSON Lines file a record's error names its line too ("item 3
    (line 5): ..."), and a line that did not parse raises its own error."""
    if isinstance(obj, BadLine):
        raise obj.error
    try:
        return parse(path, i, obj, *args)
    except DataError as exc:
        prefix = f"{path}: item {i}:"
        if line is None or not str(exc).startswith(prefix):
            raise
        raise DataError(f"{path}: item {i} (line {line}):{str(exc)[len(prefix) :]}") from None


def detect_format(path: Path, mapping: dict | None = None) -> str:
    """Guess the format from the extension and the first record's keys."""
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if mapping and set(mapping) - {"cop_base"}:  # cop_base alone names no columns: it is for medmcqa
        return "jsonl"
    items, _ = _read_json_items(path)
    first = next((x for x in items if isinstance(x, dict)), None)
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
    text = obj.get("answer")
    if isinstance(text, str) and text.strip() != opts[idx].strip():  # which of the two is the gold answer?
        raise _err(path, i, f"field 'answer' {text!r} is not option {idx} {opts[idx]!r}, which 'answer_idx' names")
    spec = _as_specialties(obj.get("specialty", obj.get("Specialty", ())), path, i)
    rid, meta = record_id(obj.get("id"), path, i)
    info = {"meta_info": obj["meta_info"]} if "meta_info" in obj else {}
    return QARecord(rid, q, options, opts[idx], spec, meta | info)


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
    rid, meta = record_id(obj.get("id"), path, i)
    return QARecord(rid, q, tuple(options), options[cop - base], spec, meta)


def _cop_base(path: Path, items: Sequence[Any], columns: dict) -> int:
    """Whether the file's `cop` counts options from 0 or 1: as `cop_base` says, else as its numbers show
    (a 0-based file read as 1-based shifts every answer by one option, silently where no cop is 0)."""
    if "cop_base" in columns:
        base = columns["cop_base"]
        if isinstance(base, bool) or base not in (0, 1):
            raise DataError(f"{path}: mapping 'cop_base' {base!r} must be 0 or 1")
        return base
    cops = {obj.get("cop") for obj in items if isinstance(obj, dict)}
    numbers = {c for c in cops if isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 4}
    if not numbers or (0 in numbers) != (4 in numbers):  # none: each record's own error says what is wrong
        return 0 if 0 in numbers else 1
    seen = "both 0 and 4" if 0 in numbers else f"only {', '.join(map(str, sorted(numbers)))}"
    raise DataError(
        f"{path}: field 'cop' holds {seen}, so it cannot tell whether options count from 0 (Hugging Face "
        f"copy) or 1 (original release); say which: --mapping '{{\"cop_base\": 0}}' (or 1) on the command line "
        "(terms build, finetune, evaluate, compare, layers, analyze trajectory/seen-unseen, demo --data), "
        "mapping = {cop_base = 0} "
        'in a `specprobe run` experiment file, mapping={"cop_base": 0} in Python (load_qa, finetune.train, ...)'
    )


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
    answer = _instruction_answer(path, i, out, dict(pairs))
    spec = _as_specialties(obj.get("specialty", obj.get("Specialty", ())), path, i)
    rid, meta = record_id(obj.get("id"), path, i)
    return QARecord(rid, question, options, answer, spec, meta)


_LETTER_ONLY = re.compile(r"^\(?([A-Z])[\).:]?\)?$")  # "B", "(B)", "B.", "B)"
_LETTER_THEN_TEXT = re.compile(r"^\(?([A-Z])[\).:]\s+(.+)$")  # "C. A ruptured spleen", "(C) ..."


def _plain(text: str) -> str:
    return text.strip().rstrip(".;:!").strip().lower()


def _instruction_answer(path: Path, i: int, out: str, by_letter: dict[str, str]) -> str:
    """The option an instruction record's `output` names: a bare letter; an option's text (trailing
    punctuation and case aside: "A ruptured spleen." is that option, not option A); a letter with its
    option's text ("C. A ruptured spleen"; with another option's text, an error); or text ending in exactly
    one option's text."""
    options = list(by_letter.values())
    bare = _LETTER_ONLY.match(out)
    if bare is not None and bare.group(1) in by_letter:
        return by_letter[bare.group(1)]
    same = [o for o in options if _plain(o) == _plain(out)]
    if len(same) == 1:
        return same[0]
    lettered = _LETTER_THEN_TEXT.match(out)
    if lettered is not None and lettered.group(1) in by_letter:
        letter, named = lettered.group(1), _plain(lettered.group(2))
        other = [k for k, o in by_letter.items() if _plain(o) == named and k != letter]
        if other and _plain(by_letter[letter]) != named:
            raise _err(path, i, f"field 'output' {out[:60]!r} names option {letter} by letter but {other[0]} by text")
        return by_letter[letter]
    hit = [o for o in options if _plain(out).endswith(_plain(o))]
    if len(hit) != 1:
        raise _err(path, i, f"field 'output' {out[:60]!r} names none of the options")
    return hit[0]


def _option_lines(lines: Sequence[str]) -> list[int]:
    """The indices of the option lines: the last run of lines lettered A, B, C, ... in order (lines that are
    not lettered may stand between them), of at least two. A lettered line of the question ("E. coli grew
    in the culture", "C. difficile ...") is not an option: it starts no run at "A", and inside one it would
    have to carry the next letter; nor may a letter repeat. Past J only the next letter counts (K after J)."""
    found: list[int] = []
    for start, line in enumerate(lines):
        first = _OPTION_LINE.match(line)
        if first is None or first.group(1) != "A":
            continue
        run, expected = [start], "B"
        for k in range(start + 1, len(lines)):
            m = _OPTION_LINE.match(lines[k]) or _LATER_OPTION_LINE.match(lines[k])
            if m is None:
                continue  # a blank line, or one that is not lettered, between two options
            if m.group(1) != expected:
                break
            run.append(k)
            expected = chr(ord(expected) + 1)
        if len(run) >= 2:
            found = run  # the options come after the question: the last run wins
    return found


def _mapped_answer(value: Any, options: Sequence[str], fmt: str, index_base: int) -> str | None:
    """The option a mapped answer names, or None: a letter must be exactly one of the options' letters
    ("B", "(b)", "B."), an index a whole number within the options (no negative or wrapped index)."""
    if fmt == "letter":
        letter = str(value).strip().strip("().").upper()
        k = LETTERS.find(letter) if len(letter) == 1 else -1
    elif fmt == "index":
        number = _whole_number(value)
        k = number - index_base if number is not None else -1
    else:
        answer = str(value).strip()
        return answer if answer in options else None
    return options[k] if 0 <= k < len(options) else None


def _mapped(path: Path, i: int, row, mapping: dict) -> QARecord:
    _need_obj(path, i, row)
    qcol = mapping.get("question", "question")
    q = _need_str(path, i, row, qcol)
    options = _mapped_options(path, i, row, mapping)
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
    rid, meta = record_id(row.get(icol) if icol else None, path, i)
    return QARecord(rid, q, tuple(options), answer, spec, meta)


def _mapped_options(path: Path, i: int, row: dict, mapping: dict) -> list[str]:
    """A mapped row's options: from the columns the mapping lists, or one column holding a JSON list, a
    "||"-separated string or an object (its values in key order)."""
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
    return options


def _whole_number(value: Any) -> int | None:
    """`value` as a whole number ("2", 2, 2.0), else None."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _index_base(path: Path, rows: Sequence[Any], mapping: dict) -> dict:
    """`mapping` with the index_base of an "index" answer column: as given (0 or 1), else as the file's
    numbers show: a 0 counts from 0, the number of a row's options (its last, counted from 1) from 1. A
    file whose numbers show neither (or both) is refused: a 1-based file read as 0-based moved every answer
    one option later, silently wherever no answer was the last option."""
    if mapping.get("answer_format") != "index":
        return mapping
    if "index_base" in mapping:
        base = mapping["index_base"]
        if isinstance(base, bool) or base not in (0, 1):
            raise DataError(f"{path}: mapping 'index_base' {base!r} must be 0 or 1")
        return mapping
    acol, zero, last = mapping.get("answer", "answer"), False, False
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or (number := _whole_number(row.get(acol))) is None:
            continue
        try:
            n = len(_mapped_options(path, i, row, mapping))
        except DataError:
            continue  # the row's own error says what is wrong
        zero, last = zero or number == 0, last or number == n
    if zero != last:
        return {**mapping, "index_base": 0 if zero else 1}
    if not any(isinstance(r, dict) and _whole_number(r.get(acol)) is not None for r in rows):
        return {**mapping, "index_base": 0}  # no number at all: each row's own error says so
    seen = "both 0 and a row's number of options" if zero else "no 0 and never a row's number of options"
    raise DataError(
        f"{path}: field {acol!r} (answer_format index) holds {seen}, so it cannot tell whether options count "
        'from 0 or 1; say which: add "index_base": 0 (or 1) to the mapping'
    )


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


def _smedqa(path: Path, index: int, obj) -> QARecord:
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
    rid, meta = record_id(obj["id"] if obj.get("id") is not None else obj.get("ID"), path, index)
    return QARecord(rid, question, tuple(options), answer, specialties, meta)


def _mapped_columns(mapping: dict) -> tuple[list[str], list[str]]:
    """(the columns every row needs, the optional ones the mapping names) of a csv/jsonl mapping."""
    options = mapping.get("options", "options")
    needed = [mapping.get("question", "question"), *(options if isinstance(options, list | tuple) else [options])]
    return [*needed, mapping.get("answer", "answer")], [mapping[k] for k in ("specialty", "id") if mapping.get(k)]


def _shown_columns(header: list[str], limit: int = 200) -> str:
    """A header's columns for a message, cut at about `limit` characters (a JSON file read as CSV has its
    whole first line as columns: a 17 kB error)."""
    text = ", ".join(header)
    return text if len(text) <= limit else text[:limit].rstrip() + f"... ({len(header)} columns)"


def _check_columns(path: Path, header: list[str], mapping: dict) -> None:
    """A CSV header without a column the mapping names (or a default one: question, options, answer) is
    one error naming it and the header's columns: a misspelt specialty column was read as empty in every
    row (a lexicon without specialties, exit 0), a missing question column failed on every row."""
    needed, optional = _mapped_columns(mapping)
    missing = [c for c in dict.fromkeys([*needed, *optional]) if c not in header]
    if header and missing:
        raise DataError(
            f"{path}: no column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} (its columns: "
            f"{_shown_columns(header)}); "
            "rename the columns, or name them in the mapping (--mapping, a run file's mapping key, mapping=)"
            + (
                "; it looks like JSON, not CSV: leave --format out (auto)"
                if header[0].lstrip().startswith(("[", "{"))
                else ""
            )
        )


def _check_optional_keys(path: Path, items: list, mapping: dict) -> None:
    """A JSON Lines file in which no record has the specialty (or id) key the mapping names: a misspelt
    key, which would leave every question without its specialty."""
    objects = [obj for obj in items if isinstance(obj, dict)]
    for key in _mapped_columns(mapping)[1]:
        if objects and not any(key in obj for obj in objects):
            raise DataError(
                f"{path}: no record has the key {key!r} the mapping names (the first has {sorted(objects[0])})"
            )


_COLUMN_KEYS = ("question", "answer", "specialty", "id")
MAPPING_KEYS = (*_COLUMN_KEYS, "options", "answer_format", "index_base", "cop_base", "delimiter")


def check_mapping(mapping: dict | None, where: str = "mapping") -> None:
    """A `DataError` naming the key for a mapping key that is unknown (a misspelt "answr" was ignored and the
    default "answer" column read instead) or a value of the wrong type ({"question": 3})."""
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise DataError(f"{where}: must be an object of key -> column, got {type(mapping).__name__}")
    unknown = [k for k in mapping if k not in MAPPING_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(MAPPING_KEYS)}")
    for key in _COLUMN_KEYS:
        if key in mapping and not (isinstance(mapping[key], str) and mapping[key]):
            raise DataError(f"{where}.{key}: must be a column name (a string), got {mapping[key]!r}")
    options = mapping.get("options", "options")
    if not (isinstance(options, str) and options) and not (
        isinstance(options, list) and options and all(isinstance(c, str) and c for c in options)
    ):
        raise DataError(f"{where}.options: must be a column name or a list of column names, got {options!r}")
    if mapping.get("answer_format", "text") not in ("text", "letter", "index"):
        raise DataError(f"{where}.answer_format: must be text, letter or index, got {mapping['answer_format']!r}")
    delimiter = mapping.get("delimiter", ",")
    if not (isinstance(delimiter, str) and len(delimiter) == 1):
        raise DataError(f"{where}.delimiter: must be one character, got {delimiter!r}")


def parse_file(path: Path, format: str = "auto", mapping: dict | None = None) -> Iterator[Thunk]:
    """Yield one thunk per item of `path`; calling it parses the item (so a caller can skip bad ones)."""
    if format not in FORMATS:
        raise ValueError(f"unknown QA format {format!r}; choose one of {', '.join(FORMATS)}")
    check_mapping(mapping)
    fmt = detect_format(path, mapping) if format == "auto" else format
    columns: dict = dict(mapping or {})
    if fmt == "csv":
        delim = "\t" if path.suffix.lower() == ".tsv" else columns.get("delimiter", ",")
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delim)
        try:
            rows = [(reader.line_num, r) for r in reader]
        except csv.Error as exc:
            raise DataError(f"{path}: not valid CSV ({exc})") from exc
        _check_columns(path, list(reader.fieldnames or []), columns)
        columns = _index_base(path, [r for _, r in rows], columns)
        yield from (lambda r=r, i=i, n=n: _csv_row(path, i, n, r, columns) for i, (n, r) in enumerate(rows))
        return
    items, lines = _read_json_items(path)
    if fmt == "smedqa":
        parse, extra = _smedqa, ()
    elif fmt == "medqa":
        parse, extra = _medqa, ()
    elif fmt == "medmcqa":
        parse, extra = _medmcqa, (_cop_base(path, items, columns),)
    elif fmt == "instruction":
        parse, extra = _instruction, ()
    else:  # jsonl with a mapping
        _check_optional_keys(path, items, columns)
        parse, extra = _mapped, (_index_base(path, items, columns),)
    for i, obj in enumerate(items):
        yield lambda obj=obj, i=i: _checked(parse, path, i, obj, *extra, line=lines[i] if lines else None)
