"""The questions an adapter was trained on, read from its `manifest.json` and checked, never guessed.

`specprobe.finetune.train` writes beside each adapter a manifest that records the training data (its
path and sha256) and the specialty filter. This module reopens that data file, checks its sha256
against the manifest, applies the same filter and checks the number of questions it gives, and keeps
the questions the run's optimizer steps drew (all of them after one epoch), so the "seen" terms of an
adapter are exactly those of the questions it saw.

The rules it shares with training come from the layers both import (the probe may not import
`specprobe.finetune`): how a list of records is hashed (`terms.records.records_sha256`), how questions
are selected by specialty (`terms.selection.select`) and which questions an optimizer step draws
(`core.step_order.group_indices`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from specprobe.core.models import adapter_weights_sha256, check_adapter_folder
from specprobe.core.step_order import group_indices
from specprobe.terms.datasets import QARecord, load_qa
from specprobe.terms.records import records_sha256
from specprobe.terms.selection import normalize_specialty, select, specialty_counts
from specprobe.utils.io import read_json, sha256_file

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TrainingData:
    """An adapter's training questions: the records, the specialties it was trained on (None: all),
    where they came from, the adapter's own identity (for checks against a Comparison), and of each
    record the text training showed (`seen_texts`; empty: each record's whole `context_text`)."""

    records: tuple[QARecord, ...]
    specialties: tuple[str, ...] | None
    source: dict
    adapter: str | None
    adapter_sha256: str | None
    name: str
    seen_texts: tuple[str, ...] = ()

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.records)

    def texts(self) -> tuple[str, ...]:
        """What training showed of each question: its question and lettered options, with the characters
        that a prompt cut to max_length lost blanked out (the manifest's 'filter.truncated_questions')."""
        return self.seen_texts or tuple(r.context_text() for r in self.records)


def read_adapter_manifest(adapter: Any) -> tuple[dict | None, str | None]:
    """(manifest or None when the directory has none, adapter directory or None) from an adapter
    directory, a manifest.json path, a manifest dict, or an object with a `.manifest` dict (a `TrainRun`)."""
    if isinstance(adapter, Mapping):
        return dict(adapter), None
    if hasattr(adapter, "manifest") and isinstance(adapter.manifest, Mapping):
        path = getattr(adapter, "path", None)
        return dict(adapter.manifest), str(path) if path is not None else None
    if not isinstance(adapter, (str, os.PathLike)):
        raise TypeError(
            f"adapter must be an adapter directory, a manifest.json path or a manifest dict, got {adapter!r:.60}"
        )
    path = Path(adapter)
    folder = path.parent if path.name == MANIFEST else path
    check_adapter_folder(folder, f"; give the adapter's folder (with its {MANIFEST})")
    file = folder / MANIFEST
    if not file.exists():
        return None, str(folder)
    manifest = read_json(file)
    if not isinstance(manifest, dict):
        raise ValueError(f"{file}: not a JSON object")
    return manifest, str(folder)


def _trained_specialties(manifest: Mapping, where: str) -> tuple[str, ...] | None:
    spec = manifest.get("specialty", manifest.get("filter", {}).get("specialty"))
    if spec is None or spec == "all":
        return None
    if isinstance(spec, str):
        return (spec,)
    if isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec):
        return tuple(spec)
    raise ValueError(f"{where}: field 'specialty' must be a list of names or null, got {spec!r}")


def require_qa_file(path: str | os.PathLike, what: str, note: str = "") -> None:
    """`FileNotFoundError` naming `what` (an argument or option) and `path` when `path` is no file: missing,
    or a folder; `note` ends the message."""
    if not Path(path).is_file():
        problem = "a folder, not a QA file" if Path(path).is_dir() else "no such file"
        raise FileNotFoundError(f"{what} {path}: {problem}{note}")


def _recorded_mapping(recorded: Mapping, mapping: dict | None, where: str) -> dict | None:
    """The mapping the training data file was read with (the manifest's 'data.mapping'); a `mapping` given
    that is another would read other questions from the same file, and is an error naming both."""
    kept, mapping = recorded.get("mapping") or None, mapping or None
    if mapping is not None and mapping != kept:
        raise ValueError(
            f"mapping {mapping!r} is not the one {where} records for its training data ({kept!r}): the same "
            "file read with another mapping is other questions; leave the mapping out to use the recorded one"
        )
    return kept


