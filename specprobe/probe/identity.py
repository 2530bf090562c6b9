"""Are two saved results of the same models? Each records the sha256 of its base weights and of its
adapter's weights (`ModelPair.metadata`); an analysis that joins two results refuses a pair whose
recorded weights differ, rather than silently mixing runs. Unknown fingerprints are not checked."""

from __future__ import annotations

from collections.abc import Mapping

#: the fingerprints compared, and how an error names each
WEIGHTS = {"base_weights_sha256": "base weights", "adapter_sha256": "adapter weights"}


def check_same_weights(
    a: Mapping, b: Mapping, what_a: str, what_b: str, keys: tuple[str, ...] = tuple(WEIGHTS)
) -> None:
    """`ValueError` naming both inputs when metadata `a` and `b` record different weights for a `keys` entry."""
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, str) and isinstance(y, str) and x and y and x != y:
            raise ValueError(
                f"{what_a} was made with {WEIGHTS[key]} sha256 {x[:12]}..., but {what_b} with {y[:12]}...: "
                "not the same models (results of different runs)"
            )
