"""Notebook display: every result kind and the Lexicon have `_repr_html_` (summary table + main chart as
inline SVG, no script, no network) and `.chart()` (an altair chart).

Results are real ones from the tiny Llama (compare, layers, patch, logit_attribution, evaluate,
matrix) plus an ExperimentResult and a Lexicon built from them, with dataset text that tries to inject
HTML. The browser test puts every display on one notebook-like page in headless Chromium (a
Content-Security-Policy forbids any request) and checks each chart drew marks, no clip path or
gradient reference crosses outputs, nothing was requested and nothing logged an error.
"""

from __future__ import annotations

import os
import re
from html import escape

import altair as alt
import pandas as pd
import pytest

from specprobe.app.experiment_result import ExperimentResult
from specprobe.core.results import Result
from specprobe.finetune import evaluate, matrix
from specprobe.probe import compare, layers, logit_attribution, patch
from specprobe.reports import notebook
from specprobe.terms.datasets import QARecord
from specprobe.terms.lexicon import Lexicon, TermEntry
from tests.browser import find_chromium, load_page

XSS = "<script>alert('x')</script>"
TEXTS = [
    "The patient had a seizure last month; the budget for the ward was cut.",
    "Chest pain at rest and another seizure. Cirrhosis was ruled out by the team this month.",
    "Cirrhosis with ascites; chest pain resolved. The budget review is next month.",
    "A seizure in the clinic, then chest pain during the long month of budget meetings.",
]
TERMS = {"seizure": ["Neurology", XSS], "chest pain": ["Cardiology"], "cirrhosis": ["Gastroenterology"]}
CONTROLS = ["budget", "month", "team"]


def _questions() -> list[QARecord]:
    out = []
    for i, (spec, q) in enumerate([("Neurology", "seizure"), ("Cardiology", "chest pain")] * 3):
        options = ("seizure", "chest pain", "rash")
        out.append(QARecord(f"q{i}", f"Which sign fits {q} case {i}?", options, options[i % 3], (spec,)))
    return out


@pytest.fixture(scope="module")
def displayed(tiny_llama) -> dict:
    """One object of every kind that has a notebook view."""
    base, adapter = str(tiny_llama[0]), str(tiny_llama[1])
    comp = compare(base, adapter, TERMS, TEXTS, controls=CONTROLS, progress=False)
    by_spec = comp.by_specialty(n_boot=100)
    exp_frame = pd.concat([by_spec.assign(finetune_specialty=s) for s in ("Neurology", "Cardiology")])
    lex_terms = {
        t: TermEntry(t, count=3, specialties=list(s), specific=True, z={s[0]: 2.0}, counts={s[0]: 3})
        for t, s in TERMS.items()
    }
    return {
        "comparison": comp,
        "layers": layers(base, adapter, TERMS, TEXTS, controls=CONTROLS, progress=False),
        "patching": patch(base, adapter, TERMS, TEXTS[:2], layer_ids=[0, 1], progress=False),
        "logit_attribution": logit_attribution(base, adapter, TERMS, TEXTS[:2], progress=False),
        "mc_evaluation": evaluate(base, _questions(), adapter=adapter, progress=False),
        "accuracy_matrix": matrix(base, {"Neurology": adapter}, _questions(), progress=False),
        "experiment": ExperimentResult(exp_frame, {"config": {}, "root": "."}, {"paths": {}}),
        "lexicon": Lexicon(lex_terms, {"specialties": ["Cardiology", "Gastroenterology", "Neurology", XSS]}),
    }


def _marks(svg_html: str) -> int:
    return len(re.findall(r'class="[^"]*role-mark', svg_html))


def test_every_result_kind_has_a_view(displayed):
    from specprobe.reports.views import _VIEWS

    kinds = {k for k in displayed}
    assert kinds == set(_VIEWS), f"views without a test object: {set(_VIEWS) - kinds}"


