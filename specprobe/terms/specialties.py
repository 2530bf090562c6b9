"""Specialty assignment: an ontology signal, a corpus signal, and the rule that combines them.

1. Ontology signal (`SpecialtyMap`): each concept's place in ICD-10-CM (chapter > block > category), in HPO
   (`is_a` ancestors) and, for ICD codes left without a specialty, its CCSR body system, looked up in the
   editable table `specprobe/data/terms/specialty_map.csv`; keyword rules in the same table add Pediatrics
   (age and development words) and Emergency medicine (injury, poisoning, shock...) which no organ system
   identifies.
2. Corpus signal (`log_odds_z`): the log-odds ratio of a term in one specialty's questions against all the
   others, with an informative Dirichlet prior from the whole corpus (Monroe, Colaresi & Quinn 2008,
   "Fightin' Words", Political Analysis 16(4), eq. 16-22), reported as a z-score per specialty.
3. `combine`: the term's specialties are the ontology ones plus those where the corpus z-score is at least
   `z_min` with at least `min_specialty_count` occurrences; the term is *specific* when it ends up with
   between 1 and `max_specialties` (default 3, as in the S-MedQA study) specialties.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from . import ontology
from .records import read_text

SPECIALTIES: tuple[str, ...] = (
    "Cardiology",
    "Dermatology",
    "Emergency medicine",
    "Endocrinology",
    "Gastroenterology",
    "Hematology",
    "Infectious diseases",
    "Nephrology",
    "Neurology",
    "Obstetrics and gynecology",
    "Orthopedics",
    "Pediatrics",
    "Psychiatry",
    "Respiratory medicine",
    "Rheumatology",
)
MAP_SOURCES = ("icd10cm", "hpo", "ccsr", "keyword")


def default_map_path() -> Path:
    return Path(str(resources.files("specprobe") / "data" / "terms" / "specialty_map.csv"))


@dataclass(frozen=True)
class MapRow:
    source: str
    key: str
    specialties: tuple[str, ...]
    label: str = ""
    note: str = ""
    final: bool = False  # specialties cell "none": no specialty and no fallback to CCSR


class SpecialtyMap:
    """The ontology -> specialty table (`specialty_map.csv`: source, key, specialties ';'-separated, label,
    note; lines whose first cell starts with '#' are comments). For ICD-10-CM an empty specialties cell
    lets the CCSR rows decide; "none" means no specialty at all. A (source, key) has one row: a repeat
    with the same specialties is ignored, one with other specialties is an error (neither would silently
    win)."""

    def __init__(self, rows: Iterable[MapRow], path: str = "<memory>") -> None:
        self.path = path
        self._by: dict[str, dict[str, MapRow]] = {s: {} for s in MAP_SOURCES}
        self.rows = []
        for r in rows:
            first = self._by[r.source].get(r.key)
            if first is not None:
                _check_repeat(first, r, path)
                continue
            self._by[r.source][r.key] = r
            self.rows.append(r)
        self._keywords = [(re.compile(r.key, re.I), r) for r in self.rows if r.source == "keyword"]

    @classmethod
    def load(cls, path: str | Path | None = None) -> SpecialtyMap:
        path = Path(path) if path else default_map_path()
        if not path.exists():
            raise FileNotFoundError(f"specialty map not found: {path}")
        text = read_text(path)  # a BOM is accepted; invalid UTF-8 is an error naming the file
        rows = []
        lines: dict[tuple[str, str], tuple[int, MapRow]] = {}  # (source, key) -> its first line and row
        for lineno, rec in enumerate(csv.reader(io.StringIO(text)), start=1):
            if not rec or not rec[0].strip() or rec[0].startswith("#") or (lineno == 1 and rec[0] == "source"):
                continue
            if len(rec) < 3:
                raise ValueError(f"{path}: line {lineno}: expected source,key,specialties[,label,note]")
            source, key, specs = rec[0].strip(), rec[1].strip(), rec[2]
            if source not in MAP_SOURCES:
                raise ValueError(f"{path}: line {lineno}: unknown source {source!r} (one of {MAP_SOURCES})")
            final = specs.strip().lower() == "none"  # "none": no specialty, and no CCSR fallback either
            spec = () if final else tuple(s.strip() for s in specs.split(";") if s.strip())
            bad = [s for s in spec if s not in SPECIALTIES]
            if bad:
                raise ValueError(
                    f"{path}: line {lineno}: unknown specialty {bad[0]!r}; known: {', '.join(SPECIALTIES)}"
                )
            if source == "keyword":
                try:
                    re.compile(key)
                except re.error as exc:
                    raise ValueError(f"{path}: line {lineno}: bad regular expression {key!r}: {exc}") from exc
            row = MapRow(source, key, spec, *(c.strip() for c in rec[3:5]), final=final)
            if (source, key) in lines:
                first_line, first = lines[source, key]
                _check_repeat(first, row, f"{path}: line {lineno}", f" (line {first_line})")
                continue
            lines[source, key] = (lineno, row)
            rows.append(row)
        return cls(rows, str(path))

    # ------------------------------------------------------------------------------ per source
    def icd10cm(self, code: str) -> tuple[tuple[str, ...], list[str]]:
        """Specialties of an ICD-10-CM code from its most specific mapped ancestor, then CCSR if none."""
        table = self._by["icd10cm"]
        for anc in ontology.icd10cm_ancestors(code):
            if anc in table:
                row = table[anc]
                if row.specialties or row.final:
                    return row.specialties, [f"icd10cm:{anc}"] if row.specialties else []
                break
        cat = ontology.ccsr_category(code)
        if cat and cat[:3] in self._by["ccsr"]:
            row = self._by["ccsr"][cat[:3]]
            if row.specialties:
                return row.specialties, [f"ccsr:{cat}"]
        return (), []

    def hpo(self, term_id: str) -> tuple[tuple[str, ...], list[str]]:
        """Union of the specialties of the most specific mapped HPO ancestors."""
        table = self._by["hpo"]
        mapped = [a for a in ontology.hpo_ancestors(term_id) if a in table]
        nearest = [m for m in mapped if not any(o != m and m in ontology.hpo_ancestors(o) for o in mapped)]
        specs = _ordered_union(table[m].specialties for m in nearest)
        return specs, [f"hpo:{m}" for m in nearest if table[m].specialties]

    def keywords(self, term: str) -> tuple[tuple[str, ...], list[str]]:
        hits = [r for rx, r in self._keywords if rx.search(term)]
        return _ordered_union(r.specialties for r in hits), [f"keyword:{r.label}" for r in hits]

    def ontology_specialties(self, concept_ids: Sequence[str], term: str) -> tuple[tuple[str, ...], list[str]]:
        """The ontology signal of a term: the union over its concepts (ICD-10-CM, HPO) and keyword rules.
        Returns (specialties, evidence) where evidence names the table rows used."""
        specs, evidence = [], []
        for cid in concept_ids:
            if cid.startswith("ICD10CM:"):
                s, e = self.icd10cm(cid)
            elif cid.startswith("HP:"):
                s, e = self.hpo(cid)
            else:
                continue
            specs.append(s)
            evidence += e
        s, e = self.keywords(term)
        specs.append(s)
        evidence += e
        return _ordered_union(specs), list(dict.fromkeys(evidence))


def _cell(row: MapRow) -> str:
    return "none" if row.final else ";".join(row.specialties) or "(empty)"


def _check_repeat(first: MapRow, again: MapRow, where: str, first_where: str = "") -> None:
    """A repeated (source, key) row is accepted only with the first one's specialties."""
    if (again.specialties, again.final) != (first.specialties, first.final):
        raise ValueError(
            f"{where}: {again.source} key {again.key!r} is mapped again, to {_cell(again)}, but already to "
            f"{_cell(first)}{first_where}; keep one row per key"
        )


