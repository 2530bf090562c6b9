"""Quality checks on the S-MedQA validation split (skipped when the file is absent)."""

import csv
import time
from importlib import resources

import pytest

from specprobe.terms.datasets import default_data_path
from specprobe.terms.specialties import SPECIALTIES

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not default_data_path().exists(),
        reason=f"S-MedQA data not found at {default_data_path()} (set $SPECPROBE_SMEDQA)",
    ),
]


@pytest.fixture(scope="module")
def built():
    from specprobe.terms.build import build_lexicon

    t0 = time.perf_counter()
    lex = build_lexicon(default_data_path())
    return lex, time.perf_counter() - t0


def test_build_time_under_60s(built):
    _, seconds = built
    assert seconds < 60, f"offline build took {seconds:.1f} s"


def test_every_specialty_has_20_specific_terms(built):
    lex, _ = built
    per = lex.stats()["specific_per_specialty"]
    assert set(per) == set(SPECIALTIES)
    low = {s: n for s, n in per.items() if n < 20}
    assert not low, f"specialties with fewer than 20 specific terms: {low}"


def test_gold_terms_land_in_their_specialty(built):
    lex, _ = built
    text = (resources.files("specprobe") / "data" / "terms" / "gold_terms.csv").read_text(encoding="utf-8")
    gold = list(csv.DictReader(text.splitlines()))
    assert len(gold) >= 40
    ts = lex.term_specialties()
    misses = [
        (g["term"], g["specialty"], ts.get(g["term"])) for g in gold if g["specialty"] not in ts.get(g["term"], ())
    ]
    accuracy = 1 - len(misses) / len(gold)
    assert accuracy >= 0.9, f"gold accuracy {accuracy:.2%}; misses: {misses}"


def test_terms_occur_in_the_probed_texts(built):
    lex, _ = built
    texts = [r.text.lower() for r in lex.contexts()]
    ids = {r.id: t for r, t in zip(lex.contexts(), texts)}
    for term, entry in list(lex.terms.items())[:300]:
        assert any(s.lower() in ids[q] for q in entry.questions for s in entry.surfaces), term
        assert entry.specific == (1 <= len(entry.specialties) <= 3)
    # the probe finds a term by its name: every name occurs in a question of its own (the one term met only as
    # a defined abbreviation, "TRAbs", was named by its concept's title, which no question has)
    missing = [t for t, e in lex.terms.items() if not any(t.lower() in ids[q] for q in e.questions)]
    assert not missing, missing
