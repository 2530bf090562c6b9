"""A lexicon built from questions without specialty labels (MedQA JSON lines) keeps the ontology's
specialties as specific terms: `min_count` was checked against the per-specialty counts, which such
questions never add to, so every term had a total of 0 and the lexicon was empty."""

from __future__ import annotations

import json
from pathlib import Path

from specprobe.terms.build import build_lexicon

DEMO = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "demo" / "questions.json"


def _as_medqa(path: Path, labelled: bool) -> Path:
    rows = []
    for q in json.loads(DEMO.read_text())[::10]:
        letters = "ABCD"[: len(q["Options"])]
        row = {
            "question": q["Question"],
            "options": dict(zip(letters, q["Options"], strict=True)),
            "answer_idx": letters[q["Options"].index(q["Answer"])],
        }
        if labelled:
            row["specialty"] = q["Specialty"]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_unlabelled_questions_give_specific_terms_from_the_ontology(tmp_path):
    bare = build_lexicon(_as_medqa(tmp_path / "bare.jsonl", labelled=False))
    labelled = build_lexicon(_as_medqa(tmp_path / "labelled.jsonl", labelled=True))
    specific = bare.term_specialties()
    assert len(specific) > 10
    for term, specs in specific.items():  # the ontology signal alone: a subset of what labels add to it
        assert set(specs) <= set(labelled.terms[term].specialties), term
    assert all(bare.terms[t].count == labelled.terms[t].count for t in specific)
