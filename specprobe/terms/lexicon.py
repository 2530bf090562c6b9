"""The `Lexicon`: term -> specialties with both signals, counts and question ids, in a versioned JSON file.

File layout (``schema_version`` 1)::

    {"schema": "specprobe.terms.lexicon", "schema_version": 1,
     "meta": {"created", "backend", "sources": [{"path", "sha256", "format", "n_records", "n_skipped"}],
              "rule": {...AssignmentRule...}, "specialties": [...], "totals": {specialty: mentions},
              "questions_per_specialty": {...}, "specialty_map": {"path", "sha256"}, "versions": {...}},
     "terms": {term: {"canonical", "concept_ids", "sources", "surfaces": {surface: n}, "count",
                      "counts": {specialty: n}, "questions": [ids], "ontology": [...],
                      "ontology_evidence": [...], "z": {specialty: z}, "specialties": [...],
                      "specific": bool, "key": normalised form}}}

A term key is the commonest lower-cased surface form of its normalised form, so it occurs in the texts.
`Lexicon.load` checks every field's type and refuses a malformed file with a `DataError` naming the
file, the term and the field. Every specprobe version writes every field; a term entry must have the
fields the lexicon decides and counts with (`REQUIRED_FIELDS`: a missing one is an error, never a default),
while the descriptive ones (canonical, concept_ids, sources, surfaces, ontology_evidence) default to empty.
`meta.rule`, where present, must have every `AssignmentRule` field; `reassign` and `merge` refuse a lexicon
without `meta.rule` (unless given a rule) or `meta.specialties` rather than assume defaults.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from specprobe.utils.io import atomic_write_bytes, atomic_write_text, read_bytes, sha256_file

from .records import LEXICON_SCHEMA, DataError, TextRecord, decode_text, unique_ids
from .specialties import AssignmentRule, combine, log_odds_z

log = logging.getLogger(__name__)
__all__ = ["REQUIRED_FIELDS", "SCHEMA", "SCHEMA_VERSION", "Lexicon", "TermEntry", "sha256_file"]

SCHEMA = LEXICON_SCHEMA
SCHEMA_VERSION = 1
#: the term fields a lexicon file must have: its decision (specialties, specific), what `reassign` and
#: `merge` recompute it from (counts, ontology), and what `filter`, `for_specialty` and the tables read
#: (count, z, questions); a default there would silently drop or misrank the term
REQUIRED_FIELDS = ("count", "counts", "questions", "ontology", "z", "specialties", "specific")


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
    # the extractor's normalised form, by which mentions were counted (the display name `term` is its
    # commonest surface, which two halves of one corpus may pick differently: `merge` joins on this)
    key: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("term")
        d["z"] = {k: round(v, 4) for k, v in self.z.items()}
        return d

    @classmethod
    def from_dict(cls, term: str, d: Mapping, where: str = "lexicon") -> TermEntry:
        """An entry from its JSON object; every known field is type-checked (unknown ones are ignored),
        and a bad or missing required one (`REQUIRED_FIELDS`) raises `DataError` naming `where` (the
        file), the term and the field."""
        if not isinstance(term, str) or not term.strip():
            raise DataError(f"{where}: field 'terms': empty term key {term!r}")
        if not isinstance(d, Mapping):
            raise DataError(f"{where}: term {term!r}: expected an object, got {type(d).__name__}")
        known = cls.__dataclass_fields__
        values = {}
        for k, v in d.items():
            if k in known and k != "term":
                problem = _FIELD_CHECKS[k](v)
                if problem:
                    raise DataError(f"{where}: term {term!r}: field {k!r} must be {problem}, got {v!r:.60}")
                values[k] = v
        missing = [k for k in REQUIRED_FIELDS if k not in values]
        if missing:
            raise DataError(
                f"{where}: term {term!r}: missing field {missing[0]!r}"
                + (f" (and {', '.join(map(repr, missing[1:]))})" if missing[1:] else "")
                + "; the file is damaged or was edited by hand: rebuild it with `specprobe terms build`"
            )
        return cls(term=term, **values)

    def top_z(self) -> float:
        return max(self.z.values(), default=0.0)


def _pooled_name(entry: TermEntry, other: str) -> str:
    """Of a merged term's two names (its own, `other`'s), the one its pooled surfaces write more often
    (case aside; ties: the shorter, then the first alphabetically, as a build names a term)."""

    def uses(name: str) -> int:
        return sum(n for s, n in entry.surfaces.items() if s == name or s.lower() == name)

    return min((entry.term, other), key=lambda name: (-uses(name), len(name), name))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(ok: Callable[[Any], bool], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if ok(v) else what


_STRINGS = _check(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
_COUNTS = _check(
    lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_int(n) and n >= 0 for k, n in v.items()),
    "an object of string -> non-negative integer",
)
_FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "canonical": _check(lambda v: isinstance(v, str), "a string"),
    "concept_ids": _STRINGS,
    "sources": _STRINGS,
    "surfaces": _COUNTS,
    "count": _check(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "counts": _COUNTS,
    "questions": _STRINGS,
    "ontology": _STRINGS,
    "ontology_evidence": _STRINGS,
    "z": _check(
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items()),
        "an object of string -> number",
    ),
    "specialties": _STRINGS,
    "specific": _check(lambda v: isinstance(v, bool), "true or false"),
    "key": _check(lambda v: isinstance(v, str), "a string"),
}


class Lexicon:
    """Specialty term lexicon. Build one with `specprobe.terms.build.build_lexicon` or `Lexicon.load`."""

    #: the notebook view's key (`specprobe.reports.views`)
    kind = "lexicon"

    def __init__(self, terms: Mapping[str, TermEntry], meta: Mapping | None = None) -> None:
        if not isinstance(terms, Mapping):  # a DataFrame iterates its column names: refuse, don't guess
            raise TypeError(
                f"Lexicon(terms=...) needs a mapping term -> TermEntry, got {type(terms).__name__}; "
                "load a saved lexicon with Lexicon.load, or build one with build_lexicon"
            )
        for t, e in terms.items():
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"Lexicon: empty or non-string term key {t!r}")
            if not isinstance(e, TermEntry):
                raise TypeError(f"Lexicon: term {t!r} must map to a TermEntry, got {type(e).__name__}")
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"Lexicon(meta=...) must be a mapping, got {type(meta).__name__}")
        self.terms: dict[str, TermEntry] = dict(terms)
        self.meta: dict = dict(meta or {})
        #: the file it was loaded from (`load`), named by errors about its fields
        self.path: Path | None = None

    # ------------------------------------------------------------------------------ the probe contract
    def term_specialties(self) -> dict[str, tuple[str, ...]]:
        """The kept terms (specific ones) and their specialties: the lexicon's decision."""
        return {t: tuple(e.specialties) for t, e in self.terms.items() if e.specific}

    def contexts(self) -> list[TextRecord]:
        """Reload the source data files recorded in the metadata and return their probed texts.

        Raises FileNotFoundError naming the path if a file is gone, ValueError if its sha256 changed.
        Text ids are unique: a source listed twice (a lexicon merged with itself) is read once, an exact
        repeat of a record is dropped, and a different text under a used id is renamed "<id>#2" (with a
        warning), so that no two texts are ever taken for one. A lexicon that records no data file (made
        in Python, or its `meta.sources` emptied) raises ValueError: it has no texts of its own to give."""
        from .datasets import load_qa

        out: list[TextRecord] = []
        read: set[tuple[str, str]] = set()
        for src in self.data_sources():
            path = Path(src["path"])
            if not path.exists():
                raise FileNotFoundError(f"the lexicon's source data file is gone: {path}")
            digest = sha256_file(path)
            if src.get("sha256") and digest != src["sha256"]:
                raise ValueError(
                    f"the lexicon's source data file changed since the build: {path} "
                    f"(sha256 {digest[:12]}..., recorded {src['sha256'][:12]}...); rebuild the lexicon"
                )
            key = (str(path.resolve()), digest)
            if key in read:
                log.warning("the lexicon lists the source data file %s more than once; reading it once", path)
                continue
            read.add(key)
            records = load_qa(
                path, format=src.get("format", "auto"), mapping=src.get("mapping"), skip_bad=bool(src.get("n_skipped"))
            )
            out += [r.as_text_record() for r in records]
        return unique_ids(out, "the lexicon's contexts")

    def data_sources(self) -> list[dict]:
        """The data files recorded in `meta.sources`, which `contexts` reads; ValueError when there are none,
        so a probe asks for its texts before it loads a model instead of finding no term in no text."""
        sources = list(self.meta.get("sources") or [])
        if not sources:
            raise ValueError(
                f"{self._where()} records no data file, so it has no texts of its own to probe; pass the texts: "
                "--data FILE on the command line, texts=... in Python"
            )
        return sources

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: str) -> bool:
        return term in self.terms

    def __getitem__(self, term: str) -> TermEntry:
        return self.terms[term]

    @property
    def specialties(self) -> list[str]:
        """The data's specialties (`meta.specialties`), else those its terms are assigned (for display)."""
        return list(self.meta.get("specialties") or sorted({s for e in self.terms.values() for s in e.specialties}))

    @property
    def rule(self) -> AssignmentRule:
        """The rule the terms were assigned with (`meta.rule`); a lexicon without one raises `DataError`
        rather than assume the defaults."""
        if "rule" not in self.meta:
            raise DataError(
                f"{self._where()}: field 'meta.rule' is missing, so the rule its terms were assigned with is "
                "unknown; pass one: lexicon.reassign(rule=AssignmentRule(...))"
            )
        return AssignmentRule.from_dict(self.meta["rule"])

    def _recorded_specialties(self) -> list[str]:
        """`meta.specialties`, which the corpus z-scores are computed over: the ones assigned to terms leave
        out a specialty whose texts gave no term and so change every z-score."""
        if "specialties" not in self.meta:
            raise DataError(
                f"{self._where()}: field 'meta.specialties' is missing, and the corpus z-scores need every "
                "specialty of the data; set lexicon.meta['specialties'] or rebuild with `specprobe terms build`"
            )
        return list(self.meta["specialties"])

    def _where(self) -> str:
        return f"lexicon {self.path}" if self.path is not None else "this lexicon"

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
        return {
            "terms": len(self.terms),
            "specific_terms": sum(e.specific for e in self.terms.values()),
            "assigned_terms": sum(bool(e.specialties) for e in self.terms.values()),
            "specific_per_specialty": per,
        }

    def to_pandas(self):
        """One row per term: term, canonical, count, specialties (';'-joined), specific, ontology, the top
        corpus specialty and z, concept ids, and one `count:<specialty>` and `z:<specialty>` column each."""
        import pandas as pd

        rows = []
        for e in self.terms.values():
            top = max(e.z, key=lambda s, z=e.z: z[s]) if e.z else ""
            row = {
                "term": e.term,
                "canonical": e.canonical,
                "count": e.count,
                "specialties": ";".join(e.specialties),
                "specific": e.specific,
                "ontology": ";".join(e.ontology),
                "corpus_top": top,
                "corpus_top_z": e.z.get(top, 0.0),
                "concept_ids": ";".join(e.concept_ids),
                "n_questions": len(e.questions),
            }
            for s in self.specialties:
                row[f"count:{s}"] = e.counts.get(s, 0)
            for s in self.specialties:
                row[f"z:{s}"] = e.z.get(s, 0.0)
            rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------------------ display
    def chart(self):
        """Specific terms per specialty as an altair bar chart, to restyle or save."""
        from specprobe.reports.notebook import main_chart  # lazy: reports sit above terms (declared in pyproject)

        return main_chart(self)

    def _repr_html_(self) -> str:
        """Notebook display: terms per specialty (table with the top terms, and the chart as inline SVG)."""
        from specprobe.reports.notebook import repr_html

        return repr_html(self)

    # ------------------------------------------------------------------------------ transformations
    def filter(
        self,
        *,
        min_count: int | None = None,
        specialties: Iterable[str] | None = None,
        specific_only: bool = False,
        predicate: Callable[[TermEntry], bool] | None = None,
    ) -> Lexicon:
        """A new lexicon with the terms that pass every given condition (signals are not recomputed)."""
        if isinstance(specialties, str):  # one specialty, not its letters
            specialties = [specialties]
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
        meta["filtered"] = list(meta.get("filtered", [])) + [
            {
                "min_count": min_count,
                "specialties": sorted(wanted) if wanted else None,
                "specific_only": specific_only,
                "predicate": bool(predicate),
            }
        ]
        return Lexicon(keep, meta)

    def reassign(self, rule: AssignmentRule | None = None) -> Lexicon:
        """Recompute the corpus z-scores from the stored counts and re-apply `rule` (default: the stored one)."""
        specs = self._recorded_specialties()
        rule = rule or self.rule
        # the build's per-specialty totals: the kept terms alone (after a filter) are not the corpus
        totals = self.meta.get("totals") or None
        z = log_odds_z({t: e.counts for t, e in self.terms.items()}, specs, rule.prior_strength, totals)
        terms = {}
        for t, e in self.terms.items():
            chosen, specific = combine(e.ontology, z[t], e.counts, rule, total=e.count)
            terms[t] = replace(e, z=z[t], specialties=list(chosen), specific=specific)
        meta = dict(self.meta, rule=rule.to_dict())
        return Lexicon(terms, meta)

    def merge(self, other: Lexicon) -> Lexicon:
        """Pool two lexicons (e.g. two data splits): counts, surfaces, questions and ontology evidence are
        united, then the corpus signal is recomputed on the pooled counts with this lexicon's rule.

        Refused (ValueError) where both were built from the same data file (same sha256: its terms would
        be counted twice) or by different extraction backends (their term keys and counts differ)."""
        _check_mergeable(self.meta, other.meta)
        specialties = list(dict.fromkeys(self._recorded_specialties() + other._recorded_specialties()))
        rule = self.rule  # a lexicon without its rule is refused before any work
        terms = {
            t: replace(
                e,
                counts=dict(e.counts),
                surfaces=dict(e.surfaces),
                questions=list(e.questions),
                concept_ids=list(e.concept_ids),
                ontology=list(e.ontology),
                ontology_evidence=list(e.ontology_evidence),
                sources=list(e.sources),
            )
            for t, e in self.terms.items()
        }
        by_key = {e.key or t: t for t, e in terms.items()}  # one term, whatever surface each half named it by
        renamed: dict[str, str] = {}
        for t, o in other.terms.items():
            mine = by_key.get(o.key or t)
            if mine is None:
                terms[t] = replace(o, counts=dict(o.counts), surfaces=dict(o.surfaces), questions=list(o.questions))
                by_key[o.key or t] = t
                continue
            e = terms[mine]
            if o.term != e.term:
                renamed[mine] = o.term
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
        for mine, theirs in renamed.items():  # the pooled commonest surface names it, as a build on both would
            name = _pooled_name(terms[mine], theirs)
            if name != mine and name not in terms:
                terms = {name if t == mine else t: replace(e, term=name) if t == mine else e for t, e in terms.items()}
        meta = dict(self.meta)
        meta["sources"] = list(self.meta.get("sources", [])) + list(other.meta.get("sources", []))
        meta["specialties"] = specialties
        totals = dict(self.meta.get("totals", {}))
        for s, n in other.meta.get("totals", {}).items():
            totals[s] = totals.get(s, 0) + n
        meta["totals"] = totals
        questions = dict(self.meta.get("questions_per_specialty", {}))
        for s, n in other.meta.get("questions_per_specialty", {}).items():
            questions[s] = questions.get(s, 0) + n
        meta["questions_per_specialty"] = questions
        return Lexicon(terms, meta).reassign(rule)

    # ------------------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "terms": {t: e.to_dict() for t, e in self.terms.items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the lexicon as JSON atomically (a temporary file in the same folder, then a rename);
        a name ending in `.gz` is gzipped."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        if str(path).endswith(".gz"):
            return atomic_write_bytes(path, gzip.compress(text.encode("utf-8"), mtime=0))
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Lexicon:
        """Read a lexicon file, checking its schema and every field (see the module docstring); a
        malformed file raises `DataError` (a ValueError) naming the file, the term and the field."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"lexicon file not found: {path}")
        try:
            data = json.loads(_read_lexicon_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not a lexicon (invalid JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            hint = "; a JSON list is QA data: build a lexicon from it with `specprobe terms build`"
            raise DataError(
                f"{path}: not a specprobe lexicon (missing schema {SCHEMA!r}){hint if isinstance(data, list) else ''}"
            )
        version = data.get("schema_version")
        if not _is_int(version) or version != SCHEMA_VERSION:
            raise DataError(f"{path}: lexicon schema version {version} is not supported (expected {SCHEMA_VERSION})")
        raw_terms, meta = data.get("terms", {}), data.get("meta", {})
        if not isinstance(raw_terms, dict):
            raise DataError(f"{path}: field 'terms' must be an object term -> entry, got {type(raw_terms).__name__}")
        if not isinstance(meta, dict):
            raise DataError(f"{path}: field 'meta' must be an object, got {type(meta).__name__}")
        _check_meta(meta, path)
        terms = {t: TermEntry.from_dict(t, d, where=str(path)) for t, d in raw_terms.items()}
        lexicon = cls(terms, meta)
        lexicon.path = path
        return lexicon

    def __repr__(self) -> str:
        s = self.stats()
        return f"Lexicon({s['terms']} terms, {s['specific_terms']} specific)"


def _check_mergeable(meta: Mapping, other: Mapping) -> None:
    """Refuse a merge that would count one data file twice or pool two extractors' counts."""
    digests = {src.get("sha256"): src.get("path") for src in meta.get("sources", []) if src.get("sha256")}
    for src in other.get("sources", []):
        if src.get("sha256") in digests:
            raise ValueError(
                f"both lexicons were built from the same data ({src.get('path')}, sha256 {src['sha256'][:12]}...): "
                "merging would count its terms twice"
            )
    backends = (meta.get("backend"), other.get("backend"))
    if all(backends) and backends[0] != backends[1]:
        raise ValueError(
            f"the lexicons were built by different backends ({backends[0]} and {backends[1]}): their terms and "
            "counts are not comparable; build both with one backend"
        )


