"""Clinician-style audit of the lexicon built from S-MedQA: the concepts of the most frequent terms and a random
sample of (term, specialty) pairs, with verdicts, and their precision with Wilson 95% intervals.

    python scripts/audit_lexicon.py write  [--data PATH] [--lexicon CACHE.json]
    python scripts/audit_lexicon.py report [--data PATH] [--lexicon CACHE.json]

`write` builds the lexicon (or loads CACHE.json, which it writes after a build) and (re)writes the two item lists in
`specprobe/data/terms/`: `audit_concepts_top200.csv` (the canonical concept of the 200 most frequent terms) and
`audit_specialty_sample100.csv` (100 (term, specialty) pairs drawn with `SEED` from the specific terms' pairs).
Verdicts are filled in by hand ("correct"/"incorrect", and a reason for each incorrect one); an item that still
maps as before keeps its verdict, a new or changed one gets an empty verdict. `report` prints both precisions and
exits 1 when an audit no longer matches the lexicon (the tests run the same check, `drift`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

from specprobe.finetune.evaluation import wilson_interval
from specprobe.terms.build import build_lexicon
from specprobe.terms.datasets import default_data_path
from specprobe.terms.lexicon import Lexicon

AUDIT_DIR = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "terms"
CONCEPTS_FILE = "audit_concepts_top200.csv"
SPECIALTY_FILE = "audit_specialty_sample100.csv"
N_CONCEPTS = 200
N_PAIRS = 100
SEED = 4401
CONCEPT_FIELDS = ["rank", "term", "count", "concept_id", "canonical", "verdict", "reason"]
SPECIALTY_FIELDS = ["index", "term", "specialty", "all_specialties", "canonical", "evidence", "verdict", "reason"]
VERDICTS = ("correct", "incorrect")


def load_lexicon(data: Path, cache: Path | None = None) -> Lexicon:
    """The lexicon of `data` with the default settings; `cache` (if given) is loaded when present, else written."""
    if cache is not None and cache.exists():
        return Lexicon.load(cache)
    lex = build_lexicon(data)
    if cache is not None:
        lex.save(cache)
    return lex


def concept_items(lex: Lexicon, n: int = N_CONCEPTS) -> list[dict]:
    """The `n` most frequent terms (ties by name) with their canonical concept."""
    ranked = sorted(lex.terms.values(), key=lambda e: (-e.count, e.term))[:n]
    return [
        {"rank": i + 1, "term": e.term, "count": e.count, "concept_id": _primary_id(e), "canonical": e.canonical}
        for i, e in enumerate(ranked)
    ]


def _primary_id(entry) -> str:
    return entry.concept_ids[0] if entry.concept_ids else ""


def specialty_pairs(lex: Lexicon) -> list[tuple[str, str]]:
    """Every (term, specialty) pair of the specific terms, sorted (the population the sample is drawn from)."""
    return sorted((t, s) for t, specs in lex.term_specialties().items() for s in specs)


def sample_pairs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """A simple random sample of `n` pairs: the `n` with the smallest seeded SHA-256 hash. Each pair's rank
    depends only on the pair and the seed, so a rule change that adds or removes a few pairs leaves the rest of
    the sample as it was (and the audit shows only the items that really changed)."""

    def rank(pair: tuple[str, str]) -> str:
        return hashlib.sha256(f"{seed}\t{pair[0]}\t{pair[1]}".encode()).hexdigest()

    return sorted(pairs, key=rank)[:n]


def specialty_items(lex: Lexicon, n: int = N_PAIRS, seed: int = SEED) -> list[dict]:
    """`n` pairs drawn at random (`seed`) from `specialty_pairs`, with the evidence a reviewer needs."""
    pairs = sample_pairs(specialty_pairs(lex), n, seed)
    out = []
    for i, (term, spec) in enumerate(pairs):
        e = lex.terms[term]
        evidence = list(e.ontology_evidence) if spec in e.ontology else []
        if spec not in e.ontology:
            evidence.append(f"corpus z={e.z.get(spec, 0.0):.2f}, n={e.counts.get(spec, 0)}")
        out.append(
            {
                "index": i,
                "term": term,
                "specialty": spec,
                "all_specialties": ";".join(e.specialties),
                "canonical": e.canonical,
                "evidence": ",".join(evidence),
            }
        )
    return out


def read_audit(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _concept_key(row: dict) -> tuple:
    return row["term"], row["concept_id"], row["canonical"]


def _specialty_key(row: dict) -> tuple:
    return row["term"], row["specialty"]


def merge_verdicts(items: list[dict], old: list[dict], key) -> list[dict]:
    """`items` with the verdict and reason of the old row that has the same key (else empty)."""
    by_key = {key(r): r for r in old}
    return [
        {
            **it,
            "verdict": by_key.get(key(it), {}).get("verdict", ""),
            "reason": by_key.get(key(it), {}).get("reason", ""),
        }
        for it in items
    ]


def write_audit(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in fields} for r in rows)


def drift(lex: Lexicon, concepts: list[dict], pairs: list[dict]) -> list[str]:
    """How the audits differ from what `lex` gives now (empty when they match): the items, their mapping, the
    verdicts (each 'correct' or 'incorrect', with a reason when incorrect)."""
    problems = []
    for name, audit, current, key in (
        ("concepts", concepts, concept_items(lex, len(concepts)), _concept_key),
        ("specialty sample", pairs, specialty_items(lex, len(pairs)), _specialty_key),
    ):
        got, want = [key(r) for r in audit], [key(_as_str(r)) for r in current]
        problems += [f"{name}: audited {k} but the lexicon now gives {w}" for k, w in zip(got, want) if k != w]
        if len(got) != len(want):
            problems.append(f"{name}: {len(got)} audited items, {len(want)} expected")
        for r in audit:
            if r["verdict"] not in VERDICTS or (r["verdict"] == "incorrect" and not r["reason"].strip()):
                problems.append(f"{name}: {key(r)} has verdict {r['verdict']!r} (reason {r['reason']!r})")
    return problems


def _as_str(row: dict) -> dict:
    return {k: str(v) for k, v in row.items()}


def precision(rows: list[dict]) -> tuple[int, int, float, float]:
    """(correct, n, Wilson 95% low, high) of audited rows."""
    k = sum(r["verdict"] == "correct" for r in rows)
    lo, hi = wilson_interval(k, len(rows))
    return k, len(rows), lo, hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("action", choices=("write", "report"))
    ap.add_argument("--data", type=Path, default=default_data_path())
    ap.add_argument("--lexicon", type=Path, default=None, help="cache of the built lexicon (loaded if present)")
    args = ap.parse_args(argv)
    lex = load_lexicon(args.data, args.lexicon)
    cpath, spath = AUDIT_DIR / CONCEPTS_FILE, AUDIT_DIR / SPECIALTY_FILE
    if args.action == "write":
        old_c = read_audit(cpath) if cpath.exists() else []
        old_s = read_audit(spath) if spath.exists() else []
        write_audit(cpath, merge_verdicts(concept_items(lex), old_c, _concept_key), CONCEPT_FIELDS)
        write_audit(spath, merge_verdicts(specialty_items(lex), old_s, _specialty_key), SPECIALTY_FIELDS)
        print(f"wrote {cpath} and {spath}")
        return 0
    concepts, pairs = read_audit(cpath), read_audit(spath)
    for name, rows in (("concept precision", concepts), ("specialty precision", pairs)):
        k, n, lo, hi = precision(rows)
        print(f"{name}: {k}/{n} = {k / n:.1%} (Wilson 95% CI {lo:.1%}-{hi:.1%})")
    print(
        f"population: {len(specialty_pairs(lex))} (term, specialty) pairs of {len(lex.term_specialties())} specific terms"
    )
    problems = drift(lex, concepts, pairs)
    for p in problems:
        print("DRIFT:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
