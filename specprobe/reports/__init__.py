"""Self-contained HTML reports (one file, charts inlined, no network): `render(result, path)`.

`render` dispatches on `result.kind` to a builder registered with `@register(kind)`; kinds without
one get a generic page (metadata + table). Experiment pages are assembled from sections
(`specprobe.reports.sections`) with `experiment_page([...])`.
"""

from specprobe.reports import sections
from specprobe.reports.page import ChartBlock, ListBlock, MetaBlock, Page, Section, TableBlock, TextBlock, write_page
from specprobe.reports.render import (
    build_page,
    experiment_page,
    generic_page,
    register,
    registered_kinds,
    render,
    render_experiment,
    renderer_for,
)

__all__ = [
    "render",
    "register",
    "renderer_for",
    "registered_kinds",
    "build_page",
    "generic_page",
    "experiment_page",
    "render_experiment",
    "write_page",
    "sections",
    "Page",
    "Section",
    "ChartBlock",
    "TableBlock",
    "MetaBlock",
    "ListBlock",
    "TextBlock",
]