def _load_checked(
    train_data: Any, recorded: Mapping, where: str, mapping: dict | None = None
) -> tuple[list[QARecord], dict]:
    """The records of `train_data` (or of the manifest's data path), whose sha256 must be the recorded one,
    read with the mapping recorded beside it (`_recorded_mapping`)."""
    expected = recorded.get("sha256")
    if not isinstance(expected, str) or not expected:
        raise ValueError(f"{where}: field 'data.sha256' is missing; the training data cannot be checked")
    mapping = _recorded_mapping(recorded, mapping, where)
    from_manifest = train_data is None
    if from_manifest:
        path = recorded.get("path")
        if not path:
            raise ValueError(
                f"{where}: the adapter was trained on records passed in memory (field 'data.path' is null); "
                "pass them as train_data= (--train-data)"
            )
        train_data = path
    if isinstance(train_data, (str, os.PathLike)):
        path = Path(train_data)
        if from_manifest and not path.is_file():
            raise FileNotFoundError(
                f"{where}: field 'data.path' records the training data as {path}, "
                f"{'a folder here' if path.is_dir() else 'not found here'} (moved, or another machine?); "
                f"pass train_data= (--train-data) with that QA file (its sha256 must be {expected[:12]}...)"
            )
        train_data = path
    records, source = _read_training_data(train_data, mapping)
    if source["sha256"] != expected:
        raise ValueError(
            f"training data {source['path'] or '(records)'} has sha256 {source['sha256'][:12]}..., but {where} "
            f"records {expected[:12]}...: not the data this adapter was trained on"
        )
    return records, source


def _read_training_data(train_data: Any, mapping: dict | None) -> tuple[list[QARecord], dict]:
    """The records of a QA file (read with `mapping`) or of a list of `QARecord`s, with their source: path,
    sha256 and, for a file read with one, the mapping (as `finetune.data.load_records` records it)."""
    if isinstance(train_data, (str, os.PathLike)):
        require_qa_file(train_data, "train_data", " (the path given as train_data=)")
        source = {"path": str(train_data), "sha256": sha256_file(train_data)}
        return load_qa(train_data, mapping=mapping), source | ({"mapping": mapping} if mapping else {})
    records = list(train_data)
    if not all(isinstance(r, QARecord) for r in records):
        raise TypeError("train_data must be a QA file path or a list of QARecord")
    return records, {"path": None, "sha256": records_sha256(records)}


def training_data(
    adapter: Any,
    train_data: Any = None,
    specialty: str | Sequence[str] | None = None,
    mapping: dict | None = None,
) -> TrainingData:
    """The questions `adapter` was trained on, checked against its manifest.

    `adapter`: an adapter directory (with the manifest.json `finetune.train` wrote), a manifest.json
    path, a manifest dict, or a `TrainRun`. `train_data`: the QA file or records, when the manifest's
    path is not valid here (moved, another machine) or the run was given records; its sha256 must still
    equal the manifest's, and the number of questions the manifest's specialty filter selects must
    equal its count; a run shorter than one epoch keeps the questions its steps drew (`shown_records`).
    An adapter without a manifest needs `train_data` (then taken as given, filtered by
    `specialty` if one is named: nothing can be checked, and `source["checked"]` says so). A data file is
    read with the mapping the manifest records beside its sha256 (`mapping`, if given, must be that one),
    or, without a manifest, with `mapping`.
    """
    manifest, folder = read_adapter_manifest(adapter)
    if manifest is None:
        return _unchecked(folder, train_data, specialty, mapping)
    where = f"{folder}/{MANIFEST}" if folder else "the manifest"
    data = manifest.get("data")
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: field 'data' is missing; not a manifest written by specprobe finetune")
    records, source = _load_checked(train_data, data, where, mapping)
    specialties = _trained_specialties(manifest, where)
    if specialty is not None and _lower(normalize_specialty(specialty, specialties or ())) != _lower(specialties):
        raise ValueError(f"specialty={specialty!r}, but {where} records training on {list(specialties or ['all'])}")
    chosen = select(records, specialties, where)
    expected_n = manifest.get("filter", {}).get("n_examples")
    if isinstance(expected_n, int) and expected_n != len(chosen):
        raise ValueError(
            f"{where}: field 'filter.n_examples' is {expected_n}, but the filter {list(specialties or ['all'])} "
            f"selects {len(chosen)} questions from {source['path'] or 'the records'}"
        )
    cuts = truncated_cuts(manifest, chosen, where)
    shown = shown_records(list(enumerate(chosen)), manifest, where)
    source = {**source, "checked": True, "n_selected": len(chosen), "n_shown": len(shown)}
    target_text = (manifest.get("prompt") or {}).get("continuation") == "text"
    texts = tuple(kept_text(r, cuts.get(i, []), answer_shown=target_text) for i, r in shown)
    return _made([r for _, r in shown], specialties, source, folder, where, texts)


