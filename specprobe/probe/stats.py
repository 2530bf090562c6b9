"""Uncertainty for reported numbers: cluster bootstrap CIs (texts are the unit) and paired tests.

Occurrences in one text share its context, so they are not independent: intervals resample whole
texts, and term-vs-control tests pair a term's and the control words' deltas within each text. The
words are a sample too (Clark 1973): `texts_and_words_test` adds a word-level permutation test and
rejects only where both reject (an intersection-union test), and its CI resamples texts and words
(`two_way_bootstrap_ci`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from specprobe.utils.pvalues import holm as holm  # re-exported: callers import it from here

N_PERM = 9999  # word-level permutations (exact enumeration when there are no more labellings than N_PERM + 1)


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


@dataclass(frozen=True)
class WordTest:
    mean_diff: float
    p_value: float
    p_min: float
    n_a: int
    n_b: int


def word_permutation_test(a, b, *, n_perm: int = N_PERM, seed: int = 0) -> WordTest:
    """Words as the random unit: `a`, `b` are per-word mean deltas of two word sets; two-sided permutation
    test of which words carry label a, on the Welch t statistic (studentized, so unequal spreads do not
    bias it: Chung & Romano 2013). Exact when C(n, k) <= n_perm + 1, else n_perm seeded draws, p = (1 + #
    as extreme) / (1 + n_perm). `p_min`: the smallest p these word counts allow (1 word against 9: 0.1).

    NaN values are left out; an infinite one makes every number NaN, as in `paired_test`."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    k, m = a.size, b.size
    nan = float("nan")
    if k == 0 or m == 0 or np.isinf(a).any() or np.isinf(b).any():
        return WordTest(nan, nan, nan, k, m)
    values = np.concatenate([a, b])
    values = values - values.mean()  # centred: the sums of squares below lose no precision
    side = min(k, m)  # the statistic is symmetric in a and b: draw the smaller side's words
    exact = math.comb(k + m, side) <= n_perm + 1
    if exact:
        draws = np.array(list(itertools.combinations(range(k + m), side)), dtype=np.intp)
    else:
        draws = _subsets(k + m, side, n_perm, np.random.default_rng(seed))
    stat = _welch_abs(values, draws, side)
    obs = _welch_abs(values, (np.arange(k) if side == k else np.arange(k, k + m))[None, :], side)[0]
    at_least = stat >= (obs * (1 - 1e-9) if np.isfinite(obs) else obs)
    top = stat >= (stat.max() * (1 - 1e-9) if np.isfinite(stat.max()) else stat.max())
    if exact:
        p, p_min = float(at_least.mean()), float(top.mean())
    else:
        p, p_min = float((1 + at_least.sum()) / (1 + n_perm)), 1 / (1 + n_perm)
    return WordTest(float(a.mean() - b.mean()), p, p_min, k, m)


