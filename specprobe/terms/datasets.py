"""Loaders for QA files; every loader returns `QARecord`s, nothing else in specprobe parses data files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

DATA_ENV = "SPECPROBE_SMEDQA"
_REPO_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "s-medqa" / "S-MedQA_validation.json"


class DataError(ValueError):
    """A data file or one of its records is malformed; the message names the file, item and field."""


@dataclass(frozen=True)
class TextRecord:
    """One context text to probe: an id, the text, and the specialties it belongs to (possibly none)."""

    id: str
    text: str
    specialties: tuple[str, ...] = ()


@dataclass(frozen=True)
class QARecord:
    """One multiple-choice question: the shared record type of every loader."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: str
    specialties: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)

    def context_text(self) -> str:
        """The text probed for this question: the question followed by its lettered options."""
        letters = "ABCDEFGHIJ"
        opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(self.options))
        return f"{self.question}\n{opts}"

    def as_text_record(self) -> TextRecord:
        return TextRecord(self.id, self.context_text(), self.specialties)


def default_data_path() -> Path:
    """The S-MedQA validation file: `$SPECPROBE_SMEDQA` if set, else `../shared/data/s-medqa/` beside the repo."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else _REPO_DEFAULT


def _as_specialties(value, path, index) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise DataError(f"{path}: item {index}: field 'Specialty' must be a string or a list of strings, got {value!r}")


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
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of question objects")
    return items


def load_qa_report(path: str | os.PathLike, *, format: str = "auto", mapping: dict | None = None,
                   skip_bad: bool = False) -> tuple[list[QARecord], list[str]]:
    """Like `load_qa`, and also return the messages of the records skipped (with `skip_bad`)."""
    from .formats import parse_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"QA data file not found: {path}")
    records, skipped = [], []
    for item in parse_file(path, format=format, mapping=mapping):
        try:
            records.append(item())
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    if not records and not skipped:
        raise DataError(f"{path}: no records")
    return records, skipped


def load_qa(path: str | os.PathLike, *, format: str = "auto", mapping: dict | None = None,
            skip_bad: bool = False) -> list[QARecord]:
    """Load a QA file into `QARecord`s.

    `format`: "auto" (guessed from the extension and the first record's keys), "smedqa" (JSON list with
    Question/Specialty/Options/Answer), "medqa" (JSONL: question, options dict, answer_idx), "medmcqa"
    (JSON/JSONL: question, opa..opd, cop, subject_name), "instruction" (instruction/input/output), or
    "csv"/"jsonl" with a column `mapping` (see `specprobe.terms.formats`). A malformed record raises
    `DataError` naming the file, the item index and the field; with `skip_bad=True` it is skipped and logged.
    """
    records, skipped = load_qa_report(path, format=format, mapping=mapping, skip_bad=skip_bad)
    if skipped:
        import logging

        log = logging.getLogger(__name__)
        log.warning("%s: skipped %d malformed record(s)", path, len(skipped))
        for msg in skipped[:20]:
            log.warning("  %s", msg)
    return records