def truncated_cuts(manifest: Mapping, chosen: Sequence[QARecord], where: str) -> dict[int, list]:
    """Question index -> the [start, end) character ranges of its context text that its training prompt,
    cut to max_length from the left, did not hold (the manifest's 'filter.truncated_questions'). An older
    manifest that counts truncated prompts without saying where gives none, with a warning."""
    recorded = manifest.get("filter", {}).get("truncated_questions")
    if recorded is None:
        if n := manifest.get("filter", {}).get("truncated_prompts"):
            log.warning(
                "%s: %s training prompts were cut to max_length, and this manifest does not record where "
                "(written by an older specprobe): the terms of their cut-off text count as seen",
                where,
                n,
            )
        return {}
    cuts = {}
    for entry in recorded if isinstance(recorded, list) else [recorded]:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(chosen) or chosen[index].id != entry.get("id"):
            raise ValueError(f"{where}: field 'filter.truncated_questions' names no selected question: {entry!r:.80}")
        cuts[index] = entry.get("context_cut") or []
    return cuts


def kept_text(record: QARecord, cut: Sequence[Sequence[int]], *, answer_shown: bool = False) -> str:
    """`record.context_text()` with the character ranges `cut` blanked out (spaces: no term matches across them).
    `answer_shown` (a run trained with continuation "text"): the correct option's text is kept whatever the
    prompt lost, since training's target, never cut, was that text."""
    text = record.context_text()
    keep = _answer_span(record) if answer_shown else None
    for start, end in cut:
        pieces = [(start, end)] if keep is None else [(start, min(end, keep[0])), (max(start, keep[1]), end)]
        for a, b in pieces:
            if b > a:
                text = text[:a] + " " * (b - a) + text[b:]
    return text


def _answer_span(record: QARecord) -> tuple[int, int]:
    """[start, end) of the correct option's text in `record.context_text()` (the first copy: the trained one)."""
    i = record.answer_index
    end = len(replace(record, options=record.options[: i + 1]).context_text())
    return end - len(record.options[i]), end


def shown_records(chosen: list[T], manifest: Mapping, where: str) -> list[T]:
    """The selected questions the run's optimizer steps drew: all after a full epoch; after fewer steps
    (`max_steps` below one epoch) only those of its first `steps` steps, in the run's seeded order. A
    manifest without the step fields (older runs) gives all of them."""
    fields = [manifest.get(k) for k in ("steps", "examples_per_step", "steps_per_epoch", "seed")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        return chosen
    steps, per_step, per_epoch, seed = (int(v) for v in fields)  # pyright: ignore[reportArgumentType]
    if per_step < 1 or per_epoch != math.ceil(len(chosen) / per_step):
        raise ValueError(
            f"{where}: field 'steps_per_epoch' is {per_epoch}, but {len(chosen)} questions at "
            f"'examples_per_step' {per_step} make {math.ceil(len(chosen) / max(per_step, 1))}"
        )
    if steps >= per_epoch:
        return chosen
    drawn = {i for k in range(steps) for i in group_indices(len(chosen), seed, 0, k, per_step)}
    return [r for i, r in enumerate(chosen) if i in drawn]


def _lower(names: Sequence[str] | None) -> list[str] | None:
    return sorted(n.lower() for n in names) if names else None


def _unchecked(
    folder: str | None, train_data: Any, specialty: str | Sequence[str] | None, mapping: dict | None = None
) -> TrainingData:
    """An adapter without a manifest: the training data must be given (a file read with `mapping`), and is
    taken as given."""
    if train_data is None:
        raise FileNotFoundError(
            f"{folder}/{MANIFEST}: no manifest (the adapter was not trained by specprobe, or is unfinished), so "
            "its training data cannot be known; pass train_data= (--train-data) with the questions it was trained on"
        )
    if mapping and not isinstance(train_data, (str, os.PathLike)):
        raise ValueError("mapping= says how to read a QA file; the train_data given are records, already read")
    records, source = _read_training_data(train_data, mapping)
    names = normalize_specialty(specialty, known=specialty_counts(records))
    specialties = tuple(names) if names else None
    chosen = select(records, specialties, str(source["path"] or "train_data"))
    if specialties is None:  # all given records: they were trained on the specialties they have
        specialties = tuple(sorted({s for r in records for s in r.specialties})) or None
    return _made(chosen, specialties, {**source, "checked": False}, folder, str(source["path"] or "train_data"))


def _made(
    chosen: list[QARecord],
    specialties: tuple[str, ...] | None,
    source: dict,
    folder: str | None,
    where: str,
    texts: tuple[str, ...] = (),
) -> TrainingData:
    if not chosen:
        raise ValueError(f"{where}: the specialty filter {list(specialties or ['all'])} selects no question")
    name = ", ".join(specialties) if specialties else "all specialties"
    return TrainingData(tuple(chosen), specialties, source, folder, adapter_weights_sha256(folder), name, texts)


def training_texts(adapter: str) -> frozenset[str] | None:
    """The texts (question and lettered options, as the probe reads them) of the questions the adapter's
    run drew, from its manifest and checked as `training_data` checks them; None where that is not known
    here (no manifest, the data moved or changed)."""
    try:
        data = training_data(adapter)
    except (OSError, ValueError, TypeError):
        return None
    return frozenset(r.as_text_record().text for r in data.records)
