"""Statistics: cluster bootstrap, paired test, Holm adjustment."""

import numpy as np

from specprobe.probe.stats import cluster_bootstrap_mean, holm, paired_test


def test_bootstrap_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = cluster_bootstrap_mean(rng.normal(1, 1, 20))
    large = cluster_bootstrap_mean(rng.normal(1, 1, 2000))
    assert small.ci_low < small.mean < small.ci_high
    assert large.ci_low < 1 < large.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 5


def test_cluster_bootstrap_is_wider_for_correlated_values():
    rng = np.random.default_rng(2)
    cluster_means = rng.normal(0, 1, 20)
    values = np.repeat(cluster_means, 10) + rng.normal(0, 0.1, 200)
    clusters = np.repeat(np.arange(20), 10)
    naive = cluster_bootstrap_mean(values)
    clustered = cluster_bootstrap_mean(values, clusters)
    assert (clustered.ci_high - clustered.ci_low) > 2 * (naive.ci_high - naive.ci_low)
    assert clustered.n == 200 and clustered.n_clusters == 20


def test_paired_test_detects_shift_and_not_noise():
    rng = np.random.default_rng(3)
    b = rng.normal(0, 1, 60)
    shifted = paired_test(b + 0.5 + rng.normal(0, 0.2, 60), b)
    same = paired_test(b + rng.normal(0, 0.2, 60), b)
    assert shifted.p_value < 1e-6 and shifted.ci_low > 0.3
    assert same.p_value > 0.01 and same.n_pairs == 60


def test_holm():
    out = holm([0.01, 0.04, np.nan, 0.03])
    assert np.allclose(out[[0, 1, 3]], [0.03, 0.06, 0.06]) and np.isnan(out[2])
