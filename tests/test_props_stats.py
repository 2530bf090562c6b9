"""Property tests (hypothesis): the statistics helpers against references.

* `specprobe.probe.stats.holm` against the textbook Holm-Bonferroni definition (written out here;
  statsmodels' `multipletests(method="holm")` when statsmodels is installed) and against the
  step-down rejection procedure;
* `paired_test`'s p-value against `scipy.stats.wilcoxon` on the paired samples, and its symmetries;
* `cluster_bootstrap_mean` against a direct (loop) implementation of the cluster percentile bootstrap,
  its invariances (shift, scale, NaNs), and a loose check against `scipy.stats.bootstrap`;
* `specprobe.finetune.evaluation.wilson_interval` against the closed form, scipy's
  `binomtest(...).proportion_ci(method="wilson")` (and statsmodels' `proportion_confint` if present),
  and its monotonicity in k and n.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from specprobe.finetune.evaluation import Z95, accuracy_table, wilson_interval
from specprobe.probe.stats import cluster_bootstrap_mean, holm, paired_test

try:
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.proportion import proportion_confint
except ImportError:  # not a dependency: the textbook forms below are the reference then
    multipletests = proportion_confint = None

FAST = settings(max_examples=150, deadline=None, derandomize=True)
SLOWER = settings(max_examples=40, deadline=None, derandomize=True)

p_values = st.floats(0.0, 1.0, allow_nan=False)
maybe_nan_p = st.one_of(p_values, p_values, p_values, st.just(float("nan")))
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


# -- Holm ------------------------------------------------------------------------------------------------------
def holm_textbook(p: list[float]) -> np.ndarray:
    """Holm (1979): with p_(1) <= ... <= p_(m), adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); NaNs are not
    tests. Written from the definition, O(m^2), with no running state shared with the package's loop."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = [i for i in range(len(p)) if not math.isnan(p[i])]
    m = len(idx)
    srt = sorted(idx, key=lambda i: p[i])
    for rank, i in enumerate(srt, start=1):
        out[i] = max(min(1.0, (m - j + 1) * p[srt[j - 1]]) for j in range(1, rank + 1))
    return out


@FAST
@given(st.lists(maybe_nan_p, max_size=30))
def test_holm_matches_the_textbook_definition(p):
    got = holm(p)
    want = holm_textbook(p)
    assert got.shape == (len(p),)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(np.asarray(p, dtype=float)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.skipif(multipletests is None, reason="statsmodels is not installed (textbook reference used instead)")
@FAST
@given(st.lists(p_values, min_size=1, max_size=30))
def test_holm_matches_statsmodels(p):
    import gc
    from unittest import mock

    with mock.patch.object(gc, "collect", lambda *args: 0):  # multipletests runs gc.collect() on every call:
        want = multipletests(p, method="holm")[1]  # ~0.5 s each late in a full test session (88 s in all)
    np.testing.assert_allclose(holm(p), want, rtol=1e-12, atol=0)


@FAST
@given(st.lists(maybe_nan_p, max_size=30))
def test_holm_properties(p):
    raw = np.asarray(p, dtype=float)
    adj = holm(p)
    ok = ~np.isnan(raw)
    m = int(ok.sum())
    r, a = raw[ok], adj[ok]
    assert np.all(a >= r) and np.all(a <= 1.0)  # never below the raw p, never above 1
    assert np.all(a <= np.minimum(1.0, m * r) * (1 + 1e-12))  # never above Bonferroni
    order = np.argsort(r, kind="stable")
    assert np.all(np.diff(a[order]) >= 0)  # monotone in the sorted order of the raw p-values
    for i in range(m):  # equal raw p-values, equal adjusted ones
        assert np.all(a[r == r[i]] == a[i])
    if m:
        assert a.min() == pytest.approx(min(1.0, m * r.min()), rel=1e-12)
    # NaNs are not tests: removing them changes nothing
    np.testing.assert_array_equal(holm(r), a)


@FAST
@given(st.lists(p_values, min_size=1, max_size=30), st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.2]))
def test_holm_rejects_what_the_step_down_procedure_rejects(p, alpha):
    """Holm's step-down test: reject p_(1), p_(2), ... while p_(k) <= alpha / (m - k + 1), stop at the first
    that fails. Adjusted p <= alpha must reject exactly those (ties on the boundary are skipped)."""
    r = np.asarray(p, dtype=float)
    m = len(r)
    srt = np.argsort(r, kind="stable")
    assume(all(abs((m - k) * r[i] - alpha) > 1e-12 for k, i in enumerate(srt)))
    rejected = set()
    for k, i in enumerate(srt):
        if r[i] <= alpha / (m - k):
            rejected.add(int(i))
        else:
            break
    assert set(np.flatnonzero(holm(p) <= alpha).tolist()) == rejected


