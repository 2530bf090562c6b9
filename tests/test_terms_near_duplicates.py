"""Near-duplicate questions and the experiment's split: variants of one question (case, spacing,
punctuation, option order, the same text under two ids, a word changed) were split independently, so one
copy could be trained on and another tested; they now go to one side as a group."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from specprobe.app.experiment_stages import split_records, split_stage  # noqa: E402
from specprobe.terms.datasets import DataError, QARecord  # noqa: E402
from specprobe.terms.near_duplicates import (  # noqa: E402
    near_duplicate_groups,
    shingles,
    similar_pairs,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
WORDS = "fever cough rash pain nausea liver kidney heart lung blood swelling fatigue".split()


def vignette(i: int, n_words: int = 120) -> str:
    """A long question text of its own for each i (seeded words, as a clinical vignette is long)."""
    rng = random.Random(i)
    return f"A {20 + i}-year-old patient, case {i}: " + " ".join(rng.choice(WORDS) for _ in range(n_words)) + "?"


def question(i: int, spec: str = "X", rid: str | None = None, **kw) -> QARecord:
    """Question i with options a<i>..d<i>, answer a<i>, in specialty `spec`."""
    fields = {"question": vignette(i), "options": (f"a{i}", f"b{i}", f"c{i}", f"d{i}"), "answer": f"a{i}"} | kw
    return QARecord(rid or f"q{i}", fields["question"], fields["options"], fields["answer"], (spec,))


def variants(r: QARecord) -> list[QARecord]:
    """Near-duplicates of r under other ids: shouted and spaced, punctuated, options reversed, a word changed."""
    words = r.question.split()
    return [
        QARecord(r.id + "-case", "  " + r.question.upper().replace(" ", "   "), r.options, r.answer, r.specialties),
        QARecord(r.id + "-punct", r.question.replace(",", ";").replace("?", " ?!"), r.options, r.answer, ("Y",)),
        QARecord(r.id + "-order", r.question, tuple(reversed(r.options)), r.answer, r.specialties),
        QARecord(r.id + "-word", " ".join([*words[:-1], "really", words[-1]]), r.options, r.answer, r.specialties),
    ]


def sides(train: list[QARecord], test: list[QARecord]) -> dict[str, str]:
    return {r.id: "train" for r in train} | {r.id: "test" for r in test}


def test_near_duplicates_are_never_split_across_train_and_test():
    """Each question of 40 has one of four kinds of variant under another id (one in another specialty);
    before, about 4 in 10 of the pairs straddled the split (a training copy of a test question)."""
    base = [question(i) for i in range(40)]
    recs = base + [variants(r)[i % 4] for i, r in enumerate(base)]
    for seed in range(3):
        side = sides(*split_records(recs, 0.3, seed))
        assert len(side) == 80
        straddling = [r.id for r in base if len({v for k, v in side.items() if k.split("-")[0] == r.id}) > 1]
        assert straddling == [], f"seed {seed}: near-duplicates on both sides: {straddling}"


def test_the_rule_groups_variants_and_only_them():
    """Case, spacing, punctuation, option order and one word in 120 are one question; another vignette, or a
    short generic question with other options ("All are true EXCEPT"), is not."""
    r = question(0)
    generic = [
        QARecord(f"g{i}", "All of the following are true EXCEPT:", (f"x{i}", f"y{i}", f"z{i}", "w"), "w", ("X",))
        for i in range(3)
    ]
    recs = [r, *variants(r), question(1), *generic]
    assert near_duplicate_groups(recs) == [[0, 1, 2, 3, 4]]


def test_conflicting_answers_of_one_question_are_an_error_as_for_exact_repeats():
    """The same question with its options reordered and another answer: a `DataError` naming both rows and
    answers (`check_same_answer`); a word changed ("least" for "most likely") may change the answer."""
    r = question(0)
    flipped = QARecord("q0-order", r.question.lower(), tuple(reversed(r.options)), "b0", ("Y",))
    message = f"rows 'q0' and 'q0-order' give the question {r.question[:60]!r} different answers, 'a0' and 'b0'"
    with pytest.raises(DataError, match=re.escape(f"qa.json: {message}")):
        split_records([r, flipped], 0.3, 0, "qa.json")
    least = QARecord("q0-least", r.question.replace("?", " least likely?"), r.options, "b0", ("X",))
    assert near_duplicate_groups([r, least]) == [[0, 1]]


def _old_split(recs: list[QARecord], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """The split before near-duplicates were grouped (ids given, no repeats): per specialty (in first-seen
    order), by seeded hash; the ids of train and test in the order written."""
    by_spec: dict[tuple, list[QARecord]] = {}
    for r in recs:
        by_spec.setdefault(r.specialties, []).append(r)
    train, test = [], []
    for group in by_spec.values():
        ranked = sorted(group, key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())
        k = max(1, round(len(ranked) * fraction))
        test += [r.id for r in ranked[:k]]
        train += [r.id for r in ranked[k:]]
    return train, test


def test_data_without_near_duplicates_splits_as_before():
    """No near-duplicates: the same train and test questions, in the same order (the files' sha256 is in
    the keys of the stages downstream), and nothing said."""
    recs = [question(i, spec="XYZ"[i % 3]) for i in range(60)]
    train, test = split_records(recs, 0.3, 4, say=pytest.fail)
    assert ([r.id for r in train], [r.id for r in test]) == _old_split(recs, 0.3, 4)


def test_a_new_rule_reruns_the_split_and_no_older_split_is_reused():
    """The rule's code is part of the split stage's key (`SPLIT_CODE`), and `reuse_older` cannot name the
    split: a folder split by the earlier rule is split again. The stages downstream key on the train and
    test files' content, so they rerun only where the assignment changed (no version in `split_key`)."""
    import inspect
    from pathlib import Path

    import specprobe
    from specprobe.app.config import REUSABLE_STAGES
    from specprobe.app.experiment_stages import SPLIT_CODE

    source = Path(inspect.getsourcefile(near_duplicate_groups) or "").relative_to(Path(specprobe.__file__).parent)
    assert any(source.as_posix().startswith(part + "/") for part in SPLIT_CODE), source
    assert "split" not in REUSABLE_STAGES


