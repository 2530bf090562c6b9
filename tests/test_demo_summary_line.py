"""The demo's closing terms-vs-control line counts cells as the report's finding does: Holm across every
tested (adapter, specialty) cell, not the per-adapter p_holm column of each `by_specialty` table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from specprobe.app.demo_cli import shift_line
from specprobe.app.experiment_stages import compare_matrix
from specprobe.utils.pvalues import holm


def _matrix(p_values: list[float], minus_control: list[float]) -> pd.DataFrame:
    n = len(p_values)
    terms = pd.DataFrame(
        {
            "finetune_specialty": [f"m{i // 2}" for i in range(n)],
            "specialty": [f"s{i % 2}" for i in range(n)],
            "mean_delta_per_token": np.linspace(0.1, 0.4, n),
            "minus_control": minus_control,
            "p_value": p_values,
            "p_holm": [0.001] * n,  # per adapter: every cell "significant"; the line must not read it
        }
    )
    control = pd.DataFrame(
        {
            "finetune_specialty": ["m0", "m1"],
            "specialty": ["control", "control"],
            "mean_delta_per_token": [-0.2, -0.1],
            "minus_control": [np.nan, np.nan],
            "p_value": [np.nan, np.nan],
            "p_holm": [np.nan, np.nan],
        }
    )
    return pd.concat([terms, control], ignore_index=True)


def test_the_line_holm_adjusts_across_all_tested_cells():
    # Holm over the 3 tested p-values 0.01, 0.02, 0.04 gives 0.03, 0.04, 0.04: all below 0.05, but the
    # third cell's difference is negative, so 2 cells rose; the NaN cell is untested
    line = shift_line(_matrix([0.01, 0.02, 0.04, np.nan], [0.3, 0.2, -0.1, 0.5]))
    assert "in 2/3 tested cells, 1 untested" in line
    assert "control words -0.150" in line and "over 4 (adapter, specialty) cells" in line


def test_a_cell_significant_only_before_correction_across_cells_is_not_counted():
    # 0.02 and 0.03 across 2 cells: Holm 0.04 and 0.04 -> both count; 0.03 and 0.04 -> 0.06, 0.06 -> none
    assert "in 2/2 tested cells" in shift_line(_matrix([0.02, 0.03], [0.1, 0.1]))
    assert "in 0/2 tested cells" in shift_line(_matrix([0.03, 0.04], [0.1, 0.1]))


class _Fake:
    """A Comparison stand-in whose by_specialty table has each adapter's own (within-adapter) p_holm."""

    def __init__(self, p_values: list[float]):
        self.p_values = p_values

    def by_specialty(self, metric: str) -> pd.DataFrame:
        p = np.array([*self.p_values, np.nan])
        return pd.DataFrame({"specialty": ["s0", "s1", "control"], "p_value": p, "p_holm": holm(p)})


def test_compare_matrix_csv_holm_adjusts_across_every_cell_as_the_report():
    """compare_matrix.csv's p_holm was each adapter's own Holm (0.02 for p 0.01 with 2 specialties), a weaker
    correction than the report's heatmap and finding; it is now Holm across every tested cell of the matrix."""
    matrix = compare_matrix({"m0": _Fake([0.01, 0.02]), "m1": _Fake([0.04, 0.5])})
    terms = matrix[matrix["specialty"] != "control"]
    np.testing.assert_allclose(terms["p_holm"], holm([0.01, 0.02, 0.04, 0.5]))
    np.testing.assert_allclose(terms["p_holm"], [0.04, 0.06, 0.08, 0.5])
    assert bool(matrix.loc[matrix["specialty"] == "control", "p_holm"].isna().all())
