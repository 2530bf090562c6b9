"""Notebook display: every result (and the `Lexicon`) shows a compact summary table and its main chart.

`Result._repr_html_` and `Lexicon._repr_html_` call `repr_html`; `.chart()` calls `main_chart`, which
returns the altair chart for further styling. What each kind shows (its `View`) is defined in
`specprobe.reports.views`; this module turns a view into HTML.

The chart is rendered to SVG by vl-convert (already a dependency) and inlined: the output holds no
script, loads nothing from the network, and displays wherever the notebook's HTML is shown (Jupyter,
VS Code, static exports). Element ids inside each SVG get a random prefix, so two outputs in one
notebook (even from two kernel sessions) never resolve each other's clip paths or gradients.
"""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pandas as pd

from specprobe.reports.page import _cell
from specprobe.reports.views import N_BOOT, build_view, main_chart

MAX_ROWS = 16


# -- HTML -----------------------------------------------------------------------------------------------
_ID = re.compile(r'\bid="([^"]+)"')


def prefix_svg_ids(svg: str, prefix: str) -> str:
    """`svg` with every element id (and every `url(#id)` / `href="#id"` reference to it) prefixed."""
    ids = set(_ID.findall(svg))
    if not ids:
        return svg
    pattern = re.compile(r'(\bid="|url\(#|href="#)(' + "|".join(re.escape(i) for i in ids) + r')(?=["\)])')
    return pattern.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)


def chart_svg(chart: Any) -> str:
    """An altair chart (or a Vega-Lite spec dict) as an SVG string, rendered offline by vl-convert."""
    import vl_convert as vlc

    from specprobe.reports.page import _vegalite_version, spec_json

    spec = chart if isinstance(chart, dict) else chart.to_dict()
    version = _vegalite_version()
    svg = vlc.vegalite_to_svg(spec_json(spec), vl_version=version) if version else vlc.vegalite_to_svg(spec_json(spec))
    svg = svg[svg.index("<svg") :]  # drop any XML prolog: the SVG sits inside HTML
    return prefix_svg_ids(svg, f"sp{uuid.uuid4().hex[:10]}-")  # unique across kernels and restarts too


def _table_html(table: pd.DataFrame, max_rows: int) -> str:
    """A plain HTML table (every value escaped; numbers right-aligned, formatted as in the reports)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for rec in table.head(max_rows).itertuples(index=False, name=None):
        cells = [_cell(v, ".4g", str(c)) for c, v in zip(table.columns, rec)]  # p columns read as p-values
        rows.append("".join(f'<td class="{"num" if c.num else "txt"}">{html.escape(c.text)}</td>' for c in cells))
    body = f'<table class="specprobe-table"><thead><tr>{head}</tr></thead><tbody>'
    body += "".join(f"<tr>{r}</tr>" for r in rows) + "</tbody></table>"
    if len(table) > max_rows:
        body += f'<div class="specprobe-note">first {max_rows} of {len(table)} rows</div>'
    return body


_STYLE = (
    "<style>.specprobe-repr{font:13px/1.4 system-ui,sans-serif;color:#1d2330}"
    ".specprobe-repr .specprobe-body{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}"
    ".specprobe-repr table.specprobe-table{border-collapse:collapse;font-size:12px}"
    ".specprobe-repr table.specprobe-table th,.specprobe-repr table.specprobe-table td"
    "{border-bottom:1px solid #d9dde5;padding:2px 7px;text-align:left;vertical-align:top}"
    ".specprobe-repr table.specprobe-table td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".specprobe-repr .specprobe-chart{max-width:100%;overflow-x:auto}"
    ".specprobe-repr .specprobe-note{color:#5b6475;font-size:12px;margin-top:4px}</style>"
)


def repr_html(obj: Any, *, n_boot: int = N_BOOT, max_rows: int = MAX_ROWS) -> str:
    """A self-contained HTML fragment for notebooks: title, summary table, the chart as inline SVG.

    A chart that cannot be drawn leaves a one-line note in its place (a display never raises)."""
    v = build_view(obj, n_boot=n_boot)
    parts = [_STYLE, '<div class="specprobe-repr">', f"<div><b>{html.escape(v.title)}</b></div>"]
    parts.append('<div class="specprobe-body">')
    parts.append(f'<div class="specprobe-summary">{_table_html(v.table, max_rows)}</div>')
    if v.chart is not None:
        try:
            parts.append(f'<div class="specprobe-chart">{chart_svg(v.chart)}</div>')
        except Exception as exc:  # noqa: BLE001  (a notebook display must not fail on a chart)
            parts.append(f'<div class="specprobe-note">chart not drawn: {html.escape(str(exc)[:200])}</div>')
    parts.append("</div>")
    note = (html.escape(v.caption) + " " if v.caption else "") + "<code>.chart()</code>: the altair chart; "
    if hasattr(obj, "report"):
        note += "<code>.report(path)</code>: the full report; "
    note += "<code>.to_pandas()</code>: the whole table."
    parts.append(f'<div class="specprobe-note">{note}</div></div>')
    return "".join(parts)


__all__ = ["repr_html", "main_chart", "chart_svg", "prefix_svg_ids"]
