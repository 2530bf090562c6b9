"""The analyses' report pages in headless Chromium: every chart renders with marks, no console error,
no network request. Skipped without a Chromium binary (as tests/test_reports_browser.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from specprobe.probe.analyses import SeenUnseen, accuracy_link
from specprobe.probe.analyses.groups import CONTROL, GROUPS
from tests.browser import find_chromium, load_page
from tests.test_analyses_accuracy_link import case, comparison, evaluation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium binary (apt-get install -y chromium, or set SPECPROBE_CHROMIUM)")
    return path


def synthetic_seen_unseen(seed: int = 0) -> SeenUnseen:
    """Eight texts, each with one term of every group and a control word; seen terms rise most."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(8):
        for k, group in enumerate((*GROUPS, CONTROL)):
            value = float(rng.normal(1.0 / (k + 1), 0.05))
            rows.append(
                {
                    "text_id": f"t{t}",
                    "term": f"{group}-term",
                    "specialties": () if group == CONTROL else ("Cardiology",),
                    "is_control": group == CONTROL,
                    "group": group,
                    "train_count": 3 if group == GROUPS[0] else 0,
                    "n_tokens": 1,
                    "delta": value,
                    "delta_per_token": value,
                }
            )
    extras = {"adapter": "Cardiology", "trained_on": ["Cardiology"]}
    return SeenUnseen(pd.DataFrame(rows, columns=SeenUnseen.columns), {}, extras)


def _check(run, min_charts: int) -> None:
    assert run.status.get("finished"), run.status
    assert run.external_requests == [] and run.errors == [], run.errors
    assert run.status["charts"] >= min_charts and run.status["failed"] == 0
    for chart in run.probes["charts"]:
        assert chart["status"] == "ok" and chart["marks"] >= 3, chart


PROBES = {
    "charts": """Array.from(document.querySelectorAll('div.chart')).map(el => ({
        status: el.getAttribute('data-status'), marks: Number(el.getAttribute('data-marks') || 0)}))"""
}


def test_analysis_pages_render_in_browser(chromium, tmp_path):
    seen = synthetic_seen_unseen().report(tmp_path / "seen_unseen.html")
    _check(load_page(seen, probes=PROBES, chromium=chromium), min_charts=1)
    ids, specs, d, base, tuned = case(5, lambda d, rng: d + rng.normal(0, 0.5, d.size))
    link = accuracy_link(evaluation(ids, base, tuned, specs), comparison(ids, d, specs))
    page = link.report(tmp_path / "accuracy_link.html")
    _check(load_page(page, probes=PROBES, chromium=chromium), min_charts=2)
