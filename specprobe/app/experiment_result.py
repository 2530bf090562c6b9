"""`ExperimentResult`: what `run_experiment` returns and saves as experiment.json (the compare matrix as
its table, and the paths of every stage's result, which load lazily)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from specprobe.core.results import Result

if TYPE_CHECKING:
    from specprobe.finetune import AccuracyMatrix
    from specprobe.terms.lexicon import Lexicon


class ExperimentResult(Result):
    """The runner's output: the compare matrix as the table, and paths to every stage's result.

    Sub-results load lazily from their files, so a saved experiment reopens on a machine without
    the models: `ExperimentResult.load("specprobe-demo/experiment.json").report("report.html")`.
    """

    kind = "experiment"

    def __init__(self, frame: pd.DataFrame, metadata: dict | None = None, extras: dict | None = None):
        super().__init__(frame, metadata, extras)
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        if not hasattr(self, "_cache"):  # `Result.load` does not call this class's __init__
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    @property
    def paths(self) -> dict:
        """The result file of every stage: lexicon, accuracy, adapters, comparisons, layers."""
        return self.extras["paths"]

    @property
    def config(self) -> dict:
        """The resolved `ExperimentConfig` of the run, as a dict."""
        return self.metadata["config"]

    @property
    def root(self) -> Path:
        """The run's output folder."""
        return Path(self.metadata["root"])

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter name -> adapter directory."""
        return dict(self.paths["adapters"])

    @property
    def compare_matrix(self) -> pd.DataFrame:
        """Fine-tuning specialty x term specialty (the result's table)."""
        return self.to_pandas()

    @property
    def accuracy(self) -> AccuracyMatrix:
        """The accuracy matrix of the base and every adapter."""
        from specprobe.finetune import AccuracyMatrix

        return self._cached("accuracy", lambda: AccuracyMatrix.load(self.paths["accuracy"]))

    @property
    def comparisons(self) -> dict:
        """Adapter name -> its `Comparison` with the base."""
        from specprobe.probe.comparison import Comparison

        return self._cached(
            "comparisons", lambda: {n: Comparison.load(p) for n, p in self.paths["comparisons"].items()}
        )

    @property
    def layer_views(self) -> dict:
        """Adapter name -> its `LayerView` (empty when the run had layers = false)."""
        from specprobe.probe.layers import LayerView

        return self._cached("layers", lambda: {n: LayerView.load(p) for n, p in self.paths["layers"].items()})

    @property
    def lexicon(self) -> Lexicon:
        """The lexicon built from the test questions."""
        from specprobe.terms.lexicon import Lexicon

        return self._cached("lexicon", lambda: Lexicon.load(self.paths["lexicon"]))

    def report(self, path: str | os.PathLike | None = None) -> Path:
        """The experiment page (default: report.html in the run's folder)."""
        from specprobe.app.report import write_experiment_report

        return write_experiment_report(self, path)
