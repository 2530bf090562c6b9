"""Control words (auto and given) and the Comparison's summaries that use them, on synthetic inputs.

* `choose_controls`: ordinary words of the texts, never a term's word nor its plural or singular,
  exactly the documented number (or every candidate, with a warning), frequency-matched by log2 bins in
  proportion to the terms, and the same for the same seed;
* `given_controls`: duplicates under the match options kept once, controls that are terms (or share a
  word with one) warned about;
* `Comparison.by_specialty` and `specialty_delta_matrix` against a direct computation: the mean over
  occurrences (of `delta / n_tokens`), a term of several specialties in each, the per-text pairing with
  the same text's control words.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.probe import Comparison
from specprobe.probe.controls import _quotas, candidate_counts, choose_controls, given_controls, term_words
from specprobe.probe.inputs import UNASSIGNED
from specprobe.reports.sections import specialty_delta_matrix

FAST = settings(max_examples=60, deadline=None, derandomize=True)

# common English words (wordfreq Zipf >= 4), none a spaCy stop word
ORDINARY = (
    "table river window garden music market school winter summer morning evening letter travel street office paper"
).split()
TERMS = {"heart failure": ["Cardiology"], "tumor": ["Oncology"], "heart attack": ["Cardiology"], "disease": []}


def _texts(counts: dict[str, int], per_text: int = 3) -> list[str]:
    """Texts holding each word exactly `counts[word]` times, a few words a text."""
    words = [w for w, c in sorted(counts.items()) for _ in range(c)]
    return [". ".join(words[i : i + per_text]) + "." for i in range(0, len(words), per_text)]


def test_auto_controls_share_no_word_nor_its_plural_with_a_term():
    texts = [
        "The hearts and the tumors were examined. Heart failure was noted in patients with attacks.",
        "Diseases of the heart: heart-failure, café, naïve, results, People. The tumor was large.",
    ] * 3
    chosen = choose_controls(texts, {"heart failure": 4, "tumor": 3, "heart attack": 1, "disease": 0})
    assert chosen and not {"hearts", "tumors", "attacks", "diseases", "heart", "failure"} & set(chosen)
    assert set(chosen) <= set(candidate_counts(texts, set(), 4.0))
    # folded as matching folds: the Kelvin sign is a "k" to a case-insensitive match
    assert {"kidney", "kidneys"} <= term_words(["\u212aidney stone"])
    assert {"artery", "arteries", "bus", "buses", "glass", "glasses"} <= term_words(["Arteries", "BUS", "glass"])


def test_auto_controls_fill_the_documented_number_in_proportion_to_the_bins():
    # candidates: four words at each of the counts 1, 8 and 64 (log2 bins 0, 3 and 6)
    counts = {w: c for c, ws in ((1, ORDINARY[:4]), (8, ORDINARY[4:8]), (64, ORDINARY[8:12])) for w in ws}
    texts = _texts(counts)
    bin_of = {w: int(math.log2(c)) for w, c in counts.items()}
    # one term in each bin: 10 by default (at least 10), not 9 (3 + 3 + 3)
    terms = {"aspirin": 1, "warfarin": 8, "heparin": 64}
    chosen = choose_controls(texts, terms, seed=1)
    assert len(chosen) == 10 and sorted(Counter(bin_of[w] for w in chosen).values()) == [3, 3, 4]
    # fewer words than bins: which bin goes without is drawn, not always the most frequent one
    left_out = {
        frozenset({0, 3, 6} - {bin_of[w] for w in choose_controls(texts, terms, n=2, seed=seed)}) for seed in range(12)
    }
    assert left_out == {frozenset({0}), frozenset({3}), frozenset({6})}
    # a bin without candidates takes from the nearest
    near = choose_controls(texts, {"aspirin": 16}, n=4, seed=1)
    assert {bin_of[w] for w in near} == {3}


def test_auto_controls_with_too_few_candidates_use_them_all_and_warn(caplog):
    texts = ["The river and the garden.", "A river by a garden, a table."]
    with caplog.at_level(logging.WARNING, logger="specprobe.probe.controls"):
        chosen = choose_controls(texts, {"aspirin": 2})
    assert chosen == ["garden", "river", "table"]
    assert "only 3 candidate control word(s)" in caplog.text
    assert choose_controls(["aspirin and the of"], {"aspirin": 1}) == []


@FAST
@given(
    counts=st.dictionaries(st.sampled_from(ORDINARY), st.integers(1, 40), min_size=0, max_size=len(ORDINARY)),
    term_counts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    n=st.one_of(st.none(), st.integers(1, 20)),
    seed=st.integers(0, 3),
)
def test_auto_controls_properties(counts, term_counts, n, seed):
    terms = {name: c for name, c in zip(["aspirin", "warfarin", "heparin", "statin"] * 3, term_counts, strict=False)}
    terms = {f"{name} {i}": c for i, (name, c) in enumerate(terms.items())}
    texts = _texts(counts)
    chosen = choose_controls(texts, terms, n=n, seed=seed)
    found = sum(c > 0 for c in terms.values())
    target = n if n is not None else max(10, found)
    assert chosen == sorted(set(chosen)) and set(chosen) <= set(counts)
    assert len(chosen) == min(target, len(counts))
    assert not set(chosen) & term_words(terms)
    assert chosen == choose_controls(texts, terms, n=n, seed=seed)


@FAST
@given(wanted=st.dictionaries(st.integers(0, 12), st.integers(1, 30), min_size=1), n=st.integers(1, 60))
def test_quotas_sum_to_n_in_proportion(wanted, n):
    quotas = _quotas(Counter(wanted), n, np.random.default_rng(0))
    total = sum(wanted.values())
    assert sum(quotas.values()) == n
    for b, k in wanted.items():
        assert math.floor(n * k / total) <= quotas.get(b, 0) <= math.ceil(n * k / total)


def test_given_controls_dedupe_and_warn_about_terms(caplog):
    with caplog.at_level(logging.WARNING, logger="specprobe.probe.controls"):
        out = given_controls(["table", "Table", " ", "heart", "failures", "river"], TERMS)
    assert out == ["table", "heart", "failures", "river"]
    assert "more than once" in caplog.text
    assert "['heart', 'failures'] share a word with a term" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specprobe.probe.controls"):
        assert given_controls(["Tumor"], TERMS) == ["Tumor"]
    assert "are also terms" in caplog.text


def test_given_controls_in_prepare_score_each_occurrence_once():
    from specprobe.probe.prepare import prepare
    from specprobe.testing.tiny_models import train_tokenizer

    texts = ["Heart failure, and the heart. The table, a Table, the river.", "The river near the table."]
    terms = {"heart failure": ["Cardiology"], "heart": ["Cardiology"]}
    prep = prepare(train_tokenizer("llama"), terms, texts, controls=["table", "Table", "heart"], max_length=64)
    ctrl = [(o.text_index, o.start) for o in prep.occs if o.is_control]
    assert len(ctrl) == len(set(ctrl)) == 3 and prep.control_words == ["table", "heart"]
    # the shorter term is also found inside the longer one (method.md section 8)
    hearts = [(o.start, o.end) for o in prep.occs if o.term == "heart"]
    assert (0, 5) in hearts and len(hearts) == 2


# -- the Comparison's summaries ----------------------------------------------------------------------------


def _row(tid: str, term: str, specs, delta: float, n_tokens: int, control: bool = False) -> dict:
    return {
        "text_id": tid,
        "term": term,
        "specialties": tuple(specs),
        "text_specialties": (),
        "surface": term,
        "start": 0,
        "end": len(term),
        "n_tokens": n_tokens,
        "logp_base": -5.0,
        "logp_tuned": -5.0 + delta,
        "delta": delta,
        "delta_per_token": delta / n_tokens,
        "token_logp_base": [],
        "token_logp_tuned": [],
        "is_control": control,
        "flags": "",
    }


def test_by_specialty_by_hand():
    rows = [
        _row("t1", "heart failure", ["Cardiology"], 2.0, 2),
        _row("t1", "heart", ["Cardiology", "Emergency"], 1.0, 1),
        _row("t1", "aspirin", [], 3.0, 3),
        _row("t1", "table", ["control"], 0.5, 1, True),
        _row("t1", "river", ["control"], 0.1, 1, True),
        _row("t2", "heart failure", ["Cardiology"], 8.0, 4),
        _row("t2", "table", ["control"], 0.3, 1, True),
        _row("t3", "heart", ["Cardiology", "Emergency"], 6.0, 1),  # a text without control words
        _row("t4", "heart", ["Cardiology", "Emergency"], float("nan"), 1),  # not scored
    ]
    comp = Comparison(pd.DataFrame(rows))
    table = comp.by_specialty(n_boot=200).set_index("specialty")
    # per token, mean over occurrences (not sum/sum): t1 1, 1; t2 2; t3 6
    assert table.loc["Cardiology", "mean_delta_per_token"] == pytest.approx((1 + 1 + 2 + 6) / 4)
    assert (table.loc["Cardiology", "n"], table.loc["Cardiology", "n_texts"]) == (4, 3)
    assert table.loc["Emergency", "n"] == 2 and table.loc[UNASSIGNED, "n"] == 1
    # paired with the same text's control mean (t1: 0.3, t2: 0.3); t3 has none and is not paired
    assert table.loc["Cardiology", "minus_control"] == pytest.approx(((1 - 0.3) + (2 - 0.3)) / 2)
    assert table.loc["Cardiology", "n_pairs"] == 2 and table.loc["Emergency", "n_pairs"] == 1
    assert table.loc["control", "mean_delta_per_token"] == pytest.approx(0.3)
    summed = comp.by_specialty("delta", n_boot=200).set_index("specialty")
    assert summed.loc["Cardiology", "mean_delta"] == pytest.approx((2 + 1 + 8 + 6) / 4)


@st.composite
def frames(draw):
    rows = []
    for t in range(draw(st.integers(1, 6))):
        for _ in range(draw(st.integers(0, 5))):
            term = draw(st.sampled_from(["t1", "t2", "t3", "t4"]))
            specs = {"t1": ["A"], "t2": ["A", "B"], "t3": [], "t4": ["C", "A"]}[term]
            delta = draw(st.one_of(st.floats(-5, 5), st.just(float("nan"))))
            rows.append(_row(f"x{t}", term, specs, delta, draw(st.integers(1, 4))))
        for _ in range(draw(st.integers(0, 3))):
            rows.append(
                _row(f"x{t}", draw(st.sampled_from(["c1", "c2"])), ["control"], draw(st.floats(-5, 5)), 1, True)
            )
    return pd.DataFrame(rows, columns=Comparison.columns)


@FAST
@given(frame=frames(), metric=st.sampled_from(["delta", "delta_per_token"]))
def test_by_specialty_and_the_matrix_match_a_direct_computation(frame, metric):
    comp = Comparison(frame)
    table = comp.by_specialty(metric, n_boot=50)
    scored = frame[np.isfinite(frame["delta"].astype(float))]
    is_control = scored["is_control"].astype(bool)
    terms, ctrl = scored[~is_control], scored[is_control]
    ctrl_mean = ctrl.groupby("text_id")[metric].mean()
    expected = {}
    for spec in ["A", "B", "C", UNASSIGNED]:
        g = terms[terms["specialties"].map(lambda s, spec=spec: spec in (tuple(s) or (UNASSIGNED,)))]
        if len(g):
            per_text = g.groupby("text_id")[metric].mean()
            diffs = [per_text[t] - ctrl_mean[t] for t in per_text.index if t in ctrl_mean.index]
            expected[spec] = (len(g), g[metric].mean(), len(diffs), np.mean(diffs) if diffs else np.nan)
    if table.empty:  # nothing scored
        assert not expected and not len(ctrl)
        return
    got = table[table["specialty"] != "control"].set_index("specialty")
    assert set(got.index) == set(expected)
    for spec, (n, mean, n_pairs, diff) in expected.items():
        assert got.loc[spec, "n"] == n and got.loc[spec, "n_pairs"] == n_pairs
        assert got.loc[spec, f"mean_{metric}"] == pytest.approx(mean)
        assert got.loc[spec, "minus_control"] == pytest.approx(diff, nan_ok=True)
    assert ("control" in set(table["specialty"])) == bool(len(ctrl))
    matrix = specialty_delta_matrix({"A": comp}, metric=metric, n_boot=50, relative_to_control=True)
    if len(matrix):
        m = matrix.set_index("term_specialty")
        assert set(m.index) == set(expected)
        for spec, (_, _, n_pairs, diff) in expected.items():
            assert m.loc[spec, "mean"] == pytest.approx(diff, nan_ok=True) and m.loc[spec, "n_pairs"] == n_pairs


@pytest.mark.parametrize("name", ["control", "Unassigned"])
def test_a_term_specialty_named_like_a_summary_row_is_refused(name):
    """by_specialty adds rows 'control' and 'unassigned': a term specialty of that name would merge with
    them (and the minus-control matrix would skip it)."""
    from specprobe.probe.inputs import normalize_terms

    with pytest.raises(ValueError, match=f"term 'x': specialty '{name}' is reserved"):
        normalize_terms({"x": [name], "y": ["Cardiology"]})
    assert normalize_terms({"x": ["Controls"]}) == {"x": ("Controls",)}


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_auto_controls_occur_as_often_as_counted_under_the_match_options(case_sensitive):
    """With case-sensitive matching the auto controls were counted lower-cased ('patient', 6 times) but
    matched as written, so 'Patient' in the texts was never scored: 2 of 3 controls had no occurrence."""
    from specprobe.probe.occurrences import MatchOptions
    from specprobe.probe.prepare import prepare
    from specprobe.testing.tiny_models import train_tokenizer

    texts = ["Patient reports pain. Patient reports pain again. Committee members reports."] * 3
    prep = prepare(
        train_tokenizer("gpt2", 600),
        ["pain"],
        texts,
        controls="auto",
        n_controls=3,
        max_length=128,
        match=MatchOptions(case_sensitive=case_sensitive),
    )
    found = Counter(o.term for o in prep.occs if o.is_control)
    assert len(prep.control_words) == 3
    # every chosen word is scored as often as it occurs in the texts under the match options
    assert {w: found[w] for w in prep.control_words} == {
        w: 6 if w.lower() == "patient" else 3 for w in prep.control_words
    }
