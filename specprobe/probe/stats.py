"""Uncertainty for reported numbers: cluster bootstrap CIs (texts are the unit) and paired tests.

Occurrences in one text share its context, so they are not independent: intervals resample whole
texts, and term-vs-control tests pair a term's and the control words' deltas within each text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from specprobe.utils.pvalues import holm as holm  # re-exported: callers import it from here


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int


def cluster_bootstrap_mean(
    values, clusters=None, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean with a percentile bootstrap CI that resamples clusters (e.g. texts) with replacement.

    NaN values are left out; an infinite value makes the mean and CI NaN (not a mean of -inf with a CI
    of one NaN end): leave such rows out first, with a word (`finite_rows`)."""
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    values = values[keep]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    if clusters is None:
        clusters = np.arange(values.size)
    else:
        clusters = np.asarray(clusters)[keep]
    _, cluster_idx = np.unique(clusters, return_inverse=True)
    k = int(cluster_idx.max()) + 1
    sums = np.bincount(cluster_idx, weights=values, minlength=k)
    counts = np.bincount(cluster_idx, minlength=k).astype(float)
    if np.isinf(values).any():
        return Estimate(float("nan"), float("nan"), float("nan"), int(values.size), k)
    mean = float(values.mean())
    if k < 2:
        return Estimate(mean, float("nan"), float("nan"), int(values.size), k)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return Estimate(mean, float(lo), float(hi), int(values.size), k)


def estimate_fields(est: Estimate, occurrences, metric: str) -> dict:
    """The summary columns every per-group table shares, in order: n, n_terms, n_texts, mean_<metric>,
    ci_low, ci_high (`occurrences`: the group's rows, with a `term` column)."""
    return {
        "n": est.n,
        "n_terms": occurrences["term"].nunique(),
        "n_texts": est.n_clusters,
        f"mean_{metric}": est.mean,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
    }


@dataclass(frozen=True)
class PairedTest:
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_pairs: int


def paired_test(a, b, *, n_boot: int = 2000, seed: int = 0) -> PairedTest:
    """Paired differences a - b: mean, bootstrap CI, and a two-sided Wilcoxon signed-rank p-value.

    A pair with a NaN is left out; a pair with an infinite value makes every number NaN (the rank test
    would read -inf as an ordinary small value, and -inf in both a and b would drop the pair unseen)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~np.isnan(a) & ~np.isnan(b)
    if np.isinf(a[both]).any() or np.isinf(b[both]).any():
        return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), int(both.sum()))
    diff = a[both] - b[both]
    if diff.size == 0:
        return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    est = cluster_bootstrap_mean(diff, n_boot=n_boot, seed=seed)
    if diff.size < 2 or np.all(diff == 0):
        p = float("nan") if diff.size < 2 else 1.0
    else:
        # scipy's nan-policy decorator hides the WilcoxonResult return type
        p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)  # pyright: ignore[reportAttributeAccessIssue]
    return PairedTest(est.mean, est.ci_low, est.ci_high, p, int(diff.size))


def finite_rows(frame: pd.DataFrame, what: str = "occurrence") -> pd.DataFrame:
    """The rows of `frame` with a finite `delta`, the ones every summary averages. NaN marks a row that
    could not be scored; an infinite delta (a log-probability of -inf: probability 0 under base or
    tuned) is a real change no mean can hold, so it is left out too, but with a warning naming how many:
    a summary must not silently lose its most extreme values."""
    delta = frame["delta"].to_numpy(dtype=float)
    inf = np.isinf(delta)
    if inf.any():
        first = frame.loc[inf].iloc[0]
        term = f"{first['term']!r} in " if "term" in frame else ""
        where = f" (first: {term}text {first['text_id']!r})" if "text_id" in frame else ""
        warnings.warn(
            f"{int(inf.sum())} {what}(s) have an infinite delta (a log-probability of -inf under base or tuned)"
            f"{where}; they are left out of every mean, CI and test",
            RuntimeWarning,
            stacklevel=3,
        )
    return frame.loc[np.isfinite(delta)]
