"""The statistics behind the report's findings, on synthetic Comparisons (no model):

* the minus-control matrix (`specialty_delta_matrix(..., relative_to_control=True)`) is one Holm family
  over every model × term specialty cell, as the heatmap and `shift_finding` read it;
* an occurrence (or general text) whose delta is infinite (a log-probability of -inf) is left out of the
  summaries with a warning, not silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.app.findings import shift_finding
from specprobe.probe import Comparison
from specprobe.probe.analyses.general_text import GeneralTextShift, general_text_row
from specprobe.probe.analyses.trajectory import Trajectory
from specprobe.probe.stats import cluster_bootstrap_mean, holm, paired_test
from specprobe.reports.sections import specialty_delta_matrix

SPECS = ("Cardiology", "Neurology", "Oncology")
TERMS = {f"term{i}": (SPECS[i % len(SPECS)],) for i in range(6)}
CONTROLS = ("river", "table", "window")


def null_comparison(
    seed: int, n_texts: int = 12, shift: float = 0.0, terms: dict = TERMS, controls: tuple = CONTROLS
) -> Comparison:
    """Every term and control word in every text, Δ/token = noise (+ `shift` for the terms)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_texts):
        for word in [*terms, *controls]:
            d = float(rng.normal()) + (shift if word in terms else 0.0)
            rows.append(
                {
                    "text_id": f"q{t}",
                    "term": word,
                    "specialties": terms.get(word, ()),
                    "text_specialties": (),
                    "surface": word,
                    "start": 0,
                    "end": len(word),
                    "n_tokens": 1,
                    "logp_base": -5.0,
                    "logp_tuned": -5.0 + d,
                    "delta": d,
                    "delta_per_token": d,
                    "token_logp_base": [-5.0],
                    "token_logp_tuned": [-5.0 + d],
                    "is_control": word in controls,
                    "flags": "",
                }
            )
    return Comparison(pd.DataFrame(rows), {}, {"missing": []})


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 2**16), min_size=1, max_size=4), st.sampled_from([0.0, 0.6]))
def test_the_minus_control_matrix_is_one_holm_family(seeds, shift):
    """p_holm was Holm within each model: k models gave about k times the false positives of the one
    finding read from the whole matrix (8 models x 8 specialties: a cell marked in 28% of null runs)."""
    comps = {f"model{i}": null_comparison(s, shift=shift) for i, s in enumerate(seeds)}
    matrix = specialty_delta_matrix(comps, n_boot=20, relative_to_control=True)
    assert len(matrix) == len(seeds) * len(SPECS)
    np.testing.assert_allclose(matrix["p_holm"], holm(matrix["p_value"]), equal_nan=True)


def test_a_cell_significant_only_within_its_model_is_not_a_finding():
    """The cell with the smallest p is significant within its own model but not among all the cells.
    (8 terms per specialty and 12 control words, with a small shift: with 2 terms against 3 control words
    the word-level test can give no p below 0.1, and under the null both tests reject too rarely to find.)"""
    terms = {f"term{i}": (SPECS[i % len(SPECS)],) for i in range(24)}
    controls = tuple(f"control{i}" for i in range(12))
    for seed in range(200):
        comps = {f"model{i}": null_comparison(seed * 10 + i, 12, 0.2, terms, controls) for i in range(4)}
        matrix = specialty_delta_matrix(comps, n_boot=20, relative_to_control=True)
        within = np.concatenate([holm(g["p_value"]) for _, g in matrix.groupby("finetune_specialty")])
        if (within < 0.05).any() and not (matrix["p_holm"] < 0.05).any():  # within-model Holm alone marks a cell
            break
    else:
        raise AssertionError("no run with a within-model Holm p < 0.05")
    assert not (matrix["p_holm"] < 0.05).any()
    assert shift_finding(matrix).verdict == "not shown"


def _with_minus_inf(comp: Comparison, term: str, k: int) -> pd.DataFrame:
    """`comp`'s rows with the first `k` occurrences of `term` at probability 0 under tuned."""
    df = comp.to_pandas()
    rows = df.index[df["term"] == term][:k]
    df.loc[rows, ["logp_tuned", "delta", "delta_per_token"]] = -np.inf
    return df


def test_an_infinite_delta_is_left_out_with_a_warning_not_silently():
    """Three occurrences at probability 0 under tuned (the largest fall there is) vanished from
    by_specialty without a word (Cardiology n 24 -> 21, its mean rising -0.2294 -> -0.2275)."""
    df = _with_minus_inf(null_comparison(0), "term0", 3)
    comp = Comparison(df, {}, {"missing": []})
    with pytest.warns(RuntimeWarning, match=r"3 occurrence\(s\) have an infinite delta .*'term0' in text 'q0'"):
        table = comp.by_specialty(n_boot=20)
    assert table.set_index("specialty").loc["Cardiology", "n"] == 21
    traj = Trajectory(pd.DataFrame(df.assign(step=5)[Trajectory.columns]), {}, {"trained_on": ["Cardiology"]})
    with pytest.warns(RuntimeWarning, match="3 occurrence"):
        traj.gap(n_boot=20)
    shift = GeneralTextShift(
        pd.DataFrame(
            {
                "text_id": ["g0", "g1", "g2"],
                "n_tokens": [4, 5, 6],
                "logp_base": [-10.0, -12.0, -9.0],
                "logp_tuned": [-np.inf, -11.0, -9.5],
                "delta": [-np.inf, 1.0, -0.5],
                "delta_per_token": [-np.inf, 0.2, -0.5 / 6],
                "truncated": [False] * 3,
            }
        )
    )
    with pytest.warns(RuntimeWarning, match=r"1 general text\(s\) .*text 'g0'"):
        row = general_text_row(shift, n_boot=20)
    assert row["n_texts"] == 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-100, 100), min_size=2, max_size=12),
    st.integers(0, 11),
    st.sampled_from([np.inf, -np.inf]),
)
def test_an_infinite_value_makes_the_statistics_nan_not_numbers(values, at, inf):
    """cluster_bootstrap_mean([1, 2, -inf, 3]) gave mean -inf with CI [nan, 2.5]; paired_test([inf, 1, 2], 0)
    mean inf, CI [1.0, nan], p 0.25; -inf in both a and b was a NaN difference dropped as if no pair."""
    v = np.asarray(values, dtype=float)
    v[at % v.size] = inf
    est = cluster_bootstrap_mean(v, n_boot=20)
    assert np.isnan([est.mean, est.ci_low, est.ci_high]).all() and est.n == v.size
    for a, b in ((v, np.zeros_like(v)), (np.zeros_like(v), v), (v, v)):
        test = paired_test(a, b, n_boot=20)
        assert np.isnan([test.mean_diff, test.ci_low, test.ci_high, test.p_value]).all()
        assert test.n_pairs == v.size