def _check_meta(meta: dict, path: Path) -> None:
    """The metadata fields the lexicon reads back (sources, specialties, rule) have the right types."""
    sources = meta.get("sources", [])
    if not isinstance(sources, list):
        raise DataError(f"{path}: field 'meta.sources' must be a list, got {type(sources).__name__}")
    for i, src in enumerate(sources):
        if not isinstance(src, dict) or not isinstance(src.get("path"), str) or not src["path"]:
            raise DataError(f"{path}: field 'meta.sources[{i}]' must be an object with a 'path' string")
        if src.get("sha256") is not None and not isinstance(src["sha256"], str):
            raise DataError(f"{path}: field 'meta.sources[{i}].sha256' must be a string")
    specs = meta.get("specialties", [])
    if not (isinstance(specs, list) and all(isinstance(s, str) for s in specs)):
        raise DataError(f"{path}: field 'meta.specialties' must be a list of strings, got {specs!r:.60}")
    if "rule" in meta:
        _check_rule(meta["rule"], path)
    if not isinstance(meta.get("totals", {}), dict):
        raise DataError(f"{path}: field 'meta.totals' must be an object")


_RULE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "z_min": (_is_number, "a number"),
    "min_specialty_count": (_is_int, "an integer"),
    "max_specialties": (_is_int, "an integer"),
    "min_count": (_is_int, "an integer"),
    "prior_strength": (_is_number, "a number"),
    "use_ontology": (lambda v: isinstance(v, bool), "true or false"),
    "use_corpus": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_rule(rule: Any, path: Path) -> None:
    """`meta.rule` has every field of `AssignmentRule` (every version writes them all), each of its type and
    value, and no other: a default or a string "false" would silently reassign with another rule."""
    if not isinstance(rule, dict):
        raise DataError(f"{path}: field 'meta.rule' must be an object")
    for key in rule:
        if key not in _RULE_TYPES:
            raise DataError(
                f"{path}: field 'meta.rule.{key}' is unknown; the rule's fields are {', '.join(_RULE_TYPES)}"
            )
    for key, (ok, what) in _RULE_TYPES.items():
        if key not in rule:
            raise DataError(f"{path}: field 'meta.rule.{key}' is missing; rebuild with `specprobe terms build`")
        if not ok(rule[key]):
            raise DataError(f"{path}: field 'meta.rule.{key}' must be {what}, got {rule[key]!r:.60}")
    try:
        AssignmentRule.from_dict(rule)
    except ValueError as exc:
        raise DataError(f"{path}: field 'meta.rule': {exc}") from exc


def _read_lexicon_text(path: Path) -> str:
    """The file's JSON text, gunzipped when it is gzip; damage is a `DataError` naming the file."""
    raw = read_bytes(path)  # a folder: an error naming it and its files
    if raw[:2] != b"\x1f\x8b":
        return decode_text(raw, path)
    try:
        raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file ({exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start} of the decompressed data") from exc
