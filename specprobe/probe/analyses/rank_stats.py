"""Spearman rank correlation with a cluster bootstrap CI and a stratified permutation test.

Used by `accuracy_link`: x is a question's mean term delta, y its accuracy (or margin) change.
- The CI resamples clusters (questions, with all their adapters' rows) with replacement and
  recomputes the correlation, ranks included (percentile, 95%).
- The permutation test shuffles x *within strata* (the specialty) and keeps y, moving whole clusters:
  a question takes another question's x, each adapter's row that adapter's row of the other question
  (`slots`), so every adapter keeps its own x values. The null is "no association between a question's
  delta and its change within a stratum", and differences between strata and adapters (an adapter that
  raises both everywhere) stay in every permuted sample, so they cannot make the test significant.
  Shuffling each adapter's rows independently instead would count one question's rows under k nearly
  identical adapters as k independent draws (p far too small: 33% of p < 0.05 under the null, 10
  questions, 4 adapters). Two-sided: p = (1 + #{|rho_perm| >= |rho|}) / (1 + n_perm). Where no stratum
  holds two units that differ in both x and y, every permutation gives the observed rho (nothing can be
  shuffled against anything): p is NaN (no test), not 1 (which reads as "no association").
- The unit is the question (the cluster): its rows of several adapters are not independent, so rho (and
  its CI and p) is NaN with fewer than 3 clusters, however many rows they have.
- Both are seeded, and neither depends on the order of the rows: clusters are drawn in sorted label
  order, and the permutations are drawn for the units sorted by (stratum, x, y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 256  # bootstrap / permutation draws handled per vectorised step


@dataclass(frozen=True)
class RankCorrelation:
    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_clusters: int


def rankdata(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """`scipy.stats.rankdata` (average ranks for ties), imported on first use: scipy.stats takes 0.5 s to
    import, and every command line imports this module's package to build its parser."""
    from scipy.stats import rankdata as scipy_rankdata

    return scipy_rankdata(a, axis=axis)


