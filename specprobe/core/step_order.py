"""Which examples each optimizer step of a training run draws: a seeded permutation per epoch.

One definition for the two places that need it: `finetune` (what a run trains on, and what a resumed
run draws again) and the seen/unseen analysis (`probe.training_data`: which questions a run
shorter than one epoch was shown)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["group_indices"]


def group_indices(n: int, seed: int, epoch: int, k: int, group_size: int) -> list[int]:
    """The example indices of optimizer step k of `epoch`: a seeded permutation, wrapped to full groups."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    need = math.ceil(n / group_size) * group_size
    if need > n:
        perm = np.concatenate([perm, perm[: need - n]] if need - n <= n else [np.resize(perm, need)])[:need]
    return [int(i) for i in perm[k * group_size : (k + 1) * group_size]]
