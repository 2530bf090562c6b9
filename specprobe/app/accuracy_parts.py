"""The accuracy matrix measured in parts: one `finetune.matrix` per adapter (the first part also holding the
base), merged into the `AccuracyMatrix` that one call on every adapter builds.

Under a remote executor each adapter's evaluation is its own task; `merge_matrices` puts the parts back
together row for row, so accuracy_matrix.csv is the same file either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

import pandas as pd

from specprobe.core.results import Result
from specprobe.finetune import AccuracyMatrix

__all__ = ["merge_matrices"]


def merge_matrices(parts: Sequence[Result]) -> AccuracyMatrix:
    """One matrix from per-adapter parts, in adapter order (the base, if evaluated, in the first part).

    The rows come as `finetune.matrix` orders them for all models at once (`evaluation.accuracy_table`:
    model after model, in the order evaluated, each model's rows depending on its own items only), so
    the parts' tables follow each other. The metadata is the first part's
    (whose model was loaded first, as in one call) with every part's adapters; the per-item outcomes are
    every part's. Parts evaluated with different prompt formats, or naming one model twice, are refused.
    """
    if not parts:
        raise ValueError("no accuracy parts to merge")
    wrong = [type(p).__name__ for p in parts if not isinstance(p, AccuracyMatrix)]
    if wrong:
        raise TypeError(f"accuracy parts must be AccuracyMatrix results, got {wrong}")
    prompts = {json.dumps(p.metadata.get("prompt"), sort_keys=True) for p in parts}
    if len(prompts) > 1:
        raise ValueError(f"the adapters were evaluated with different prompt formats: {sorted(prompts)}")
    frames = [p.to_pandas() for p in parts]
    models = [m for f in frames for m in dict.fromkeys(f["model"])]
    if len(models) != len(set(models)):
        raise ValueError(f"a model is in more than one accuracy part: {models}")
    table = cast(pd.DataFrame, pd.concat(frames, ignore_index=True))
    metadata = dict(parts[0].metadata)
    metadata["adapters"] = {name: entry for p in parts for name, entry in p.metadata.get("adapters", {}).items()}
    items = {model: outcome for p in parts for model, outcome in p.extras.get("items", {}).items()}
    return AccuracyMatrix(table, metadata, {**parts[0].extras, "items": items})
