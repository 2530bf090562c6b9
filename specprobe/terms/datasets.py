"""Loaders for QA files; every loader returns `QARecord`s, nothing else in specprobe parses data files.

The record types and `DataError` live in `records` (re-exported here); the per-format parsers in
`formats`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .formats import parse_file
from .records import DataError, QARecord, TextRecord, check_option_count, read_text, unique_ids

__all__ = [
    "DATA_ENV",
    "DataError",
    "QARecord",
    "TextRecord",
    "default_data_path",
    "load_qa",
    "load_qa_report",
    "read_text",
    "unique_ids",
]
log = logging.getLogger(__name__)
DATA_ENV = "SPECPROBE_SMEDQA"
_REPO_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "s-medqa" / "S-MedQA_validation.json"


def default_data_path() -> Path:
    """The S-MedQA validation file: `$SPECPROBE_SMEDQA` if set, else `../shared/data/s-medqa/` beside the repo."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else _REPO_DEFAULT


def load_qa_report(
    path: str | os.PathLike, *, format: str = "auto", mapping: dict | None = None, skip_bad: bool = False
) -> tuple[list[QARecord], list[str]]:
    """Like `load_qa`, and also return the messages of the records skipped (with `skip_bad`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"QA data file not found: {path}")
    records, skipped = [], []
    for i, item in enumerate(parse_file(path, format=format, mapping=mapping)):
        try:
            record = item()
            check_option_count(len(record.options), f"{path}: item {i} (id {record.id!r})")
            records.append(record)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    if not records and not skipped:
        raise DataError(f"{path}: no records")
    if not records:
        raise DataError(f"{path}: no valid records; all {len(skipped)} were malformed (first: {skipped[0]})")
    return records, skipped


def load_qa(
    path: str | os.PathLike, *, format: str = "auto", mapping: dict | None = None, skip_bad: bool = False
) -> list[QARecord]:
    """Load a QA file into `QARecord`s.

    `format`: "auto" (guessed from the extension and the first record's keys), "smedqa" (JSON list or JSON
    lines with Question/Specialty/Options/Answer), "medqa" (JSONL: question, options dict, answer_idx), "medmcqa"
    (JSON/JSONL: question, opa..opd, cop, subject_name), "instruction" (instruction/input/output), or
    "csv"/"jsonl" with a column `mapping` (see `specprobe.terms.formats`). A malformed record (or one
    with more than 26 options, which cannot be lettered A-Z) raises
    `DataError` naming the file, the item index and the field; with `skip_bad=True` it is skipped and logged
    (a JSON line that does not parse counts as a malformed record). A JSON file that is not a list is read as
    JSON lines whatever its suffix, and its errors name the line; a JSON document that is no list of questions
    (a lexicon, an object wrapping them) raises `DataError` saying what it is. Files are UTF-8, with or without
    a byte-order mark; invalid UTF-8 (or a gzip-compressed file) raises `DataError` naming the file.
    """
    records, skipped = load_qa_report(path, format=format, mapping=mapping, skip_bad=skip_bad)
    if skipped:
        log.warning("%s: skipped %d malformed record(s)", path, len(skipped))
        for msg in skipped[:20]:
            log.warning("  %s", msg)
    return records