def _subsets(n: int, size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` uniform random `size`-subsets of range(n), one per row (a partial Fisher-Yates shuffle)."""
    perm = np.tile(np.arange(n, dtype=np.intp), (draws, 1))
    rows = np.arange(draws)
    for c in range(size):
        j = rng.integers(c, n, size=draws)
        perm[rows, c], perm[rows, j] = perm[rows, j], perm[rows, c]
    return perm[:, :size]


def _welch_abs(values: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """|mean of values[idx] - mean of the rest| / its Welch standard error, per row of `idx` (unscaled when
    a side has one word: no spread to estimate; 0/0 is 0 and x/0 is inf, with round-off taken as 0)."""
    n = values.size
    m = n - k
    tiny = 1e-12 * max(1.0, float(np.abs(values).max()))
    sa, sa2 = values[idx].sum(axis=1), (values**2)[idx].sum(axis=1)
    ma, mb = sa / k, (values.sum() - sa) / m
    diff = np.abs(ma - mb)
    diff[diff <= tiny] = 0.0
    if k < 2 or m < 2:
        return diff
    va = np.clip((sa2 - k * ma**2) / (k - 1), 0, None)
    vb = np.clip(((values**2).sum() - sa2 - m * mb**2) / (m - 1), 0, None)
    se = np.sqrt(va / k + vb / m)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > tiny, diff / np.where(se > tiny, se, 1.0), np.where(diff > 0, np.inf, 0.0))


def word_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Each word's (`term`'s) mean delta: the mean over texts of its per-text mean, so a word repeated in
    one text weighs as much as a word said once there."""
    per_text = cast(pd.Series, rows.groupby(["term", "text_id"], sort=True)[metric].mean())
    return cast(pd.Series, per_text.groupby(level="term", sort=True).mean())


def texts_and_words_test(
    a: pd.DataFrame, b: pd.DataFrame, metric: str, *, n_boot: int = 2000, seed: int = 0, n_perm: int = N_PERM
) -> dict:
    """Occurrences of word set a against word set b (columns text_id, term, `metric`), with texts and words
    both random. Over the texts holding both: per text, mean of a minus mean of b (mean_diff; p_text:
    Wilcoxon signed-rank, `paired_test`), with a CI that resamples texts and words (`two_way_bootstrap_ci`),
    and per word, its mean delta there, the a words against the b words (p_word, p_word_min, n_words_a/b:
    `word_permutation_test`).

    p_value = max(p_text, p_word), an intersection-union test (Berger 1982): it rejects only where both
    reject, so it holds its level when either unit carries the spread (a word or a text moving on its
    own); it is 1 where the two differences disagree in sign, and NaN where either test could not run."""
    per_a = cast(pd.Series, a.groupby("text_id")[metric].mean())
    per_b = cast(pd.Series, b.groupby("text_id")[metric].mean())
    shared = list(per_a.index.intersection(per_b.index))
    # n_boot=1: paired_test's CI resamples texts only; the CI reported is the two-way one below
    text = paired_test(per_a.loc[shared].to_numpy(), per_b.loc[shared].to_numpy(), n_boot=1, seed=seed)
    ci_low, ci_high = two_way_bootstrap_ci(a, b, metric, n_boot=n_boot, seed=seed)
    word = word_permutation_test(
        word_means(cast(pd.DataFrame, a[a["text_id"].isin(shared)]), metric),
        word_means(cast(pd.DataFrame, b[b["text_id"].isin(shared)]), metric),
        n_perm=n_perm,
        seed=seed,
    )
    return {
        "mean_diff": text.mean_diff,
        "ci_low": ci_low if math.isfinite(text.mean_diff) else math.nan,
        "ci_high": ci_high if math.isfinite(text.mean_diff) else math.nan,
        "n_pairs": text.n_pairs,
        "n_words_a": word.n_a,
        "n_words_b": word.n_b,
        "p_text": text.p_value,
        "p_word": word.p_value,
        "p_word_min": word.p_min,
        "p_value": intersection_union(text.p_value, word.p_value, text.mean_diff, word.mean_diff),
    }


def two_way_bootstrap_ci(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: str,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    words: bool = True,
) -> tuple[float, float]:
    """Percentile CI of `texts_and_words_test`'s mean_diff (per text holding both, mean of a minus mean of b;
    the mean over those texts) that resamples the texts and, independently, a's words and b's words: the
    pigeonhole (two-way) bootstrap of crossed random effects (Owen 2007; Owen & Eckles 2012).

    Why: resampling texts alone misses the spread of words that move alike in every text (a CI excluding 0
    where the word-level test, and so p_value, does not reject). No resampling is exact for crossed factors
    (McCullagh 2000); this one is conservative, as the test is (an occurrence's own noise moves with its
    text and with its word, so it counts more than once), while the union of a text CI and a word CI held
    the true difference in only 83-94% of simulated cells with word shifts (docs/method.md section 8).
    A text whose drawn words leave it without an a or a b occurrence drops out of that draw. NaN where
    fewer than 2 texts hold both, or (`words`) a side has fewer than 2 words: no spread to resample.
    `words=False`: texts only, draw for draw `paired_test`'s CI (`bench.word_effects` compares the two)."""
    a, b = (cast(pd.DataFrame, f[f[metric].notna()]) for f in (a, b))
    texts = pd.Index(a["text_id"].unique()).intersection(pd.Index(b["text_id"].unique())).sort_values()
    a, b = (cast(pd.DataFrame, f[f["text_id"].isin(texts.tolist())]) for f in (a, b))
    nan = (math.nan, math.nan)
    if texts.size < 2 or (words and min(a["term"].nunique(), b["term"].nunique()) < 2):
        return nan
    if not (np.isfinite(a[metric].to_numpy(float)).all() and np.isfinite(b[metric].to_numpy(float)).all()):
        return nan
    rng = np.random.default_rng(seed)
    cells = [_word_text_cells(f, texts, metric) for f in (a, b)]
    chunk = max(1, 2_000_000 // (texts.size + a["term"].nunique() + b["term"].nunique()))  # bounds memory
    boot = []
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        boot.append(_two_way_draws(rng, n, texts.size, cells, words))
    stat = np.concatenate(boot)
    stat = stat[~np.isnan(stat)]
    if stat.size == 0:
        return nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stat, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _word_text_cells(rows: pd.DataFrame, texts: pd.Index, metric: str) -> sp.csr_matrix:
    """Per word (rows): the summed `metric` per text, then the occurrence count per text (columns: `texts`
    twice, in order), so that one product with the words' draw counts gives both."""
    word, _ = pd.factorize(rows["term"], sort=True)
    text = texts.get_indexer(rows["text_id"])
    values = np.concatenate([rows[metric].to_numpy(dtype=float), np.ones(word.size)])
    where = (np.concatenate([word, word]), np.concatenate([text, text + texts.size]))
    return sp.csr_matrix((values, where), shape=(int(word.max()) + 1, 2 * texts.size))


def _draw_counts(rng: np.random.Generator, n_draws: int, k: int) -> np.ndarray:
    """How often each of k units is drawn, per row, in `n_draws` resamples of k units with replacement."""
    idx = rng.integers(0, k, size=(n_draws, k), dtype=np.int32)  # int32: a third faster than int64
    idx += (np.arange(n_draws, dtype=np.int32) * k)[:, None]
    return np.bincount(idx.ravel(), minlength=n_draws * k).reshape(n_draws, k).astype(float)


def _two_way_draws(
    rng: np.random.Generator, n: int, n_texts: int, cells: list[sp.csr_matrix], words: bool
) -> np.ndarray:
    """`n` bootstrap values of the text-paired mean difference: texts drawn with replacement, then (`words`)
    each side's words; a text left without an a or a b occurrence is out of that draw (NaN: none left)."""
    text_w = _draw_counts(rng, n, n_texts)
    means = []
    for both in cells:
        n_words = cast(tuple[int, int], both.shape)[0]
        word_w = _draw_counts(rng, n, n_words) if words else np.ones((n, n_words))
        summed = np.asarray(word_w @ both)
        means.append((summed[:, :n_texts], summed[:, n_texts:]))
    (sa, ca), (sb, cb) = means
    ok = (ca > 0) & (cb > 0)
    diff = np.where(ok, sa / np.where(ok, ca, 1.0) - sb / np.where(ok, cb, 1.0), 0.0)
    weight = text_w * ok
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight * diff).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def named_word_counts(test: dict, words_a: str, words_b: str) -> dict:
    """`texts_and_words_test`'s result with its word counts under a table's names (n_words_a -> `words_a`,
    n_words_b -> `words_b`), so every contrast's table shows the same p_text, p_word, p_word_min, p_value."""
    out = {k: v for k, v in test.items() if k not in ("n_words_a", "n_words_b")}
    return {**out, words_a: test["n_words_a"], words_b: test["n_words_b"]}


def intersection_union(p_text: float, p_word: float, diff_text: float, diff_word: float) -> float:
    """max of the two p-values (NaN if either is), or 1 where the text- and word-level differences point
    in opposite directions (both rejecting would then claim no one direction)."""
    if math.isnan(p_text) or math.isnan(p_word):
        return float("nan")
    if diff_text * diff_word < 0:
        return 1.0
    return max(p_text, p_word)
