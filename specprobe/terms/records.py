"""The record types every loader returns, `DataError`, and reading a UTF-8 data file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file or one of its records is malformed; the message names the file, item and field."""


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 data file: a leading byte-order mark is dropped (files saved by Excel and
    Notepad have one); invalid UTF-8 raises `DataError` naming the file, byte and line."""
    path = Path(path)
    raw = path.read_bytes()
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


def unique_ids(records: Iterable[TextRecord], source: str = "texts") -> list[TextRecord]:
    """The records with unique ids: an exact repeat (same id and text) is dropped, and a different text
    under a used id gets the id "<id>#2", "#3", ...; both are reported in one warning naming `source`."""
    out: list[TextRecord] = []
    seen: dict[str, str] = {}
    dropped, renamed = [], []
    for r in records:
        if r.id not in seen:
            seen[r.id] = r.text
            out.append(r)
        elif seen[r.id] == r.text:
            dropped.append(r.id)
        else:
            k = 2
            while f"{r.id}#{k}" in seen:
                k += 1
            new = TextRecord(f"{r.id}#{k}", r.text, r.specialties)
            seen[new.id] = new.text
            renamed.append(f"{r.id} -> {new.id}")
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


def _as_specialties(value, path, index) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise DataError(f"{path}: item {index}: field 'Specialty' must be a string or a list of strings, got {value!r}")
