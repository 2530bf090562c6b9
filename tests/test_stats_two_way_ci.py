"""The terms-minus-control CI with texts AND words random (`stats.two_way_bootstrap_ci`).

`texts_and_words_test`'s p-value takes words as random (the word-level permutation test), but its CI
resampled texts only: where each word moves alike in every text, the CI excluded 0 while p > 0.05
(in simulation it held the true difference 0 in 69-80% of null cells with word shifts, not 95%).
The CI now resamples texts and, independently, each side's words (a pigeonhole bootstrap).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.word_effects import simulate_cell
from specprobe.probe.stats import paired_test, texts_and_words_test, two_way_bootstrap_ci

METRIC = "delta_per_token"


def planted(term_shifts, control_shifts, *, n_texts: int = 40, noise: float = 0.05, seed: int = 0):
    """Every word once in every text, delta = the word's shift + small noise: words move, texts do not."""
    rng = np.random.default_rng(seed)

    def rows(shifts, prefix):
        words = [f"{prefix}{i}" for i in range(len(shifts))]
        frame = pd.DataFrame(
            [(f"t{t}", w, s) for t in range(n_texts) for w, s in zip(words, shifts, strict=True)],
            columns=["text_id", "term", METRIC],
        )
        frame[METRIC] += rng.normal(0, noise, len(frame))
        return frame

    return rows(term_shifts, "term"), rows(control_shifts, "ctrl")


def test_word_shifts_alone_give_a_ci_holding_0_as_the_test_does():
    """6 term words whose mean shift (+0.27) is small against their spread (sd 1.2): the word-level test
    (and so p_value) does not reject; the text-only CI excluded 0, the CI now holds it."""
    terms, controls = planted([2.0, -1.0, 1.5, -0.5, 0.8, -1.2], [0.3, -0.3, 0.1, -0.1, 0.2, -0.2])
    test = texts_and_words_test(terms, controls, METRIC)
    old = two_way_bootstrap_ci(terms, controls, METRIC, words=False)
    assert test["p_value"] > 0.05 and test["p_text"] < 1e-6  # the texts alone would call it a rise
    assert old[0] > 0, old  # the former CI: clear of 0
    assert test["ci_low"] < 0 < test["ci_high"], (test["ci_low"], test["ci_high"])
    assert test["ci_low"] <= test["mean_diff"] <= test["ci_high"]
    assert texts_and_words_test(terms, controls, METRIC) == test  # seeded: the same CI every time


def test_a_large_planted_word_difference_still_excludes_0():
    """Term words 3 above the control words (spread 0.5 on each side): the CI stays clear of 0."""
    rng = np.random.default_rng(1)
    terms, controls = planted(3 + rng.normal(0, 0.5, 8), rng.normal(0, 0.5, 20), noise=0.5)
    test = texts_and_words_test(terms, controls, METRIC)
    assert test["p_value"] < 0.05
    assert 2 < test["ci_low"] < test["mean_diff"] < test["ci_high"] < 4, test


def test_with_words_fixed_it_is_the_former_text_bootstrap():
    """words=False resamples texts only, draw for draw the CI `paired_test` gives over the per-text pairs."""
    terms, controls = simulate_cell(np.random.default_rng(3), 30, 6, 12, 1.0, 1.0)
    per_a = cast(pd.Series, terms.groupby("text_id")[METRIC].mean())
    per_b = cast(pd.Series, controls.groupby("text_id")[METRIC].mean())
    shared = per_a.index.intersection(per_b.index)
    former = paired_test(np.asarray(per_a.loc[shared]), np.asarray(per_b.loc[shared]), n_boot=500, seed=4)
    got = two_way_bootstrap_ci(terms, controls, METRIC, n_boot=500, seed=4, words=False)
    assert got == pytest.approx((former.ci_low, former.ci_high), rel=1e-12, abs=1e-12)


def test_no_ci_without_two_words_or_two_texts_on_a_side():
    """One term word has no word-level spread to resample (as one text has none): NaN, not a narrow CI."""
    terms, controls = planted([1.0], [0.0, 0.5, -0.5])
    assert all(math.isnan(v) for v in two_way_bootstrap_ci(terms, controls, METRIC))
    test = texts_and_words_test(terms, controls, METRIC)
    assert math.isnan(test["ci_low"]) and math.isnan(test["ci_high"]) and not math.isnan(test["mean_diff"])
    terms, controls = planted([1.0, 2.0], [0.0, 0.5])
    first = [cast(pd.DataFrame, f.loc[f["text_id"] == "t0"]) for f in (terms, controls)]
    one_text = two_way_bootstrap_ci(first[0], first[1], METRIC)
    assert all(math.isnan(v) for v in one_text)


def test_nan_occurrences_are_left_out_as_the_point_estimate_leaves_them():
    """A NaN delta is out of the CI as of mean_diff; an infinite one in a paired text makes the CI NaN, as
    it makes mean_diff."""
    terms, controls = simulate_cell(np.random.default_rng(5), 30, 6, 12, 1.0, 0.0)
    holed = terms.copy()
    holed.loc[holed.index[:3], METRIC] = np.nan
    dropped = two_way_bootstrap_ci(holed.dropna(), controls, METRIC, n_boot=300)
    assert two_way_bootstrap_ci(holed, controls, METRIC, n_boot=300) == dropped
    holed.loc[holed.index[holed["text_id"].isin(controls["text_id"]).to_numpy()][-1], METRIC] = -np.inf
    assert math.isnan(texts_and_words_test(holed, controls, METRIC, n_boot=300, n_perm=99)["mean_diff"])
    assert all(math.isnan(v) for v in two_way_bootstrap_ci(holed, controls, METRIC, n_boot=300))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 2**16), st.floats(0, 2), st.floats(0, 2), st.floats(-5, 5))
def test_a_shift_of_every_term_moves_the_ci_by_as_much(seed, word, text, shift):
    """Every draw's per-text difference moves by the shift: the CI is shift-equivariant, for any data."""
    terms, controls = simulate_cell(np.random.default_rng(seed), 15, 4, 6, word, text)
    lo, hi = two_way_bootstrap_ci(terms, controls, METRIC, n_boot=200, seed=seed)
    moved = terms.assign(**{METRIC: terms[METRIC] + shift})
    lo2, hi2 = two_way_bootstrap_ci(moved, controls, METRIC, n_boot=200, seed=seed)
    np.testing.assert_allclose([lo2, hi2], [lo + shift, hi + shift], atol=1e-9, equal_nan=True)