def test_the_split_stage_says_how_many_groups_it_merged(tmp_path):
    rows = [question(i) for i in range(10)]
    rows += variants(rows[0])[:2] + variants(rows[5])[2:3]
    data = tmp_path / "qa.json"
    data.write_text(
        json.dumps(
            [
                {
                    "id": r.id,
                    "Question": r.question,
                    "Specialty": list(r.specialties),
                    "Options": list(r.options),
                    "Answer": r.answer,
                }
                for r in rows
            ]
        ),
        encoding="utf-8",
    )
    log: list[str] = []
    split_stage(tmp_path, str(data), "d", 0.3, 0, say=log.append)
    notes = [line for line in log if "near-duplicate" in line]
    assert len(notes) == 1 and "2 group(s)" in notes[0] and "(5 questions" in notes[0], log


@SETTINGS
@given(st.lists(st.frozensets(st.integers(0, 12), max_size=8), max_size=12), st.sampled_from([0.5, 0.8, 0.9, 1.0]))
def test_similar_pairs_finds_every_pair_that_comparing_all_pairs_finds(sets, threshold):
    """The prefix filter misses no pair and adds none (against comparing every pair)."""
    from fractions import Fraction

    t = Fraction(str(threshold))
    brute = [
        (i, j)
        for i, j in itertools.combinations(range(len(sets)), 2)
        if sets[i] | sets[j] and Fraction(len(sets[i] & sets[j]), len(sets[i] | sets[j])) >= t
    ]
    assert sorted(similar_pairs(sets, t)) == brute


variant_kinds = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 3), st.sampled_from("XYZ")), max_size=12, unique_by=lambda t: t[:2]
)


@SETTINGS
@given(variant_kinds, st.integers(0, 3), st.randoms(use_true_random=False))
def test_no_group_straddles_and_the_rows_order_does_not_matter(picks, seed, rng):
    """For any set of variants of 8 questions, in any specialties and any row order: every question is kept,
    a group is on one side, and shuffling the rows gives the same two sides."""
    base = [question(i, spec="XYZ"[i % 3]) for i in range(8)]
    recs = base + [
        QARecord(f"{v.id}-{n}", v.question, v.options, v.answer, (spec,))
        for n, (i, kind, spec) in enumerate(picks)
        for v in [variants(base[i])[kind]]
    ]
    side = sides(*split_records(recs, 0.3, seed))
    assert len(side) == len(recs)
    for r in base:
        assert len({v for k, v in side.items() if k.split("-")[0] == r.id}) == 1
    shuffled = list(recs)
    rng.shuffle(shuffled)
    assert sides(*split_records(shuffled, 0.3, seed)) == side


def test_shingles_of_short_and_empty_texts():
    assert shingles("a b c") == {"a b c"} and shingles("") == frozenset()
    assert len(shingles("a b c d e f")) == 2