def test_holm_edge_cases():
    assert holm([]).shape == (0,)
    assert np.isnan(holm([np.nan, np.nan])).all()
    np.testing.assert_array_equal(holm([0.3]), [0.3])
    np.testing.assert_array_equal(holm([0.0, 1.0]), [0.0, 1.0])
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


# -- paired test (Wilcoxon) ------------------------------------------------------------------------------------
def _pairs(min_size=0, max_size=40):
    """Paired samples on a coarse grid (so zeros and ties in the differences occur), NaNs sometimes."""
    value = st.one_of(st.integers(-20, 20).map(lambda v: v / 4), st.floats(-100, 100), st.just(float("nan")))
    return st.integers(min_size, max_size).flatmap(
        lambda n: st.tuples(st.lists(value, min_size=n, max_size=n), st.lists(value, min_size=n, max_size=n))
    )


def _wilcoxon(a, b) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            scipy.stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided", nan_policy="omit").pvalue
        )


@SLOWER
@given(_pairs())
def test_paired_test_p_value_is_scipys_wilcoxon(ab):
    a, b = (np.asarray(x, dtype=float) for x in ab)
    d = a - b
    d = d[~np.isnan(d)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = paired_test(a, b, n_boot=200)
    assert res.n_pairs == d.size
    if d.size == 0:
        assert math.isnan(res.mean_diff) and math.isnan(res.p_value)
        return
    assert res.mean_diff == pytest.approx(float(d.mean()), rel=1e-12, abs=1e-12)
    if d.size < 2:
        assert math.isnan(res.p_value)
    elif np.all(d == 0):
        assert res.p_value == 1.0
    else:
        ref = _wilcoxon(a, b)
        if math.isnan(ref):  # scipy gives no p-value (e.g. a single non-zero difference): neither may we invent one
            assert math.isnan(res.p_value) or 0 <= res.p_value <= 1
        else:
            assert res.p_value == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert math.isnan(res.p_value) or 0.0 <= res.p_value <= 1.0


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_pairs(min_size=2))
def test_paired_test_is_antisymmetric(ab):
    a, b = (np.asarray(x, dtype=float) for x in ab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ab_, ba = paired_test(a, b, n_boot=300), paired_test(b, a, n_boot=300)
    assert ab_.n_pairs == ba.n_pairs
    np.testing.assert_allclose(ba.mean_diff, -ab_.mean_diff, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ba.p_value, ab_.p_value, rtol=1e-9, equal_nan=True)
    # same resampling draws: the CI of b - a is the CI of a - b mirrored
    np.testing.assert_allclose([ba.ci_low, ba.ci_high], [-ab_.ci_high, -ab_.ci_low], atol=1e-9, equal_nan=True)


# -- cluster bootstrap -------------------------------------------------------------------------------------------
def bootstrap_reference(values, clusters, n_boot, level, seed):
    """The cluster percentile bootstrap written out: clusters numbered in sorted label order, each draw
    picks k clusters with replacement (the same generator calls), the statistic is the mean of all
    values in the drawn clusters (a cluster drawn twice counts twice)."""
    values = np.asarray(values, dtype=float)
    clusters = np.asarray(clusters)
    keep = ~np.isnan(values)
    values, clusters = values[keep], clusters[keep]
    labels = sorted(set(clusters.tolist()))
    members = {lab: values[clusters == lab] for lab in labels}
    k = len(labels)
    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    stats = []
    for row in draws:
        picked = [members[labels[j]] for j in row]
        stats.append(sum(float(x.sum()) for x in picked) / sum(len(x) for x in picked))
    alpha = (1 - level) / 2
    return float(np.mean(values)), *np.quantile(stats, [alpha, 1 - alpha])


@st.composite
def clustered(draw, min_size=1, max_size=40, nan=True):
    n = draw(st.integers(min_size, max_size))
    value = st.one_of(finite, st.just(float("nan"))) if nan else finite
    values = draw(st.lists(value, min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from(["t1", "t2", "t3", "t4", "t5", "a", "zz"]), min_size=n, max_size=n))
    return values, labels


@SLOWER
@given(clustered(), st.sampled_from([0.5, 0.8, 0.95]), st.integers(0, 2**16))
def test_cluster_bootstrap_matches_a_direct_implementation(vc, level, seed):
    values, labels = vc
    est = cluster_bootstrap_mean(values, labels, n_boot=200, level=level, seed=seed)
    arr = np.asarray(values, dtype=float)
    ok = ~np.isnan(arr)
    assert est.n == int(ok.sum())
    assert est.n_clusters == len(set(np.asarray(labels)[ok].tolist()))
    if est.n == 0:
        assert math.isnan(est.mean) and math.isnan(est.ci_low) and math.isnan(est.ci_high)
        return
    if est.n_clusters < 2:
        assert math.isnan(est.ci_low) and math.isnan(est.ci_high)
        return
    mean, lo, hi = bootstrap_reference(values, labels, 200, level, seed)
    scale = max(1.0, float(np.abs(arr[ok]).max()))
    assert est.mean == pytest.approx(mean, rel=1e-12, abs=1e-12 * scale)
    assert est.ci_low == pytest.approx(lo, rel=1e-9, abs=1e-9 * scale)
    assert est.ci_high == pytest.approx(hi, rel=1e-9, abs=1e-9 * scale)


@SLOWER
@given(clustered(min_size=2, nan=False))
def test_bootstrap_ci_is_ordered_contains_the_mean_and_lies_in_the_data_range(vc):
    values, labels = vc
    est = cluster_bootstrap_mean(values, labels, n_boot=400, seed=1)
    assume(est.n_clusters >= 2)
    arr = np.asarray(values, dtype=float)
    eps = 1e-9 * max(1.0, float(np.abs(arr).max()))
    assert est.ci_low <= est.ci_high
    assert arr.min() - eps <= est.ci_low and est.ci_high <= arr.max() + eps
    assert est.ci_low - eps <= est.mean <= est.ci_high + eps


@SLOWER
@given(clustered(min_size=2, nan=False), st.floats(-1e3, 1e3), st.floats(1e-3, 1e3))
def test_bootstrap_is_equivariant_under_shift_and_scale(vc, shift, scale):
    values, labels = vc
    est = cluster_bootstrap_mean(values, labels, n_boot=200, seed=3)
    assume(est.n_clusters >= 2)
    moved = cluster_bootstrap_mean(np.asarray(values) * scale + shift, labels, n_boot=200, seed=3)
    tol = 1e-8 * (scale * max(1.0, float(np.abs(values).max())) + abs(shift))
    for got, want in ((moved.mean, est.mean), (moved.ci_low, est.ci_low), (moved.ci_high, est.ci_high)):
        assert got == pytest.approx(want * scale + shift, abs=tol)


@SLOWER
@given(clustered(min_size=2, nan=False))
def test_bootstrap_intervals_are_nested_by_level_and_ignore_nans(vc):
    values, labels = vc
    narrow = cluster_bootstrap_mean(values, labels, n_boot=300, level=0.8, seed=5)
    wide = cluster_bootstrap_mean(values, labels, n_boot=300, level=0.95, seed=5)
    assume(wide.n_clusters >= 2)
    assert wide.ci_low <= narrow.ci_low <= narrow.ci_high <= wide.ci_high
    # NaN values (with their own, otherwise unused, cluster labels) are dropped before anything else
    padded = cluster_bootstrap_mean(
        list(values) + [np.nan, np.nan], list(labels) + ["nan-only", labels[0]], n_boot=300, level=0.95, seed=5
    )
    assert (padded.mean, padded.ci_low, padded.ci_high, padded.n, padded.n_clusters) == (
        wide.mean,
        wide.ci_low,
        wide.ci_high,
        wide.n,
        wide.n_clusters,
    )


def test_bootstrap_without_clusters_is_the_per_value_bootstrap_and_agrees_with_scipy():
    """clusters=None resamples single values; its percentile CI agrees with scipy.stats.bootstrap's
    percentile CI to within Monte-Carlo error (a few % of the width at 4000 draws)."""
    for seed in range(3):
        x = np.random.default_rng(seed).gamma(2.0, 1.0, size=60)
        ours = cluster_bootstrap_mean(x, n_boot=4000, seed=seed)
        same = cluster_bootstrap_mean(x, np.arange(x.size), n_boot=4000, seed=seed)
        assert (ours.ci_low, ours.ci_high) == (same.ci_low, same.ci_high)
        ref = scipy.stats.bootstrap(
            (x,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(100 + seed)
        ).confidence_interval
        width = ref.high - ref.low
        assert abs(ours.ci_low - ref.low) < 0.1 * width and abs(ours.ci_high - ref.high) < 0.1 * width


# -- Wilson interval -----------------------------------------------------------------------------------------------
def wilson_closed_form(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), with p = k/n."""
    p = k / n
    c = p + z**2 / (2 * n)
    h = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    d = 1 + z**2 / n
    return (c - h) / d, (c + h) / d


kn = st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@FAST
@given(kn)
def test_wilson_matches_the_closed_form_and_scipy(kn_):
    k, n = kn_
    lo, hi = wilson_interval(k, n)
    ref_lo, ref_hi = wilson_closed_form(k, n)
    assert lo == pytest.approx(ref_lo, abs=1e-12) and hi == pytest.approx(ref_hi, abs=1e-12)
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)
    if proportion_confint is not None:
        sm_lo, sm_hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert lo == pytest.approx(sm_lo, abs=1e-9) and hi == pytest.approx(sm_hi, abs=1e-9)


@FAST
@given(kn)
def test_wilson_contains_the_estimate_and_is_symmetric(kn_):
    k, n = kn_
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)
    mlo, mhi = wilson_interval(n - k, n)  # failures are successes mirrored
    assert lo == pytest.approx(1 - mhi, abs=1e-12) and hi == pytest.approx(1 - mlo, abs=1e-12)


@FAST
@given(kn)
def test_wilson_is_monotone_in_k(kn_):
    k, n = kn_
    assume(k < n)
    lo, hi = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(k + 1, n)
    assert lo2 > lo and hi2 > hi


@FAST
@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 20))
def test_wilson_narrows_as_n_grows_at_a_fixed_proportion(a, b, m):
    """Same observed proportion k/n, more trials: a strictly narrower interval nested in the old one? Not
    nested in general (the centre moves towards p), but strictly narrower."""
    n = max(a, b)
    k = min(a, b)
    lo, hi = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(k * (m + 1), n * (m + 1))
    assert hi2 - lo2 < hi - lo


@FAST
@given(kn, st.floats(0.1, 4.0))
def test_wilson_widens_with_z(kn_, dz):
    k, n = kn_
    lo, hi = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(k, n, z=Z95 + dz)
    assert lo2 <= lo and hi2 >= hi and (hi2 - lo2) > (hi - lo)


def test_wilson_edge_cases():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    lo, hi = wilson_interval(2.5, 5)  # fractional counts are accepted
    assert lo < 0.5 < hi


@SLOWER
@given(
    st.lists(
        st.tuples(st.sampled_from(["base", "tuned"]), st.sampled_from(["A", "B", "C"]), st.booleans(), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_accuracy_table_counts_and_intervals(rows):
    """accuracy_table: per model and specialty (and ALL), n and n_correct are the counts, acc = k/n, and
    the interval is wilson_interval(k, n)."""
    items = pd.DataFrame(
        {
            "model": [r[0] for r in rows],
            "item_id": [f"q{i}" for i in range(len(rows))],
            "specialties": [(r[1],) for r in rows],
            "correct": [r[2] for r in rows],
            "correct_norm": [r[3] for r in rows],
        }
    )
    table = accuracy_table(items)
    for _, row in table.iterrows():
        sel = items["model"] == row["model"]
        if row["specialty"] != "ALL":
            sel &= items["specialties"].map(lambda s, sp=row["specialty"]: sp in s)
        sub = items[sel]
        assert row["n"] == len(sub) and row["n_correct"] == int(sub["correct"].sum())
        assert row["n_correct_norm"] == int(sub["correct_norm"].sum())
        assert row["acc"] == pytest.approx(row["n_correct"] / row["n"])
        assert (row["acc_lo"], row["acc_hi"]) == pytest.approx(wilson_interval(row["n_correct"], row["n"]))
        assert row["acc_lo"] <= row["acc"] <= row["acc_hi"]
        assert row["acc_norm_lo"] <= row["acc_norm"] <= row["acc_norm_hi"]
    assert set(table["model"]) == set(items["model"])
