"""What the notebook view of an ExperimentResult marks, and what the report's notes say the terms-vs-control
test is: the same family and the same test as `Comparison.by_specialty` and the report's heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specprobe.app.experiment_result import ExperimentResult
from specprobe.reports import sections as S
from specprobe.reports.views import build_view
from specprobe.utils.pvalues import holm

SPECS = ("Cardiology", "Neurology", "Oncology")


def _matrix() -> pd.DataFrame:
    """compare_matrix.csv of 4 adapters: one cell with p = 0.01, every other p = 0.5; p_holm as each
    Comparison writes it (Holm within its own adapter: 0.03 for that cell)."""
    rows = []
    for m in range(4):
        ps = [0.01 if (m, i) == (0, 0) else 0.5 for i in range(len(SPECS))]
        for spec, p, p_holm in zip(SPECS, ps, holm(ps), strict=True):
            rows.append({"finetune_specialty": f"model{m}", "specialty": spec, "p_value": p, "p_holm": p_holm})
        rows.append({"finetune_specialty": f"model{m}", "specialty": "control", "p_value": np.nan, "p_holm": np.nan})
    frame = pd.DataFrame(rows)
    frame["mean_delta_per_token"] = 0.1
    frame["ci_low"], frame["ci_high"] = 0.0, 0.2
    frame["minus_control"] = 0.05
    return frame


def _marked(chart) -> list[dict]:
    """The rows of the chart's data sets whose `significant` flag is set."""
    datasets = chart.to_dict().get("datasets", {})
    return [r for rows in datasets.values() for r in rows if r.get("significant")]


def test_experiment_view_marks_cells_by_holm_across_every_cell():
    """The view marked the model0 × Cardiology cell (Holm within model0: 0.03) that the report, reading all
    12 cells as one family (0.12), leaves unmarked."""
    result = ExperimentResult(_matrix(), {"config": {}, "root": "."}, {"paths": {}})
    view = build_view(result)
    assert _marked(view.chart) == []
    assert "Holm across every model × term specialty cell" in view.caption


def test_a_cell_significant_across_every_cell_is_still_marked():
    frame = _matrix()
    frame.loc[(frame["finetune_specialty"] == "model0") & (frame["specialty"] == "Cardiology"), "p_value"] = 0.001
    view = build_view(ExperimentResult(frame, {"config": {}, "root": "."}, {"paths": {}}))
    marked = _marked(view.chart)
    assert {(r["finetune_specialty"], r["specialty"]) for r in marked} == {("model0", "Cardiology")}


def test_notes_name_the_test_by_specialty_runs():
    """The control note said p was a Wilcoxon test; by_specialty's p_value is the larger of p_text and p_word."""
    note = S.NOTES["control"]
    assert "p_word" in note and "permutation" in note and "the larger" in note
    assert "permutation" in S.TERMS_VS_CONTROL_TEST
