"""The `Lexicon`: term -> specialties with both signals, counts and question ids, in a versioned JSON file.

File layout (``schema_version`` 1)::

    {"schema": "specprobe.terms.lexicon", "schema_version": 1,
     "meta": {"created", "backend", "sources": [{"path", "sha256", "format", "n_records", "n_skipped"}],
              "rule": {...AssignmentRule...}, "specialties": [...], "totals": {specialty: mentions},
              "questions_per_specialty": {...}, "specialty_map": {"path", "sha256"}, "versions": {...}},
     "terms": {term: {"canonical", "concept_ids", "sources", "surfaces": {surface: n}, "count",
                      "counts": {specialty: n}, "questions": [ids], "ontology": [...],
                      "ontology_evidence": [...], "z": {specialty: z}, "specialties": [...],
                      "specific": bool}}}

A term key is the commonest lower-cased surface form of its normalised form, so it occurs in the texts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .datasets import TextRecord
from .specialties import AssignmentRule, combine, log_odds_z

SCHEMA = "specprobe.terms.lexicon"
SCHEMA_VERSION = 1


@dataclass
class TermEntry:
    """One lexicon term (see the module docstring for the fields)."""

    term: str
    canonical: str = ""
    concept_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    surfaces: dict[str, int] = field(default_factory=dict)
    count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)
    ontology: list[str] = field(default_factory=list)
    ontology_evidence: list[str] = field(default_factory=list)
    z: dict[str, float] = field(default_factory=dict)
    specialties: list[str] = field(default_factory=list)
    specific: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("term")
        d["z"] = {k: round(v, 4) for k, v in self.z.items()}
        return d

    @classmethod
    def from_dict(cls, term: str, d: Mapping) -> "TermEntry":
        known = cls.__dataclass_fields__
        return cls(term=term, **{k: v for k, v in d.items() if k in known and k != "term"})

    def top_z(self) -> float:
        return max(self.z.values(), default=0.0)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Lexicon:
    """Specialty term lexicon. Build one with `specprobe.terms.build.build_lexicon` or `Lexicon.load`."""

    def __init__(self, terms: Mapping[str, TermEntry], meta: Mapping | None = None) -> None:
        self.terms: dict[str, TermEntry] = dict(terms)
        self.meta: dict = dict(meta or {})

    # ------------------------------------------------------------------------------ the probe contract
    def term_specialties(self) -> dict[str, tuple[str, ...]]:
        """The kept terms (specific ones) and their specialties: the lexicon's decision."""
        return {t: tuple(e.specialties) for t, e in self.terms.items() if e.specific}

    def contexts(self) -> list[TextRecord]:
        """Reload the source data files recorded in the metadata and return their probed texts.

        Raises FileNotFoundError naming the path if a file is gone, ValueError if its sha256 changed."""
        from .datasets import load_qa

        out: list[TextRecord] = []
        for src in self.meta.get("sources", []):
            path = Path(src["path"])
            if not path.exists():
                raise FileNotFoundError(f"the lexicon's source data file is gone: {path}")
            digest = sha256_file(path)
            if src.get("sha256") and digest != src["sha256"]:
                raise ValueError(f"the lexicon's source data file changed since the build: {path} "
                                 f"(sha256 {digest[:12]}..., recorded {src['sha256'][:12]}...); rebuild the lexicon")
            records = load_qa(path, format=src.get("format", "auto"), mapping=src.get("mapping"),
                              skip_bad=bool(src.get("n_skipped")))
            out += [r.as_text_record() for r in records]
        return out

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: str) -> bool:
        return term in self.terms

    def __getitem__(self, term: str) -> TermEntry:
        return self.terms[term]

    @property
    def specialties(self) -> list[str]:
        return list(self.meta.get("specialties") or sorted({s for e in self.terms.values() for s in e.specialties}))

    @property
    def rule(self) -> AssignmentRule:
        return AssignmentRule.from_dict(self.meta.get("rule", {}))

    def for_specialty(self, specialty: str, specific_only: bool = True) -> list[TermEntry]:
        """Terms assigned to `specialty`, strongest corpus signal first."""
        if self.specialties and specialty not in self.specialties:
            raise ValueError(f"unknown specialty {specialty!r}; known: {', '.join(self.specialties)}")
        hits = [e for e in self.terms.values() if specialty in e.specialties and (e.specific or not specific_only)]
        return sorted(hits, key=lambda e: (-e.z.get(specialty, 0.0), -e.count, e.term))

    def stats(self) -> dict:
        """Sizes: terms, specific terms, and specific terms per specialty."""
        per = {s: 0 for s in self.specialties}
        for e in self.terms.values():
            if e.specific:
                for s in e.specialties:
                    per[s] = per.get(s, 0) + 1
        return {"terms": len(self.terms), "specific_terms": sum(e.specific for e in self.terms.values()),
                "assigned_terms": sum(bool(e.specialties) for e in self.terms.values()),
                "specific_per_specialty": per}

    def to_pandas(self):
        """One row per term: term, canonical, count, specialties (';'-joined), specific, ontology, the top
        corpus specialty and z, concept ids, and one `count:<specialty>` and `z:<specialty>` column each."""
        import pandas as pd

        rows = []
        for e in self.terms.values():
            top = max(e.z, key=e.z.get) if e.z else ""
            row = {"term": e.term, "canonical": e.canonical, "count": e.count,
                   "specialties": ";".join(e.specialties), "specific": e.specific,
                   "ontology": ";".join(e.ontology), "corpus_top": top, "corpus_top_z": e.z.get(top, 0.0),
                   "concept_ids": ";".join(e.concept_ids), "n_questions": len(e.questions)}
            for s in self.specialties:
                row[f"count:{s}"] = e.counts.get(s, 0)
            for s in self.specialties:
                row[f"z:{s}"] = e.z.get(s, 0.0)
            rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------------------ transformations
    def filter(self, *, min_count: int | None = None, specialties: Iterable[str] | None = None,
               specific_only: bool = False, predicate: Callable[[TermEntry], bool] | None = None) -> "Lexicon":
        """A new lexicon with the terms that pass every given condition (signals are not recomputed)."""
        wanted = set(specialties) if specialties is not None else None
        keep = {}
        for t, e in self.terms.items():
            if min_count is not None and e.count < min_count:
                continue
            if wanted is not None and not wanted.intersection(e.specialties):
                continue
            if specific_only and not e.specific:
                continue
            if predicate is not None and not predicate(e):
                continue
            keep[t] = e
        meta = dict(self.meta)
        meta["filtered"] = list(meta.get("filtered", [])) + [{"min_count": min_count, "specialties": sorted(wanted) if wanted else None, "specific_only": specific_only, "predicate": bool(predicate)}]
        return Lexicon(keep, meta)

    def reassign(self, rule: AssignmentRule | None = None) -> "Lexicon":
        """Recompute the corpus z-scores from the stored counts and re-apply `rule` (default: the stored one)."""
        rule = rule or self.rule
        specs = self.specialties
        z = log_odds_z({t: e.counts for t, e in self.terms.items()}, specs, rule.prior_strength)
        terms = {}
        for t, e in self.terms.items():
            chosen, specific = combine(e.ontology, z[t], e.counts, rule)
            terms[t] = replace(e, z=z[t], specialties=list(chosen), specific=specific)
        meta = dict(self.meta, rule=rule.to_dict())
        return Lexicon(terms, meta)

    def merge(self, other: "Lexicon") -> "Lexicon":
        """Pool two lexicons (e.g. two data splits): counts, surfaces, questions and ontology evidence are
        united, then the corpus signal is recomputed on the pooled counts with this lexicon's rule."""
        terms = {t: replace(e, counts=dict(e.counts), surfaces=dict(e.surfaces), questions=list(e.questions),
                            concept_ids=list(e.concept_ids), ontology=list(e.ontology),
                            ontology_evidence=list(e.ontology_evidence), sources=list(e.sources))
                 for t, e in self.terms.items()}
        for t, o in other.terms.items():
            if t not in terms:
                terms[t] = replace(o, counts=dict(o.counts), surfaces=dict(o.surfaces), questions=list(o.questions))
                continue
            e = terms[t]
            e.count += o.count
            for s, n in o.counts.items():
                e.counts[s] = e.counts.get(s, 0) + n
            for s, n in o.surfaces.items():
                e.surfaces[s] = e.surfaces.get(s, 0) + n
            e.questions = list(dict.fromkeys(e.questions + o.questions))
            e.concept_ids = list(dict.fromkeys(e.concept_ids + o.concept_ids))
            e.sources = list(dict.fromkeys(e.sources + o.sources))
            e.ontology = list(dict.fromkeys(e.ontology + o.ontology))
            e.ontology_evidence = list(dict.fromkeys(e.ontology_evidence + o.ontology_evidence))
        meta = dict(self.meta)
        meta["sources"] = list(self.meta.get("sources", [])) + list(other.meta.get("sources", []))
        meta["specialties"] = list(dict.fromkeys(self.specialties + other.specialties))
        totals = dict(self.meta.get("totals", {}))
        for s, n in other.meta.get("totals", {}).items():
            totals[s] = totals.get(s, 0) + n
        meta["totals"] = totals
        return Lexicon(terms, meta).reassign()

    # ------------------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "meta": self.meta,
                "terms": {t: e.to_dict() for t, e in self.terms.items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the lexicon as JSON atomically (a temporary file in the same folder, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, ensure_ascii=False, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"lexicon file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a lexicon (invalid JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not a specprobe lexicon (missing schema {SCHEMA!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: lexicon schema version {version} is not supported (expected {SCHEMA_VERSION})")
        terms = {t: TermEntry.from_dict(t, d) for t, d in data.get("terms", {}).items()}
        return cls(terms, data.get("meta", {}))

    def __repr__(self) -> str:
        s = self.stats()
        return f"Lexicon({s['terms']} terms, {s['specific_terms']} specific)"