def _ordered_union(groups: Iterable[Sequence[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for g in groups for s in g))


@functools.lru_cache(maxsize=4)
def load_map(path: str | None = None) -> SpecialtyMap:
    return SpecialtyMap.load(path)


# ---------------------------------------------------------------------------------------- corpus signal


def log_odds_z(
    counts: Mapping[str, Mapping[str, int]],
    specialties: Sequence[str] | None = None,
    prior_strength: float = 1.0,
    totals: Mapping[str, int] | None = None,
) -> dict[str, dict[str, float]]:
    """z-scores of the log-odds ratio with an informative Dirichlet prior, one specialty against the rest.

    `totals`: n^i, each specialty's count of all term mentions in the corpus (as a build records it); None:
    the sum over `counts`, which is that only while `counts` holds every term of the corpus (not after a
    filter: a lexicon re-assigned from its kept terms moved z by up to 0.3).

    `counts[term][specialty]` is how often the term occurs in that specialty's texts. With y_w^i the count of
    term w in specialty i, n^i the total count in i, the rest j = all other specialties, and the prior
    alpha_w = prior_strength * y_w (the whole corpus' counts, alpha_0 = prior_strength * N):

        delta_w = log((y_w^i + a_w) / (n^i + a_0 - y_w^i - a_w)) - log((y_w^j + a_w) / (n^j + a_0 - y_w^j - a_w))
        var     = 1 / (y_w^i + a_w) + 1 / (y_w^j + a_w)
        z       = delta_w / sqrt(var)
    """
    if prior_strength <= 0:
        raise ValueError("prior_strength must be positive")
    specs = list(specialties) if specialties is not None else sorted({s for c in counts.values() for s in c})
    n_i = {s: sum(c.get(s, 0) for c in counts.values()) for s in specs}
    if totals is not None and all(s in totals for s in specs):
        n_i = {s: int(totals[s]) for s in specs}
    total = sum(n_i.values())
    a0 = prior_strength * total
    out: dict[str, dict[str, float]] = {}
    for term, c in counts.items():
        y = sum(c.get(s, 0) for s in specs)
        a = prior_strength * y
        zs = {}
        for s in specs:
            yi, yj = c.get(s, 0), y - c.get(s, 0)
            ni, nj = n_i[s], total - n_i[s]
            if y == 0 or ni == 0 or nj == 0:
                zs[s] = 0.0
                continue
            delta = math.log((yi + a) / (ni + a0 - yi - a)) - math.log((yj + a) / (nj + a0 - yj - a))
            zs[s] = delta / math.sqrt(1.0 / (yi + a) + 1.0 / (yj + a))
        out[term] = zs
    return out


# ---------------------------------------------------------------------------------------- combination


@dataclass(frozen=True)
class AssignmentRule:
    """How the two signals combine (stored in every lexicon's metadata).

    A term gets the specialties of its ontology signal (`use_ontology`) plus every specialty whose corpus
    z-score is >= `z_min` and in whose texts it occurs at least `min_specialty_count` times (`use_corpus`).
    It is *specific* (kept by `Lexicon.term_specialties`) when it has 1..`max_specialties` specialties and
    occurs at least `min_count` times in all.
    """

    z_min: float = 1.96
    min_specialty_count: int = 2
    max_specialties: int = 3
    min_count: int = 1
    prior_strength: float = 1.0
    use_ontology: bool = True
    use_corpus: bool = True

    def __post_init__(self) -> None:
        """Refuse values that would silently assign nothing (or everything): a NaN z_min, no signal."""
        if not math.isfinite(self.z_min):
            raise ValueError(f"z_min must be a finite number, got {self.z_min}")
        if not (math.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise ValueError(f"prior_strength must be a positive number, got {self.prior_strength}")
        for name in ("max_specialties", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_specialty_count < 0:
            raise ValueError(f"min_specialty_count must be at least 0, got {self.min_specialty_count}")
        if not (self.use_ontology or self.use_corpus):
            raise ValueError("use_ontology and use_corpus are both off: no term could get a specialty")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> AssignmentRule:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def combine(
    ontology_specs: Sequence[str],
    z: Mapping[str, float],
    counts: Mapping[str, int],
    rule: AssignmentRule = AssignmentRule(),
    total: int | None = None,
) -> tuple[tuple[str, ...], bool]:
    """Apply `rule` to one term: returns (specialties, specific). `total`: how often the term occurs in all
    (questions without a specialty too, a question of two specialties once); None: the sum of `counts`,
    which leaves those out, so a term of unlabelled data was never specific."""
    specs = list(ontology_specs) if rule.use_ontology else []
    if rule.use_corpus:
        ranked = sorted(z, key=lambda s: -z[s])
        specs += [s for s in ranked if z[s] >= rule.z_min and counts.get(s, 0) >= rule.min_specialty_count]
    specs = list(dict.fromkeys(specs))
    total = sum(counts.values()) if total is None else total
    specific = 1 <= len(specs) <= rule.max_specialties and total >= rule.min_count
    return tuple(specs), specific
