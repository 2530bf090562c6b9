"""Reports in a real headless Chromium: no network request, every chart renders with data, no console
errors, dataset text shown as text, tables sort and filter; screenshots are saved.

Needs a Chromium binary (Debian: `apt-get install -y chromium`; or set SPECPROBE_CHROMIUM). Skipped
with a reason where there is none, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest

from specprobe.probe import compare
from specprobe.reports import experiment_page, render
from specprobe.testing.tiny_models import build_tiny_adapter
from tests.browser import find_chromium, load_page
from tests.test_reports_render import XSS, experiment_sections, make_comparison

pytestmark = pytest.mark.slow

XSS_SPECIALTY = "<script>alert('specialty')</script>"
TEXTS = [
    "The patient had a seizure last month; the budget for the ward was cut <script>alert(2)</script>.",
    "Chest pain at rest and another seizure. Cirrhosis was ruled out by the team this month.",
    "Cirrhosis with ascites; chest pain resolved. The budget review is next month.",
    "A seizure in the clinic, then chest pain during the long month of budget meetings.",
]
TERMS = {
    "seizure": ["Neurology", XSS_SPECIALTY],
    "chest pain": ["Cardiology", "Emergency medicine"],
    "cirrhosis": ["Gastroenterology"],
    f"never found {XSS}": ["Neurology"],
}

PROBES = {
    "n_scripts": "document.scripts.length",
    "n_json_specs": "document.querySelectorAll('script[type=\"application/json\"]').length",
    "injected": "document.querySelectorAll('img, iframe, object, embed, main script:not([type=\"application/json\"])').length",
    "xss_text_shown": f"document.body.innerText.includes({XSS!r}) || document.body.innerText.includes({XSS_SPECIALTY!r})",
    "charts": """Array.from(document.querySelectorAll('div.chart')).map(el => {
        const svg = el.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        return {id: el.id, status: el.getAttribute('data-status'), marks: Number(el.getAttribute('data-marks') || 0),
                width: box.width, height: box.height,
                texts: Array.from(el.querySelectorAll('svg text')).map(t => t.textContent).join('|')};
    })""",
    "sort": """(() => {
        const t = document.querySelector('#top-movers table.sortable') || document.querySelector('table.sortable');
        const col = Array.from(t.tHead.rows[0].cells).findIndex(th => th.textContent.startsWith('mean Δ'));
        const read = () => Array.from(t.tBodies[0].rows).map(r => r.cells[col].getAttribute('data-v'))
                                .filter(v => v !== null && v !== '').map(Number);
        t.tHead.rows[0].cells[col].click(); const asc = read();
        t.tHead.rows[0].cells[col].click(); const desc = read();
        return {col: col, asc: asc, desc: desc};
    })()""",
    "filter": """(() => {
        const input = document.querySelector('input[data-filter-for]');
        const table = document.getElementById(input.getAttribute('data-filter-for'));
        input.value = 'seizure'; input.dispatchEvent(new Event('input'));
        const rows = Array.from(table.tBodies[0].rows);
        const shown = rows.filter(r => r.style.display !== 'none');
        const ok = shown.every(r => r.textContent.toLowerCase().includes('seizure'));
        const counter = document.querySelector('[data-count-for="' + table.id + '"]').textContent;
        input.value = ''; input.dispatchEvent(new Event('input'));
        return {total: rows.length, shown: shown.length, ok: ok, counter: counter};
    })()""",
}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        msg = "no Chromium binary (apt-get install -y chromium, or set SPECPROBE_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def real_comparisons(tiny_llama, tmp_path_factory):
    """Two real Comparisons from tiny Llama with two different LoRA adapters."""
    base, adapter = tiny_llama
    other = tmp_path_factory.mktemp("adapters") / "llama-lora-2"
    build_tiny_adapter(base, "llama", other, seed=7)
    out = {}
    for label, ad in (("Neurology", adapter), ("Cardiology", other)):
        out[label] = compare(str(base), str(ad), TERMS, TEXTS, controls=["budget", "month", "team"], progress=False)
    return out


def _check(run, *, min_charts: int) -> None:
    print(f"\nscreenshot: {run.screenshot}  ({run.seconds:.1f}s in the browser)")
    assert run.status.get("finished"), f"charts did not finish: {run.status}"
    assert run.external_requests == [], "the page must not touch the network"
    assert [r["url"] for r in run.requests] == [run.url]
    assert run.errors == [], run.errors
    assert [m for m in run.console if m["type"] == "warning"] == []
    assert run.dialogs == [], "dataset text must never run as script"
    assert run.status["charts"] >= min_charts
    assert run.status["rendered"] == run.status["charts"] and run.status["failed"] == 0
    for chart in run.probes["charts"]:
        assert chart["status"] == "ok", chart
        assert chart["marks"] >= 3 and chart["width"] > 100 and chart["height"] > 50, chart
    assert run.probes["injected"] == 0
    assert run.probes["n_scripts"] == run.probes["n_json_specs"] + 2  # the Vega bundle and the page code
    assert run.probes["xss_text_shown"] is True
    assert run.screenshot is not None and run.screenshot.stat().st_size > 20_000


def test_comparison_report_in_browser(chromium, real_comparisons, tmp_path):
    comp = real_comparisons["Neurology"]
    assert len(comp.scored()) > 10 and comp.missing == [f"never found {XSS}"]
    path = comp.report(tmp_path / "comparison.html")
    size = path.stat().st_size
    print(f"\npage: {path} ({size / 1e6:.2f} MB)")
    run = load_page(path, screenshot=tmp_path / "comparison.png", probes=PROBES, chromium=chromium)
    _check(run, min_charts=3)
    charts = {c["id"]: c for c in run.probes["charts"]}
    assert any("Neurology" in c["texts"] and "control" in c["texts"] for c in charts.values())
    assert any(XSS_SPECIALTY in c["texts"] for c in charts.values()), "axis labels show the text as text"
    sort = run.probes["sort"]
    assert sort["col"] >= 0 and len(sort["asc"]) >= 4
    assert sort["asc"] == sorted(sort["asc"]) and sort["desc"] == sorted(sort["desc"], reverse=True)
    filt = run.probes["filter"]
    assert 0 < filt["shown"] < filt["total"] and filt["ok"] and filt["counter"].startswith(f"{filt['shown']} of")


def test_experiment_report_in_browser(chromium, real_comparisons, tmp_path):
    comps = dict(real_comparisons)
    comps[XSS_SPECIALTY] = make_comparison(seed=3)  # a synthetic third arm with hostile names
    page = experiment_page(
        experiment_sections(comps), title="specprobe experiment (tiny models)", subtitle=f"three adapters; {XSS}"
    )
    path = render(page, tmp_path / "experiment.html")
    print(f"\npage: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    run = load_page(path, screenshot=tmp_path / "experiment.png", probes=PROBES, chromium=chromium)
    _check(run, min_charts=5)
    keep = os.environ.get("SPECPROBE_REPORT_ARTIFACTS")
    if keep:  # e.g. CI artifacts
        os.makedirs(keep, exist_ok=True)
        for f in (path, run.screenshot):
            shutil.copy(f, keep)
