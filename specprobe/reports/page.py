"""A report page: sections of blocks (charts, tables, metadata, lists, text), rendered to one HTML file.

Everything taken from data is escaped by the template (Jinja2 autoescape); chart specs are
embedded as JSON in `<script type="application/json">` with `<`, `>` and `&` written as unicode
escapes, so dataset text can never close a tag. The Vega, Vega-Lite and Vega-Embed JavaScript is
inlined once per page (from vl-convert), so the file works offline and makes no network request.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specprobe.reports import format as fmt
from specprobe.utils.io import atomic_write_text

__all__ = [
    "Page",
    "Section",
    "ChartBlock",
    "TableBlock",
    "MetaBlock",
    "ListBlock",
    "TextBlock",
    "Finding",
    "FindingsBlock",
    "write_page",
]

_ANCHOR_BAD = re.compile(r"[^a-z0-9]+")


def anchor(text: str) -> str:
    """A URL-fragment-safe id derived from a title."""
    a = _ANCHOR_BAD.sub("-", str(text).lower()).strip("-")
    return a or "section"


def spec_json(spec: Mapping) -> str:
    """JSON for embedding inside a `<script>` element: no `<`, `>`, `&` or JS line separators survive."""
    text = json.dumps(_finite(spec), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _finite(obj: Any) -> Any:
    """NaN/inf become null (JSON has no NaN); numpy scalars become Python ones."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- blocks -------------------------------------------------------------------------------------
@dataclass
class ChartBlock:
    """An altair chart (or a ready Vega-Lite spec dict), rendered client-side as SVG."""

    chart: Any
    title: str = ""
    caption: str = ""
    block: str = field(default="chart", init=False)
    anchor: str = field(default="", init=False)

    @property
    def spec(self) -> dict:
        if isinstance(self.chart, Mapping):
            return dict(self.chart)
        return self.chart.to_dict()

    @property
    def spec_json(self):
        from markupsafe import Markup

        return Markup(spec_json(self.spec))


@dataclass
class Cell:
    text: str
    key: Any = None  # sort key (numbers sort numerically; None sorts last)
    num: bool = False


@dataclass
class Column:
    name: str
    title: str = ""  # tooltip: what the number means


@dataclass
class TableBlock:
    """A plain HTML table, optionally sortable (click a header) and searchable (filter box)."""

    columns: list[Column]
    rows: list[list[Cell]]
    title: str = ""
    caption: str = ""
    sortable: bool = True
    searchable: bool = True
    block: str = field(default="table", init=False)
    anchor: str = field(default="", init=False)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        title: str = "",
        caption: str = "",
        max_rows: int | None = 500,
        formats: Mapping[str, str] | None = None,
        descriptions: Mapping[str, str] | None = None,
        rename: Mapping[str, str] | None = None,
        sortable: bool = True,
        searchable: bool = True,
    ) -> TableBlock:
        """Build from a DataFrame. Numbers read the same in every table (`reports.format`): 3 significant
        digits, never an exponent, p-value columns as `<0.001`. `formats`: column -> a fixed-point Python
        format spec (".2f", "+.3f") where a column needs one; other specs (".3g") give the common form.
        `descriptions`: column -> header tooltip; `rename`: column -> shown header."""
        formats = dict(formats or {})
        descriptions = dict(descriptions or {})
        rename = dict(rename or {})
        total = len(df)
        if max_rows is not None and total > max_rows:
            df = df.iloc[:max_rows]
            note = f"Showing the first {max_rows} of {total} rows."
            caption = f"{caption} {note}".strip()
        columns = [Column(str(rename.get(c, c)), descriptions.get(c, "")) for c in df.columns]
        rows = [
            [_cell(v, formats.get(c, ""), str(c)) for c, v in zip(df.columns, rec)]
            for rec in df.itertuples(index=False, name=None)
        ]
        return cls(columns, rows, title=title, caption=caption, sortable=sortable, searchable=searchable)