@pytest.mark.parametrize(
    "kind",
    [
        "comparison",
        "layers",
        "patching",
        "logit_attribution",
        "mc_evaluation",
        "accuracy_matrix",
        "experiment",
        "lexicon",
    ],
)
def test_repr_html_is_a_table_and_an_inline_svg_chart(displayed, kind):
    obj = displayed[kind]
    out = obj._repr_html_()
    assert "<script" not in out.lower(), "a display holds no script"
    urls = set(re.findall(r"https?://[^\s\"')]+", out))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, f"links out: {urls}"
    assert out.count("<table") == 1 and out.count("<svg") >= 1 and _marks(out) >= 1, out[:500]
    assert XSS not in out, "dataset text must be escaped"
    assert "chart not drawn" not in out
    chart = obj.chart()
    assert isinstance(chart, alt.TopLevelMixin)
    assert chart.to_dict()["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert len(out) < 400_000, f"{kind}: display is {len(out)} characters; keep it compact"


def test_two_displays_never_share_svg_ids(displayed):
    a, b = displayed["accuracy_matrix"]._repr_html_(), displayed["accuracy_matrix"]._repr_html_()  # a colour legend
    ids_a, ids_b = set(re.findall(r'\bid="([^"]+)"', a)), set(re.findall(r'\bid="([^"]+)"', b))
    assert ids_a and not ids_a & ids_b
    for out, ids in ((a, ids_a), (b, ids_b)):
        refs = set(re.findall(r"url\(#([^)]+)\)", out))
        assert refs and refs <= ids, f"dangling references: {refs - ids}"


def test_a_chart_that_fails_leaves_a_note(displayed, monkeypatch):
    def broken(chart):
        raise RuntimeError("renderer <gone>")

    monkeypatch.setattr(notebook, "chart_svg", broken)
    out = displayed["lexicon"]._repr_html_()
    assert "chart not drawn: renderer &lt;gone&gt;" in out and "<table" in out


def test_a_kind_without_a_view_shows_its_rows_and_has_no_chart():
    plain = Result(pd.DataFrame({"a": [1, 2, 3]}))
    out = plain._repr_html_()
    assert "<table" in out and "<svg" not in out and "Result: 3 rows" in out
    with pytest.raises(ValueError, match="has no chart"):
        plain.chart()


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        msg = "no Chromium binary (apt-get install -y chromium, or set SPECPROBE_CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)
    return path


PROBES = {
    "outputs": """Array.from(document.querySelectorAll('.specprobe-repr')).map(el => {
        const svg = el.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        const refs = Array.from(el.querySelectorAll('[clip-path], [fill^="url("]')).map(n =>
            (n.getAttribute('clip-path') || n.getAttribute('fill')).match(/url\\(#([^)]+)\\)/)).filter(m => m)
            .map(m => m[1]);
        return {marks: el.querySelectorAll('svg g.role-mark > *').length, width: box.width, height: box.height,
                rows: el.querySelectorAll('table tbody tr').length,
                refs_ok: refs.every(id => { const t = document.getElementById(id); return !!t && el.contains(t); }),
                text: el.innerText};
    })""",
    "injected": "document.querySelectorAll('.specprobe-repr script, .specprobe-repr img, .specprobe-repr iframe').length",
}


def notebook_page(outputs: list[tuple[str, str]]) -> str:
    """A page laid out like a notebook: one 'In [n]' cell per output (test harness, not package code)."""
    cells = "".join(
        f'<div class="cell"><pre class="in">In [{i}]: {escape(code)}</pre><div class="out">{out}</div></div>'
        for i, (code, out) in enumerate(outputs, start=1)
    )
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{csp}">'
        "<style>body{margin:16px;font-family:sans-serif}.cell{margin:0 0 22px}.in{color:#303f9f;margin:0 0 6px}"
        ".out{border-left:3px solid #e0e0e0;padding-left:12px}</style>"
        "<script>window.__specprobe = {done: true};</script></head>"
        f"<body>{cells}</body></html>"
    )


@pytest.mark.slow
def test_displays_draw_in_a_browser(chromium, displayed, tmp_path):
    outputs = [(kind, obj._repr_html_()) for kind, obj in displayed.items()]
    page = tmp_path / "notebook.html"
    page.write_text(notebook_page(outputs), encoding="utf-8")
    run = load_page(page, screenshot=tmp_path / "notebook.png", probes=PROBES, chromium=chromium)
    assert run.status.get("finished")
    assert run.errors == [] and run.external_requests == [] and run.dialogs == []
    assert [r["url"] for r in run.requests] == [run.url]
    assert run.probes["injected"] == 0
    shown = run.probes["outputs"]
    assert len(shown) == len(displayed)
    for (kind, _), out in zip(outputs, shown):
        assert out["marks"] >= 1 and out["width"] > 100 and out["height"] > 50, (kind, out)
        assert out["rows"] >= 1 and out["refs_ok"], (kind, out)
    assert any(XSS in o["text"] for o in shown), "hostile text is shown as text"
    assert run.screenshot is not None and run.screenshot.stat().st_size > 20_000
