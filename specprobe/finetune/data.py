"""Loading QA data for fine-tuning/evaluation and selecting questions by specialty."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from specprobe.finetune.prompts import check_records
from specprobe.finetune.snapshots import SNAPSHOTS
from specprobe.terms.datasets import DataError, QARecord, load_qa
from specprobe.terms.records import first_repeat, question_rows, records_sha256
from specprobe.terms.selection import (  # noqa: F401  (selection by specialty: defined in terms, used here)
    ALL,
    NO_SPECIALTY,
    data_specialties,
    normalize_specialty,
    select,
    specialties_of,
    specialty_counts,
)
from specprobe.utils.io import sha256_file


def load_records(
    data: str | os.PathLike | Sequence[QARecord], mapping: dict | None = None
) -> tuple[list[QARecord], dict]:
    """Records plus provenance ({"path", "sha256"} for a file, and the `mapping` it was read with when one is
    given: the same file read with another mapping is other data) from a path or a list of `QARecord`s."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        records = load_qa(path, mapping=mapping)
        check_records(records, str(path))
        meta = {"path": str(path), "sha256": sha256_file(path), "n_records": len(records)}
        return records, meta | ({"mapping": mapping} if mapping else {})
    if mapping:
        raise ValueError("mapping= says how to read a QA file; the data given are records, already read")
    records = list(data)
    if not all(isinstance(r, QARecord) for r in records):
        raise TypeError("data must be a path to a QA file or a list of QARecord")
    check_records(records)
    return records, {"path": None, "sha256": records_sha256(records), "n_records": len(records)}


def check_unique_ids(records: Sequence[QARecord], source: str = "data") -> None:
    """A `DataError` naming the first id that two questions share: lm-eval files and evaluation rows name a
    question by its id, which must then name one question."""
    if repeat := first_repeat(r.id for r in records):
        a, b, rid = repeat
        raise DataError(f"{source}: items {a} and {b} have the same id {rid!r}; give each question its own")


def load_selected(
    data: str | os.PathLike | Sequence[QARecord],
    specialty: str | Sequence[str] | None,
    *,
    one_answer: bool = False,
    mapping: dict | None = None,
) -> tuple[list[QARecord], dict]:
    """The records of `specialty` in `data` (see `select`) and the provenance of all of `data`
    (see `load_records`; `mapping`: how to read a QA file, see `load_qa`): how training, evaluation and
    the accuracy matrix read their questions. With `one_answer` (training), a question given twice with
    different answers anywhere in `data` is a `DataError` (`question_rows`, as the experiment's split
    refuses it): training would teach both."""
    source = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    records, meta = load_records(data, mapping)
    if one_answer:
        question_rows(records, source)
    return select(records, specialty, source), meta


def explode_specialties(frame, column: str = "specialties"):
    """One row per (row of `frame`, specialty of its `column`), the specialty in a new "specialty"
    column: a question of several specialties counts towards each (index values repeat)."""
    return frame.assign(specialty=frame[column].map(lambda s: list(specialties_of(s)))).explode("specialty")


def read_manifest(adapter: str | os.PathLike | None) -> dict:
    """The manifest.json a `train` run wrote beside the adapter ({} when absent or not a directory); for a
    snapshot the run lists (OUT/snapshots/step-N, which has none), the run's prompt format only: a snapshot
    is evaluated with the prompt it was trained on, the rest of the manifest describes the final adapter."""
    if adapter is None or not isinstance(adapter, (str, os.PathLike)):
        return {}
    path = Path(adapter) / "manifest.json"
    return _read_json(path) if path.exists() else _snapshot_manifest(Path(adapter).resolve())


def _snapshot_manifest(folder: Path) -> dict:
    """{"prompt": the run's format} for a snapshot folder its run's manifest lists, else {}."""
    run = folder.parent.parent / "manifest.json"
    if folder.parent.name != SNAPSHOTS or not run.exists():
        return {}
    manifest = _read_json(run)
    listed = {e.get("path") for e in manifest.get("snapshots") or [] if isinstance(e, dict)}
    return {"prompt": manifest["prompt"]} if f"{SNAPSHOTS}/{folder.name}" in listed and "prompt" in manifest else {}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