def _cell(value: Any, spec: str = "", column: str = "") -> Cell:
    """One table cell: its text and its sort key. Numbers read as everywhere on a page (`reports.format`:
    p-value columns as `<0.001`, others 3 significant digits); `spec`: a fixed-point Python format
    (".2f") where one is wanted, any other spec (".4g") gives the common form."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return Cell("–", None)
    if isinstance(value, bool):
        return Cell("yes" if value else "no", int(value))
    if isinstance(value, int):
        return Cell(str(value), value, True)
    if isinstance(value, float):
        if math.isnan(value):
            return Cell("–", None, True)
        fixed = spec.endswith(("f", "%")) and not fmt.is_p_column(column) and not fmt.is_count_column(column)
        text = format(value, spec) if fixed else fmt.cell_text(value, column)
        return Cell(text, repr(value), True)
    if isinstance(value, (tuple, list, np.ndarray)):
        items = [str(v) for v in list(value)]
        text = ", ".join(items[:12]) + (f", … ({len(items)} in all)" if len(items) > 12 else "")
        return Cell(text, text.lower())
    text = str(value)
    if len(text) > 300:
        text = text[:300] + "…"
    return Cell(text, text.lower())


@dataclass
class MetaBlock:
    """A nested key/value listing (models, hashes, versions, options)."""

    data: Mapping[str, Any]
    title: str = ""
    block: str = field(default="meta", init=False)
    anchor: str = field(default="", init=False)


@dataclass
class ListBlock:
    items: Sequence[str]
    title: str = ""
    empty: str = "none"
    block: str = field(default="list", init=False)
    anchor: str = field(default="", init=False)


@dataclass
class TextBlock:
    text: str
    muted: bool = False
    block: str = field(default="text", init=False)
    anchor: str = field(default="", init=False)


@dataclass
class Finding:
    """One question of the study, its answer in one sentence, and the number and test behind it.

    `verdict` ("yes", "partly", "not shown", "not tested") colours the line; it must follow from the same
    numbers as `answer` (the builders in `app/findings.py` derive both from one test)."""

    question: str
    answer: str
    evidence: str = ""
    verdict: str = "not tested"
    link: str = ""  # anchor of the section with the details ("" : none)


@dataclass
class FindingsBlock:
    """The findings box: one line per question, shown first on a page."""

    findings: list[Finding]
    block: str = field(default="findings", init=False)
    anchor: str = field(default="", init=False)


Block = ChartBlock | TableBlock | MetaBlock | ListBlock | TextBlock | FindingsBlock


@dataclass
class Section:
    """A titled part of a page: a plain-language `reading` of its numbers (shown first, in a box),
    short notes (what the numbers mean) and blocks."""

    title: str
    blocks: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchor: str = ""
    reading: str = ""


@dataclass
class Page:
    title: str
    sections: list[Section] = field(default_factory=list)
    subtitle: str = ""

    def add(self, *sections: Section | None) -> Page:
        self.sections.extend(s for s in sections if s is not None)
        return self

    def charts(self) -> list[ChartBlock]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, ChartBlock)]

    def to_html(self) -> str:
        return render_html(self)

    def write(self, path: str | os.PathLike) -> Path:
        return write_page(self, path)


# -- rendering ----------------------------------------------------------------------------------
_PAGE_JS = r"""
(function () {
  "use strict";
  // Charts: embed each spec, record what rendered (read by tests through window.__specprobe).
  var status = window.__specprobe = {charts: 0, rendered: 0, failed: 0, marks: {}, errors: [], done: false};
  var nodes = Array.prototype.slice.call(document.querySelectorAll("div.chart[data-spec]"));
  status.charts = nodes.length;
  var jobs = nodes.map(function (el) {
    try {
      var spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
      return vegaEmbed(el, spec, {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}})
        .then(function () {
          var n = el.querySelectorAll("svg g.role-mark > *").length;
          el.setAttribute("data-status", "ok"); el.setAttribute("data-marks", String(n));
          status.marks[el.id] = n; status.rendered += 1;
        })
        .catch(function (err) { fail(el, err); });
    } catch (err) { fail(el, err); return Promise.resolve(); }
  });
  function fail(el, err) {
    el.setAttribute("data-status", "error"); el.textContent = "Chart failed to render: " + err;
    status.failed += 1; status.errors.push(String(err)); console.error(err);
  }
  Promise.all(jobs).then(function () { status.done = true; document.body.setAttribute("data-charts", "done"); });

  // Tables: click a header to sort, type in the box to filter.
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        function key(row) {
          var td = row.cells[col], v = td.getAttribute("data-v");
          if (v === null || v === "") return null;
          var x = Number(v);
          return isNaN(x) ? v : x;
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === null) return y === null ? 0 : 1;  // empty cells last either way
          if (y === null) return -1;
          var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[data-filter-for]"), function (input) {
    var id = input.getAttribute("data-filter-for"), table = document.getElementById(id);
    var counter = document.querySelector('[data-count-for="' + id + '"]');
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase(), shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var hit = !q || row.textContent.toLowerCase().indexOf(q) >= 0;
        row.style.display = hit ? "" : "none"; if (hit) shown += 1;
      });
      if (counter) counter.textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
    });
  });
})();
"""


@functools.lru_cache(maxsize=4)
def vega_javascript(vl_version: str | None = None) -> str:
    """The Vega + Vega-Lite + Vega-Embed bundle from vl-convert (about 0.9 MB; built once per process)."""
    import vl_convert as vlc

    # The stub makes `snippet` required; at run time it defaults to None (the default snippet).
    js = vlc.javascript_bundle(vl_version=vl_version) if vl_version else vlc.javascript_bundle()  # pyright: ignore[reportCallIssue]
    # Cannot happen with the current bundle; guarantees the inline <script> is never closed early.
    return js.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _vegalite_version() -> str | None:
    """The Vega-Lite minor version altair writes specs for, if vl-convert bundles it."""
    import altair as alt
    import vl_convert as vlc

    m = re.match(r"v?(\d+)\.(\d+)", alt.SCHEMA_VERSION)
    if not m:
        return None
    want = f"{m.group(1)}.{m.group(2)}"
    return want if want in vlc.get_vegalite_versions() else None


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("specprobe.reports", "templates"),
        autoescape=True,
        trim_blocks=False,
        lstrip_blocks=False,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["exact"] = fmt.exact  # metadata floats: full precision, never an exponent
    return env


def _assign_anchors(page: Page) -> None:
    seen: dict[str, int] = {}

    def unique(base: str) -> str:
        n = seen.get(base, 0)
        seen[base] = n + 1
        return base if n == 0 else f"{base}-{n + 1}"

    for s in page.sections:
        s.anchor = unique(anchor(s.anchor or s.title))
        for i, b in enumerate(s.blocks):
            kind = b.block
            b.anchor = unique(f"{s.anchor}-{kind}-{i + 1}")


def render_html(page: Page) -> str:
    """The page as one self-contained HTML string."""
    import vl_convert as vlc
    from markupsafe import Markup

    import specprobe
    from specprobe.utils.provenance import now_iso

    _assign_anchors(page)
    has_charts = bool(page.charts())
    vl_version = _vegalite_version()
    template = _environment().get_template("page.html.j2")
    return template.render(
        page=page,
        version=getattr(specprobe, "__version__", ""),
        created=now_iso(),
        has_charts=has_charts,
        vega_js=Markup(vega_javascript(vl_version)) if has_charts else "",
        page_js=Markup(_PAGE_JS),
        vega_version=vlc.get_vega_version(),
        vegalite_version=vl_version or "",
    )


def write_page(page: Page, path: str | os.PathLike) -> Path:
    """Render `page` and write it atomically to `path`."""
    return atomic_write_text(path, render_html(page))


def flatten(items: Iterable[Section | Iterable[Section] | None]) -> list[Section]:
    out: list[Section] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, Section):
            out.append(item)
        else:
            out.extend(flatten(item))
    return out
