"""The analyses as plain functions of file paths, for a pipeline stage or a script: read the saved
inputs, run the analysis, save the result (when `out` is given) and return it. No model is loaded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from specprobe.probe.analyses.accuracy_link import AccuracyLink, accuracy_link
from specprobe.probe.analyses.seen_unseen import SeenUnseen, seen_unseen

PathLike = str | os.PathLike


def seen_unseen_files(
    comparison: PathLike,
    adapter: PathLike,
    out: PathLike | None = None,
    *,
    train_data: PathLike | None = None,
    specialty: str | None = None,
    name: str | None = None,
) -> SeenUnseen:
    """`seen_unseen` of a saved Comparison (`comparison.json.gz`) and an adapter directory; saved to `out`."""
    result = seen_unseen(Path(comparison), adapter, train_data, specialty=specialty, name=name)
    if out is not None:
        result.save(out)
    return result


def accuracy_link_files(
    evaluation: PathLike,
    comparisons: PathLike | Mapping[str, PathLike],
    out: PathLike | None = None,
    *,
    tuned: str | None = None,
    metric: str = "delta_per_token",
    norm: bool = False,
) -> AccuracyLink:
    """`accuracy_link` of a saved MCEvaluation or AccuracyMatrix and one saved Comparison (or a mapping
    {the evaluation's model label: comparison path}); saved to `out`."""
    comps: Any = {k: Path(v) for k, v in comparisons.items()} if isinstance(comparisons, Mapping) else Path(comparisons)
    result = accuracy_link(Path(evaluation), comps, tuned=tuned, metric=metric, norm=norm)
    if out is not None:
        result.save(out)
    return result