def _rank_corr(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank rows (last axis); NaN where either row is constant."""
    dx = rx - rx.mean(axis=-1, keepdims=True)
    dy = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (dx * dy).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(x, y) -> float:
    """Spearman's rho (average ranks for ties); NaN with fewer than 3 pairs or a constant variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3:
        return float("nan")
    return float(_rank_corr(rankdata(x), rankdata(y)))


def bootstrap_ci(x, y, clusters, *, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile CI of Spearman's rho over cluster-bootstrap resamples (NaN draws are left out)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _, idx = np.unique(np.asarray(clusters), return_inverse=True)
    k = int(idx.max()) + 1 if idx.size else 0
    if k < 3:
        return float("nan"), float("nan")
    members = [np.flatnonzero(idx == c) for c in range(k)]
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_boot, _CHUNK):
        draws = rng.integers(0, k, size=(min(_CHUNK, n_boot - start), k))
        stats.append(_draw_stats(x, y, members, draws))
    boot = np.concatenate(stats)
    boot = boot[np.isfinite(boot)]
    if boot.size < max(10, n_boot // 2):  # mostly degenerate resamples: no honest interval
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _draw_stats(x: np.ndarray, y: np.ndarray, members: list[np.ndarray], draws: np.ndarray) -> np.ndarray:
    """rho for each row of cluster draws; vectorised when every cluster has the same size."""
    sizes = {m.size for m in members}
    if len(sizes) == 1:
        table = np.stack(members)  # clusters x size
        rows = table[draws].reshape(draws.shape[0], -1)
        return _rank_corr(rankdata(x[rows], axis=1), rankdata(y[rows], axis=1))
    out = np.empty(draws.shape[0])
    for i, d in enumerate(draws):
        rows = np.concatenate([members[c] for c in d])
        out[i] = _rank_corr(rankdata(x[rows]), rankdata(y[rows]))
    return out


def permutation_p(x, y, strata=None, *, clusters=None, slots=None, n_perm: int, seed: int) -> float:
    """Two-sided p of Spearman's rho, x permuted within strata (None: one stratum; see the module doc).

    `clusters`: the units that move (default: each row alone). A cluster's rows move together: it takes
    another cluster's x in the same stratum, row by row in `slots` order (an adapter's row takes the
    same adapter's row of the other question), so the rows of one question under several adapters are
    one unit in the test as in the CI, and p is not that of n_adapters independent copies.

    NaN where rho is undefined, and where no permutation can change it (every stratum is a single unit,
    or constant in x or in y: permuting x there leaves rho as it is): the test has nothing to shuffle, and
    its p of exactly 1 would read as "no association" rather than "not testable"."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rx, ry = rankdata(x), rankdata(y)
    observed = _rank_corr(rx, ry)
    if not np.isfinite(observed):
        return float("nan")
    strata = np.zeros(x.size, dtype=int) if strata is None else np.asarray(strata)
    if strata.shape != x.shape:
        raise ValueError(f"strata must give one stratum per value ({x.size}), got shape {strata.shape}")
    _, sidx = np.unique(strata, return_inverse=True)
    blocks = _row_blocks(rx, ry, sidx) if clusters is None else _cluster_blocks(rx, ry, sidx, clusters, slots)
    if not any(_varies(rx[b]) and _varies(ry[b]) for b in blocks):  # every permutation gives the observed rho
        return float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, _CHUNK):
        m = min(_CHUNK, n_perm - start)
        perm = np.tile(np.arange(x.size), (m, 1))
        for b in blocks:  # units x rows: the same shuffle of the units for each of their rows
            order = rng.permuted(np.tile(np.arange(b.shape[0]), (m, 1)), axis=1)
            perm[:, b.ravel()] = b[order].reshape(m, -1)
        stats = _rank_corr(rx[perm], ry[None, :])
        hits += int(np.sum(np.abs(stats) >= abs(observed) - 1e-12))
    return (1 + hits) / (1 + n_perm)


def _row_blocks(rx: np.ndarray, ry: np.ndarray, sidx: np.ndarray) -> list[np.ndarray]:
    """Each stratum's rows as units of one row (a rows x 1 matrix), in a canonical (stratum, x, y) order:
    the p-value is then a function of the data, not of the order its rows came in."""
    order = np.lexsort((ry, rx, sidx))
    groups = [order[sidx[order] == s] for s in range(int(sidx.max()) + 1)]
    return [g[:, None] for g in groups if g.size > 1]


def _cluster_blocks(rx: np.ndarray, ry: np.ndarray, sidx: np.ndarray, clusters, slots) -> list[np.ndarray]:
    """The exchangeable clusters: per stratum and set of slots, a clusters x rows matrix of row indices
    (a cluster's rows in slot order; clusters in a canonical order of their values); groups of one left out."""
    _, cidx = np.unique(np.asarray(clusters), return_inverse=True)
    slot = np.zeros(rx.size, dtype=int) if slots is None else np.unique(np.asarray(slots), return_inverse=True)[1]
    unit = sidx * (int(cidx.max()) + 1) + cidx
    order = np.lexsort((ry, rx, slot, unit))
    groups: dict[tuple, list[np.ndarray]] = {}
    for rows in np.split(order, np.flatnonzero(np.diff(unit[order])) + 1):
        groups.setdefault((int(sidx[rows[0]]), tuple(slot[rows].tolist())), []).append(rows)
    blocks = []
    for members in groups.values():
        if len(members) > 1:
            members.sort(key=lambda r: (tuple(rx[r].tolist()), tuple(ry[r].tolist())))
            blocks.append(np.stack(members))
    return blocks


def _varies(v: np.ndarray) -> bool:
    """Whether `v` holds two different values (of a units x rows block: two units that differ)."""
    return v.shape[0] > 1 and bool(np.any(v != v[0]))


def rank_correlation(
    x,
    y,
    *,
    clusters=None,
    strata=None,
    slots=None,
    n_boot: int = 2000,
    n_perm: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> RankCorrelation:
    """Spearman's rho of finite (x, y) pairs, a cluster-bootstrap CI and a within-strata permutation p.

    `clusters`: the unit of each pair, resampled by the CI and moved whole by the test (default: each pair
    alone); `strata`: the permutation strata (default: one stratum); `slots`: which row of a cluster
    takes which row of another when they are permuted (the adapter of a question's row). All NaN with fewer than 3 clusters (the independent units: a question
    and its rows of several adapters), a constant x or y; p alone NaN where no permutation can change rho
    (see `permutation_p`)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n_all = x.size
    units = clusters  # what the permutation moves (None: each row alone)
    if clusters is None:  # each pair alone, numbered in a canonical (x, y) order, not in the rows' order
        clusters = np.empty(n_all, dtype=int)
        clusters[np.lexsort((y, x))] = np.arange(n_all)
    else:
        clusters = np.asarray(clusters)
    strata = np.zeros(n_all, dtype=int) if strata is None else np.asarray(strata)
    slots = np.zeros(n_all, dtype=int) if slots is None else np.asarray(slots)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, clusters, strata, slots = x[keep], y[keep], clusters[keep], strata[keep], slots[keep]
    n_clusters = int(np.unique(clusters).size)
    rho = spearman(x, y) if n_clusters >= 3 else float("nan")
    if not np.isfinite(rho):
        return RankCorrelation(rho, float("nan"), float("nan"), float("nan"), int(x.size), n_clusters)
    lo, hi = bootstrap_ci(x, y, clusters, n_boot=n_boot, level=level, seed=seed)
    moved = None if units is None else clusters
    p = permutation_p(x, y, strata, clusters=moved, slots=slots, n_perm=n_perm, seed=seed)
    return RankCorrelation(rho, lo, hi, p, int(x.size), n_clusters)
