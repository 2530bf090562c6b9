"""Selecting QA records by specialty: one rule for training, evaluation and the analyses that ask which
questions a run trained on (case-insensitive names, comma lists, "all", and "(none)" for a question
without a specialty)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence

from specprobe.terms.records import DataError, QARecord

__all__ = [
    "ALL",
    "NO_SPECIALTY",
    "data_specialties",
    "normalize_specialty",
    "select",
    "specialties_of",
    "specialty_counts",
]

ALL = "all"
NO_SPECIALTY = "(none)"


def specialties_of(specialties: Sequence[str] | None) -> tuple[str, ...]:
    """The specialties a question counts towards: its own, each once (a file may list one twice, and
    the question must not count twice in its n), or (NO_SPECIALTY,) when it has none."""
    return tuple(dict.fromkeys(specialties)) if specialties else (NO_SPECIALTY,)


def specialty_counts(records: Iterable[QARecord]) -> Counter:
    counts: Counter = Counter()
    for r in records:
        for s in specialties_of(r.specialties):
            counts[s] += 1
    return counts


def normalize_specialty(specialty: str | Sequence[str] | None, known: Collection[str] = ()) -> list[str] | None:
    """None (all), or a sorted list of distinct names; "all" means all. A comma list is accepted, but a
    name that is one of the `known` specialties (case-insensitively), commas and all, stays whole:
    "Obstetrics, gynecology" is that specialty, not "Obstetrics" and "gynecology"."""
    if specialty is None:
        return None
    if isinstance(specialty, str):
        specialty = [specialty]
    whole = {k.strip().lower() for k in known}
    names: list[str] = []
    for s in map(str, specialty):
        if "," in s and s.strip().lower() not in whole:
            names += [p.strip() for p in s.split(",") if p.strip()]
        else:
            names.append(s.strip())
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
    counts = specialty_counts(records)
    wanted = normalize_specialty(specialty, known=counts)
    if wanted is None:
        return None
    lower = {k.lower() for k in counts}
    missing = [w for w in wanted if w.lower() not in lower]
    if missing:
        available = ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        raise DataError(
            f"{source}: no questions for specialty {', '.join(map(repr, missing))}; available: {available or 'none'}"
        )
    asked = {w.lower() for w in wanted}
    return sorted(k for k in counts if k.lower() in asked)
