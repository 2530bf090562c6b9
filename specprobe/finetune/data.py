"""Loading QA data for fine-tuning/evaluation and selecting questions by specialty."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from specprobe.finetune.prompts import check_records
from specprobe.finetune.snapshots import SNAPSHOTS
from specprobe.terms.datasets import DataError, QARecord, load_qa
from specprobe.terms.records import first_repeat
from specprobe.utils.io import sha256_file, sha256_text

ALL = "all"
NO_SPECIALTY = "(none)"


def load_records(data: str | os.PathLike | Sequence[QARecord]) -> tuple[list[QARecord], dict]:
    """Records plus provenance ({"path", "sha256"} for a file) from a path or a list of `QARecord`s."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        records = load_qa(path)
        check_records(records, str(path))
        return records, {"path": str(path), "sha256": sha256_file(path), "n_records": len(records)}
    records = list(data)
    if not all(isinstance(r, QARecord) for r in records):
        raise TypeError("data must be a path to a QA file or a list of QARecord")
    check_records(records)
    digest = sha256_text(
        json.dumps([[r.id, r.question, list(r.options), r.answer, list(r.specialties)] for r in records])
    )
    return records, {"path": None, "sha256": digest, "n_records": len(records)}


def check_unique_ids(records: Sequence[QARecord], source: str = "data") -> None:
    """A `DataError` naming the first id that two questions share: lm-eval files and evaluation rows name a
    question by its id, which must then name one question."""
    if repeat := first_repeat(r.id for r in records):
        a, b, rid = repeat
        raise DataError(f"{source}: items {a} and {b} have the same id {rid!r}; give each question its own")


def load_selected(
    data: str | os.PathLike | Sequence[QARecord], specialty: str | Sequence[str] | None
) -> tuple[list[QARecord], dict]:
    """The records of `specialty` in `data` (see `select`) and the provenance of all of `data`
    (see `load_records`): how training, evaluation and the accuracy matrix read their questions."""
    source = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    records, meta = load_records(data)
    return select(records, specialty, source), meta


def specialties_of(specialties: Sequence[str] | None) -> tuple[str, ...]:
    """The specialties a question counts towards: its own, each once (a file may list one twice, and
    the question must not count twice in its n), or (NO_SPECIALTY,) when it has none."""
    return tuple(dict.fromkeys(specialties)) if specialties else (NO_SPECIALTY,)


def explode_specialties(frame, column: str = "specialties"):
    """One row per (row of `frame`, specialty of its `column`), the specialty in a new "specialty"
    column: a question of several specialties counts towards each (index values repeat)."""
    return frame.assign(specialty=frame[column].map(lambda s: list(specialties_of(s)))).explode("specialty")


def specialty_counts(records: Iterable[QARecord]) -> Counter:
    counts: Counter = Counter()
    for r in records:
        for s in specialties_of(r.specialties):
            counts[s] += 1
    return counts


def normalize_specialty(specialty: str | Sequence[str] | None) -> list[str] | None:
    """None (all), or a sorted list of distinct names; "all" means all. A comma list is accepted."""
    if specialty is None:
        return None
    if isinstance(specialty, str):
        specialty = [specialty]
    names: list[str] = []
    for s in specialty:
        names += [p.strip() for p in str(s).split(",") if p.strip()] if "," in str(s) else [str(s).strip()]
    if not names or any(n.lower() == ALL for n in names):
        return None
    return sorted(set(names))


def select(records: Sequence[QARecord], specialty: str | Sequence[str] | None, source: str = "data") -> list[QARecord]:
    """The records of the given specialties (case-insensitive); an unknown or empty one is an error
    listing the available specialties with their question counts."""
    keep = data_specialties(records, specialty, source)
    if keep is None:
        if not records:
            raise DataError(f"{source}: no questions")
        return list(records)
    wanted = {k.lower() for k in keep}
    return [r for r in records if {s.lower() for s in specialties_of(r.specialties)} & wanted]


def data_specialties(
    records: Sequence[QARecord], specialty: str | Sequence[str] | None, source: str = "data"
) -> list[str] | None:
    """The given specialties as `records` spell them (sorted; matched case-insensitively, as `select`
    matches them, every spelling the data has), or None for all: what a run trained on "cardiology"
    records, so that it is known for the data's "Cardiology". An unknown one is an error as in `select`."""
    wanted = normalize_specialty(specialty)
    if wanted is None:
        return None
    counts = specialty_counts(records)
    lower = {k.lower() for k in counts}
    missing = [w for w in wanted if w.lower() not in lower]
    if missing:
        available = ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        raise DataError(
            f"{source}: no questions for specialty {', '.join(map(repr, missing))}; available: {available or 'none'}"
        )
    asked = {w.lower() for w in wanted}
    return sorted(k for k in counts if k.lower() in asked)


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
