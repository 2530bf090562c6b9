"""The record types every loader returns, `DataError`, and reading a UTF-8 data file."""

from __future__ import annotations

import hashlib
import logging
import os
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specprobe.utils.io import read_bytes

log = logging.getLogger(__name__)

#: the letters of a question's options, in the lexicon's contexts and the prompts (`finetune.prompts.LETTERS`)
OPTION_LETTERS = string.ascii_uppercase
#: the "schema" of a lexicon file (`lexicon.SCHEMA`), here so that the QA loaders can tell a lexicon given as data
LEXICON_SCHEMA = "specprobe.terms.lexicon"
#: `QARecord.meta` key, True where the data gave the question no id and the loader numbered it "<file stem>:<row>"
ROW_ID = "row_id"


class DataError(ValueError):
    """A data file or one of its records is malformed; the message names the file, item and field."""


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 data file: a leading byte-order mark is dropped (files saved by Excel and
    Notepad have one); invalid UTF-8 (or a gzip-compressed file) raises `DataError` naming the file, byte
    and line."""
    return decode_text(read_bytes(path), Path(path))


def decode_text(raw: bytes, path: Path) -> str:
    """`read_text` of bytes already read from `path` (named in the errors)."""
    if raw[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: a gzip-compressed file, not UTF-8 text; decompress it first (gunzip)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid UTF-8 at byte {exc.start} (line {line}: {exc.reason}); save the file as UTF-8"
        ) from None


@dataclass(frozen=True)
class TextRecord:
    """One context text to probe: an id, the text, and the specialties it belongs to (possibly none)."""

    id: str
    text: str
    specialties: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "specialties", _unique_specialties(self.specialties, self.id))


@dataclass(frozen=True)
class QARecord:
    """One multiple-choice question: the shared record type of every loader."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: str
    specialties: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "specialties", _unique_specialties(self.specialties, self.id))

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)

    def context_text(self) -> str:
        """The text probed for this question: the question followed by its options lettered A-Z (as the
        prompts letter them); more than 26 options raise `DataError` naming the question."""
        check_option_count(len(self.options), f"question {self.id!r}")
        opts = "\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(self.options))
        return f"{self.question}\n{opts}"

    def as_text_record(self) -> TextRecord:
        return TextRecord(self.id, self.context_text(), self.specialties)


def record_id(value: Any, path: Path, index: int) -> tuple[str, dict]:
    """(id, meta) of a record whose id field holds `value`: the id the data gives, or "<file stem>:<row>" and
    {ROW_ID: True} when it gives none (a missing, null or empty id: a null is no id "None" shared by every row)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{path.stem}:{index}", {ROW_ID: True}
    return str(value), {}


def normalized_question(text: str) -> str:
    """A question's text as the split compares it: Unicode NFKC, case-folded, each run of whitespace one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def split_identity(record: QARecord) -> str:
    """What the experiment's split hashes for a question: the id the data gave it, or for a question the
    loader numbered (`ROW_ID`) a hash of its normalised text, so that the split depends on the data's content,
    not on the file's name, and rows of one question text share a key."""
    if not record.meta.get(ROW_ID):
        return record.id
    return "text:" + hashlib.sha256(normalized_question(record.question).encode("utf-8")).hexdigest()


def question_rows(records: Iterable[QARecord], source: str = "data") -> dict[str, list[QARecord]]:
    """The rows of each question text (`context_text`: question and lettered options, as the probes read it),
    in first-seen order; rows of one question with different answers are a `DataError` naming `source`
    (`check_same_answer`): the experiment's split merges them, and training must not teach two answers."""
    units: dict[str, list[QARecord]] = {}
    for r in records:
        unit = units.setdefault(r.context_text(), [])
        if unit:
            check_same_answer(unit[0], r, source)
        unit.append(r)
    return units


def check_same_answer(first: QARecord, other: QARecord, source: str) -> None:
    """A `DataError` naming both rows, the question and the two answers when a repeat of a question gives
    another answer (keeping either would train and score on a gold answer the data contradicts)."""
    if other.answer != first.answer:
        raise DataError(
            f"{source}: rows {first.id!r} and {other.id!r} give the question {first.question[:60]!r} different "
            f"answers, {first.answer!r} and {other.answer!r}; fix the data (a question has one gold answer)"
        )


def check_option_count(n: int, where: str) -> None:
    """`DataError` naming `where` when a question has more options than there are letters (A-Z)."""
    if n > len(OPTION_LETTERS):
        raise DataError(f"{where}: {n} options; at most {len(OPTION_LETTERS)} can be lettered (A-Z)")


def _unique_specialties(specialties: Sequence[str], rid: str) -> tuple[str, ...]:
    """The specialties, each once, in their first order (a record may list one twice: it must count once)."""
    if isinstance(specialties, str):
        raise TypeError(f"record {rid!r}: specialties must be a sequence of strings, not the string {specialties!r}")
    return tuple(dict.fromkeys(specialties))


def unique_text_ids(items: Iterable[tuple[str, str]], source: str = "texts") -> list[str | None]:
    """The id each (id, text) item keeps when ids must be unique, as `unique_ids` assigns them: None for an
    exact repeat (same id and text: dropped), "<id>#2", "#3", ... for a different text under a used id;
    both are reported in one warning naming `source`."""
    out: list[str | None] = []
    seen: dict[str, str] = {}
    dropped, renamed = [], []
    for rid, text in items:
        if rid not in seen:
            seen[rid] = text
            out.append(rid)
        elif seen[rid] == text:
            dropped.append(rid)
            out.append(None)
        else:
            k = 2
            while f"{rid}#{k}" in seen:
                k += 1
            new = f"{rid}#{k}"
            seen[new] = text
            renamed.append(f"{rid} -> {new}")
            out.append(new)
    if dropped or renamed:
        log.warning(
            "%s: duplicate text ids: %d exact repeat(s) dropped%s, %d text(s) renamed%s",
            source,
            len(dropped),
            f" ({', '.join(dropped[:5])})" if dropped else "",
            len(renamed),
            f" ({', '.join(renamed[:5])})" if renamed else "",
        )
    return out


def records_sha256(records: Sequence[QARecord]) -> str:
    """The sha256 of QA data given as records rather than a file (id, question, options, answer and
    specialties of each, in order): what a training run records as its data's hash, and what checks it."""
    import json

    from specprobe.utils.io import sha256_text

    return sha256_text(
        json.dumps([[r.id, r.question, list(r.options), r.answer, list(r.specialties)] for r in records])
    )


def first_repeat(ids: Iterable[str]) -> tuple[int, int, str] | None:
    """(index of its first use, index of its repeat, id) of the first id given twice, or None."""
    first: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid in first:
            return first[rid], i, rid
        first[rid] = i
    return None


def unique_ids(records: Iterable[TextRecord], source: str = "texts") -> list[TextRecord]:
    """The records with unique ids: an exact repeat (same id and text) is dropped, and a different text
    under a used id gets the id "<id>#2", "#3", ...; both are reported in one warning naming `source`
    (`unique_text_ids`)."""
    records = list(records)
    ids = unique_text_ids(((r.id, r.text) for r in records), source)
    return [r if rid == r.id else TextRecord(rid, r.text, r.specialties) for r, rid in zip(records, ids) if rid]


def _as_specialties(value, path, index) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))  # each once, in order
    raise DataError(f"{path}: item {index}: field 'Specialty' must be a string or a list of strings, got {value!r}")
