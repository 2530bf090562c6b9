"""Terms against control words with texts AND words random (Clark 1973's language-as-fixed-effect fallacy).

`Comparison.by_specialty` paired texts only: where each word moves on its own (a word alike in every
text), 27% of null p-values fell below 0.05 with 40 texts and 45% with 100. p_value is now the larger of
the text-level p and a word-level permutation p (`stats.texts_and_words_test`).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.word_effects import rejection_rates, simulate_cell
from specprobe.probe.stats import intersection_union, texts_and_words_test, word_permutation_test

finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(finite, min_size=2, max_size=8), st.integers(1, 7))
def test_the_exact_word_level_p_is_valid_over_every_labelling(values, k):
    """Under the null every labelling of the words is equally likely: over all of them, the share with
    p <= x is at most x for every x (exact enumeration, so no Monte Carlo slack)."""
    k = min(k, len(values) - 1)
    v = np.asarray(values, dtype=float)
    ps = []
    for a in itertools.combinations(range(v.size), k):
        mask = np.zeros(v.size, bool)
        mask[list(a)] = True
        ps.append(word_permutation_test(v[mask], v[~mask]).p_value)
    ps = np.asarray(ps)
    for x in np.unique(ps):
        assert (ps <= x).mean() <= x + 1e-12
    assert ps.min() >= word_permutation_test(v[:k], v[k:]).p_min - 1e-12


def test_the_smallest_word_level_p_is_told():
    """One term word against 9 control words can never reach p < 0.1: p_min says so (exact), and a
    Monte Carlo test's floor is 1 / (1 + n_perm)."""
    one = word_permutation_test([100.0], np.arange(9.0))
    assert one.p_value == pytest.approx(0.1) and one.p_min == pytest.approx(0.1)
    many = word_permutation_test(np.arange(13.0) + 100, np.arange(138.0), n_perm=999)
    assert many.p_value == pytest.approx(1 / 1000) and many.p_min == pytest.approx(1 / 1000)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 2**16), st.floats(0, 2), st.floats(-1, 1))
def test_the_combined_p_is_never_below_either_component(seed, word, effect):
    """An intersection-union test rejects only where both tests do: p_value >= p_text and >= p_word."""
    terms, controls = simulate_cell(np.random.default_rng(seed), 12, 4, 8, word, 0.5, effect)
    test = texts_and_words_test(terms, controls, "delta_per_token", n_boot=10, n_perm=199)
    if not np.isnan(test["p_value"]):
        assert test["p_value"] >= test["p_text"] and test["p_value"] >= test["p_word"]
    assert intersection_union(0.01, 0.02, 1.0, -1.0) == 1.0  # opposite directions: no claim
    assert np.isnan(intersection_union(0.01, float("nan"), 1.0, 1.0))


def test_by_specialty_reports_both_tests_and_the_word_counts():
    rng = np.random.default_rng(0)
    terms, controls = simulate_cell(rng, 30, 6, 12, 0.0, 0.0, 2.0)
    df = pd.concat([terms.assign(is_control=False), controls.assign(is_control=True)])
    from specprobe.probe import Comparison

    rows = df.assign(
        text_id=df["text_id"].map(lambda t: f"q{t}"),
        term=df["term"].map(lambda w: f"w{w}"),
        specialties=[("Cardiology",) if not c else () for c in df["is_control"]],
        text_specialties=[()] * len(df),
        surface="w",
        start=0,
        end=1,
        n_tokens=1,
        logp_base=-5.0,
        logp_tuned=-5.0 + df["delta_per_token"],
        delta=df["delta_per_token"],
        token_logp_base=[[-5.0]] * len(df),
        token_logp_tuned=[[-5.0]] * len(df),
        flags="",
    )[Comparison.columns]
    table = Comparison(pd.DataFrame(rows), {}, {"missing": []}).by_specialty(n_boot=50).set_index("specialty")
    cell = table.loc["Cardiology"]
    assert cell["n_words"] == 6 and cell["n_control_words"] == 12
    assert cell["p_value"] == max(cell["p_text"], cell["p_word"]) and cell["p_value"] < 0.01
    assert cell["p_word_min"] == pytest.approx(1 / (1 + 9999))  # C(18, 6) > 10,000: Monte Carlo
    assert np.isnan(table.loc["control", "p_value"]) and table.loc["control", "n_words"] == 0


@pytest.mark.slow
def test_word_level_shifts_no_longer_give_false_positives():
    """Null: terms and control words exchangeable, each word with a shift of its own (sd = the occurrence
    noise), 40 texts, 15 terms, 60 control words. The text-only test rejected in ~20% of 300 runs; the
    combined test stays near 5%."""
    rates = rejection_rates(40, 15, 60, 1.0, 0.0, reps=300, seed=1)
    assert rates["old"] >= 0.15, rates  # the fallacy this guards against (the old p_value was p_text)
    assert rates["new"] <= 0.09, rates


def test_a_cell_with_too_few_words_says_so_in_the_finding():
    """A cell whose word-level test cannot reach 0.05 (1 term word against 9 control words: p >= 0.1) is
    'not significant' for want of words, not for want of a rise: the finding's evidence says how many."""
    from specprobe.app.findings import shift_finding

    matrix = pd.DataFrame(
        {
            "finetune_specialty": ["A", "A"],
            "term_specialty": ["X", "Y"],
            "mean": [0.4, 0.3],
            "p_word_min": [0.1, 1e-4],
            "p_value": [0.1, 0.2],
            "p_holm": [0.2, 0.2],
        }
    )
    assert "1 tested cell(s) have too few words to ever reach p < 0.05" in shift_finding(matrix).evidence
    assert "too few words" not in shift_finding(matrix.assign(p_word_min=1e-4)).evidence
