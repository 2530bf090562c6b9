"""`render(result, path)`: dispatch on `result.kind` to a registered page builder, write one HTML file.

Adding a renderer for a new result kind is one small function:

    @register("accuracy_matrix")
    def accuracy_matrix_page(result, **options) -> Page:
        return experiment_page([accuracy_heatmap_section(result.to_pandas()), metadata_section(result),
                                method_notes_section(["accuracy"])], title="Accuracy matrix")

Kinds without a renderer get the generic page: the metadata and the result's table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from specprobe.reports import analyses as A
from specprobe.reports import sections as S
from specprobe.reports.page import Page, Section, flatten, write_page

PageBuilder = Callable[..., Page]
_RENDERERS: dict[str, PageBuilder] = {}


def register(kind: str) -> Callable[[PageBuilder], PageBuilder]:
    """Decorator: `builder(result, **options) -> Page` renders results whose `kind` is `kind`."""

    def deco(fn: PageBuilder) -> PageBuilder:
        _RENDERERS[kind] = fn
        return fn

    return deco


def renderer_for(kind: str) -> PageBuilder:
    """The builder registered for `kind`, or the generic one."""
    return _RENDERERS.get(kind, generic_page)


def registered_kinds() -> list[str]:
    return sorted(_RENDERERS)


def build_page(result: Any, **options: Any) -> Page:
    """The report page for any Result (dispatch on `result.kind`)."""
    return renderer_for(getattr(result, "kind", "result"))(result, **options)


def render(result: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Write a self-contained HTML report of `result` to `path` (atomically); returns the path.

    A `Page` (e.g. from `experiment_page`) is written as is."""
    page = result if isinstance(result, Page) else build_page(result, **options)
    return write_page(page, path)


def experiment_page(
    sections: Iterable[Section | Iterable[Section] | None], *, title: str = "specprobe experiment", subtitle: str = ""
) -> Page:
    """A page from a list of sections (None entries are skipped), in the given order."""
    return Page(title, flatten(sections), subtitle=subtitle)


def render_experiment(
    sections: Iterable[Section | Iterable[Section] | None],
    path: str | os.PathLike,
    *,
    title: str = "specprobe experiment",
    subtitle: str = "",
) -> Path:
    return write_page(experiment_page(sections, title=title, subtitle=subtitle), path)


def _subtitle(meta: dict) -> str:
    base, tuned = meta.get("base"), meta.get("tuned")
    if base and tuned:
        return f"base: {base} · fine-tuned: {tuned}"
    return str(base or tuned or "")


def generic_page(result: Any, *, title: str | None = None, max_rows: int = 500, **_: Any) -> Page:
    """Fallback for any Result: its metadata, its extras and its table (first `max_rows` rows)."""
    kind = getattr(result, "kind", "result")
    meta = dict(getattr(result, "metadata", {}) or {})
    frame = result.to_pandas()
    secs = [S.table_section(frame, title=f"Table ({len(frame)} rows)", max_rows=max_rows), S.metadata_section(meta)]
    extras = getattr(result, "extras", None)
    if extras:
        secs.append(Section("Extras", [S.MetaBlock(S._cap(dict(extras)))]))
    return Page(title or f"specprobe {kind}", secs, subtitle=_subtitle(meta))


@register("comparison")
def comparison_page(
    result: Any,
    *,
    title: str | None = None,
    metric: str = "delta_per_token",
    n_boot: int = 2000,
    top_n: int = 300,
    **_: Any,
) -> Page:
    """A Comparison: overview, terms vs control words, distributions, top movers, missing terms,
    metadata and method notes."""
    by_specialty = result.by_specialty(metric, n_boot=n_boot)
    secs = [
        S.overview_section(result, metric=metric),
        S.terms_vs_control_section(result, metric=metric, table=by_specialty),
        S.distributions_section(result, metric=metric),
        S.top_movers_section(result, metric=metric, n=top_n, n_boot=n_boot),
        S.missing_section(result),
        S.metadata_section(result),
        S.method_notes_section(["delta", "ci", "control", "distributions", "top_movers", "missing"]),
    ]
    return Page(title or "specprobe comparison: base vs fine-tuned", secs, subtitle=_subtitle(result.metadata))


@register("accuracy_matrix")
def accuracy_matrix_page(result: Any, *, title: str | None = None, metric: str = "acc", **_: Any) -> Page:
    """An AccuracyMatrix (one row per model x test specialty): heatmap with Wilson CIs, table, metadata."""
    df = result.to_pandas()
    df["fine-tuned on"] = S.accuracy_rows(list(df["model"]), list(df.get("trained_on", df["model"])))
    cols = ["fine-tuned on", "model", "specialty", metric, f"{metric}_lo", f"{metric}_hi", "n"]
    frame = df[[c for c in cols if c in df]]
    secs = [
        S.accuracy_heatmap_section(
            frame,
            train="fine-tuned on",
            test="specialty",
            value=metric,
            ci_low=f"{metric}_lo" if f"{metric}_lo" in frame else None,
            ci_high=f"{metric}_hi" if f"{metric}_hi" in frame else None,
        ),
        S.metadata_section(result),
        S.method_notes_section(["accuracy"]),
    ]
    return Page(title or "specprobe accuracy matrix", secs)


@register("layers")
def layers_page(
    result: Any, *, title: str | None = None, metric: str = "logp_per_token", n_boot: int = 2000, **_: Any
) -> Page:
    """A LayerView: per-specialty logit-lens curves (base vs tuned) and their difference, with CIs."""
    table = result.by_specialty(metric, n_boot=n_boot)
    curves = table[table["model"] != "delta"] if len(table) else table
    delta = table[table["model"] == "delta"] if len(table) else table
    secs = [
        S.layer_curves_section(curves, value="mean", facet="specialty", value_title=f"mean {metric}"),
        S.layer_curves_section(
            delta,
            value="mean",
            facet="specialty",
            value_title=f"tuned − base, {metric}",
            title="Layer curves: tuned minus base",
        ),
        S.metadata_section(result),
        S.method_notes_section(["layers", "ci"]),
    ]
    return Page(title or "specprobe layer view (logit lens)", secs, subtitle=_subtitle(result.metadata))


# the analyses of saved results (seen vs unseen terms, term change vs accuracy change): reports/analyses.py
register("seen_unseen")(A.seen_unseen_page)
register("accuracy_link")(A.accuracy_link_page)
# the analyses that run models (over training, general text): reports/analyses.py too
register("trajectory")(A.trajectory_page)
register("general_text_shift")(A.general_text_page)
