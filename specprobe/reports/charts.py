"""Altair (Vega-Lite) chart builders. Every builder takes a small, already aggregated DataFrame.

Keep data small: pages embed each chart's data, so pass aggregates (per specialty, per cell, per
layer), never one row per occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import altair as alt
import numpy as np
import pandas as pd

from specprobe.reports import format as fmt_

DIVERGING = "blueorange"
WIDTH = 560
STEP = 22  # pixels per category row

_VALID = "isValid(datum.{c}) && isFinite(datum.{c})"


def _valid(*cols: str) -> str:
    return " && ".join(_VALID.format(c=c) for c in cols)


def _floats(values: pd.Series) -> pd.Series:
    """`values` as floats, with what is not a number as NaN."""
    return cast(pd.Series, pd.to_numeric(values, errors="coerce")).astype(float)


def _any_finite(df: pd.DataFrame, *cols: str) -> bool:
    ok = pd.Series(True, index=df.index)
    for c in cols:
        ok &= np.isfinite(_floats(cast(pd.Series, df[c])))
    return bool(ok.any())


def _clean(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with non-finite numbers as None (JSON has no NaN) and tuples as strings."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f":
            vals = out[c].astype(float)
            out[c] = vals.astype(object).where(np.isfinite(vals), None)
        elif out[c].dtype == object or str(out[c].dtype).startswith("str"):
            out[c] = out[c].map(lambda v: ", ".join(map(str, v)) if isinstance(v, (tuple, list)) else v)
    return out


def _order(values: Iterable, last: Sequence = ("control",)) -> list:
    """Categories sorted alphabetically, with `last` ones at the end."""
    uniq = [v for v in dict.fromkeys(values) if v is not None]
    head = sorted((v for v in uniq if v not in last), key=str)
    return head + [v for v in last if v in uniq]


def _layer(*charts: alt.Chart, **kwargs) -> alt.LayerChart:
    """`alt.layer`, which only returns a FacetChart when the layers have facet channels (these never do)."""
    return cast(alt.LayerChart, alt.layer(*charts, **kwargs))


SIGNIFICANT_MARK = "*"
SIGNIFICANT_CAPTION = "* : significant after Holm correction (p_holm < 0.05)."


def _num(value: float, fmt: str) -> str:
    """A label number: `fmt` (a Python spec) when given, else the report's form (3 significant digits, signed)."""
    return format(value, fmt) if fmt else fmt_.number(value, signed=True)


def ci_label(mean: float, lo: float, hi: float, fmt: str = "") -> str:
    """A cell label: the mean, and under it the 95% CI when both ends are known."""
    if mean is None or not np.isfinite(mean):
        return ""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return _num(mean, fmt)
    return f"{_num(mean, fmt)}\n[{_num(lo, fmt)}, {_num(hi, fmt)}]"


def heatmap(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    value: str,
    x_title: str,
    y_title: str,
    value_title: str,
    ci_low: str | None = None,
    ci_high: str | None = None,
    diverging: bool = True,
    fmt: str = "",
    scheme: str | None = None,
    domain: Sequence[float] | None = None,
    tooltip_extra: Sequence[str] = (),
    outline_diagonal: bool = True,
    significant: str | None = None,
) -> alt.LayerChart:
    """A cell per (y, x) coloured by `value`, labelled with the value and its CI; the diagonal
    (x == y, e.g. fine-tuned on the specialty of the terms) is outlined; `significant`: a boolean
    column, its true cells get an asterisk in the top right corner (`SIGNIFICANT_MARK`). Labels use
    `fmt` (a Python spec) or, by default, the report's number form. Over 60 lines because it is one
    chart spec (labels, colour scale, tooltips, layers) behind a long keyword signature laid out one
    argument per line."""
    data = df.copy()
    lo = data[ci_low] if ci_low and ci_low in data else pd.Series(np.nan, index=data.index)
    hi = data[ci_high] if ci_high and ci_high in data else pd.Series(np.nan, index=data.index)
    xs, ys = _order(data[x]), _order(data[y])
    cell = max(44, min(96, int(1000 / max(1, len(xs)))))
    if cell < 90:  # too narrow for "mean [lo, hi]": the CI stays in the tooltip and the table
        lo = hi = pd.Series(np.nan, index=data.index)
    data["label"] = [
        ci_label(m, a, b, fmt) for m, a, b in zip(data[value].astype(float), lo.astype(float), hi.astype(float))
    ]
    vals = _floats(cast(pd.Series, df[value]))
    if diverging:
        m = float(vals.abs().max()) if vals.notna().any() and vals.abs().max() > 0 else 1.0
        lo_d, hi_d = list(domain) if domain else [-m, m]
        scale = alt.Scale(scheme=scheme or DIVERGING, domain=[lo_d, hi_d], domainMid=0)  # pyright: ignore[reportArgumentType]  # altair types scheme as a Literal of scheme names
        dark = vals.abs() > 0.55 * max(abs(lo_d), abs(hi_d))  # saturated ends of the diverging scheme
    else:
        lo_d, hi_d = list(domain) if domain else [float(vals.min()), float(vals.max())]
        scale = alt.Scale(scheme=scheme or "viridis", domain=list(domain) if domain else alt.Undefined, zero=False)  # pyright: ignore[reportArgumentType]
        span = (hi_d - lo_d) if np.isfinite(hi_d - lo_d) and hi_d > lo_d else 1.0
        dark = (vals - lo_d) / span < 0.5  # the dark (purple) half of viridis
    data["dark_cell"] = dark.fillna(False).to_numpy()
    data = _clean(data)
    tips = [
        alt.Tooltip(f"{y}:N", title=y_title),
        alt.Tooltip(f"{x}:N", title=x_title),
        alt.Tooltip(f"{value}:Q", title=value_title, format=".4f"),
    ]
    if ci_low and ci_low in df:
        tips += [
            alt.Tooltip(f"{ci_low}:Q", title="95% CI low", format=".4f"),
            alt.Tooltip(f"{ci_high}:Q", title="95% CI high", format=".4f"),
        ]
    tips += [
        alt.Tooltip(f"{c}:Q" if df[c].dtype.kind in "fiu" else f"{c}:N", title=c) for c in tooltip_extra if c in df
    ]
    base = alt.Chart(data).encode(
        x=alt.X(f"{x}:N", title=x_title, sort=xs, axis=alt.Axis(labelAngle=-35, labelLimit=160)),
        y=alt.Y(f"{y}:N", title=y_title, sort=ys, axis=alt.Axis(labelLimit=180)),
    )
    rect = base.mark_rect(stroke="#ffffff", strokeWidth=1).encode(
        color=alt.Color(f"{value}:Q", title=value_title, scale=scale, legend=alt.Legend(orient="right")),
        tooltip=tips,
    )
    text = base.mark_text(fontSize=10, lineBreak="\n").encode(
        text="label:N", tooltip=tips, color=alt.condition("datum.dark_cell", alt.value("#ffffff"), alt.value("#111111"))
    )
    layers = [rect, text]
    if outline_diagonal and set(xs) & set(ys):
        layers.append(
            base.mark_rect(filled=False, stroke="#111111", strokeWidth=2).transform_filter(
                f"datum['{x}'] === datum['{y}']"
            )
        )
    row_h = max(40, int(cell * 0.7))
    if significant and significant in data and bool(data[significant].fillna(False).astype(bool).any()):
        layers.append(_significance_layer(base, significant, cell, row_h))
    return _layer(*layers).properties(width=cell * len(xs), height=row_h * len(ys))


def _significance_layer(base: alt.Chart, column: str, cell: int, row_h: int) -> alt.Chart:
    """An asterisk in the top right corner of every cell whose `column` is true (white on dark cells)."""
    mark = base.mark_text(
        text=SIGNIFICANT_MARK,
        align="right",
        baseline="top",
        dx=cell / 2 - 3,
        dy=-row_h / 2 + 1,
        fontSize=15,
        fontWeight="bold",
    )
    color = alt.condition("datum.dark_cell", alt.value("#ffffff"), alt.value("#111111"))
    return mark.encode(color=color).transform_filter(f"datum['{column}'] === true")


def interval_chart(
    df: pd.DataFrame,
    *,
    category: str,
    value: str,
    ci_low: str,
    ci_high: str,
    value_title: str,
    category_title: str,
    color: str | None = None,
    color_title: str = "",
    reference: float | None = 0.0,
    reference_rule: tuple[float, str] | None = None,
    tooltip_extra: Sequence[str] = (),
    fmt: str = ".4f",
) -> alt.LayerChart:
    """Means with 95% CIs, one row per category (a forest plot). `reference`: a solid rule (e.g. 0);
    `reference_rule`: (value, label) drawn dashed, e.g. the control words' mean. Over 60 lines because it
    is one chart spec (tooltips, colour, layers) behind a long keyword signature laid out one argument
    per line."""
    data = _clean(df)
    cats = _order(df[category])
    y = alt.Y(f"{category}:N", title=category_title, sort=cats, axis=alt.Axis(labelLimit=200))
    tips = [
        alt.Tooltip(f"{category}:N", title=category_title),
        alt.Tooltip(f"{value}:Q", title=value_title, format=fmt),
        alt.Tooltip(f"{ci_low}:Q", title="95% CI low", format=fmt),
        alt.Tooltip(f"{ci_high}:Q", title="95% CI high", format=fmt),
    ]
    tips += [
        alt.Tooltip(f"{c}:Q" if df[c].dtype.kind in "fiu" else f"{c}:N", title=c) for c in tooltip_extra if c in df
    ]
    col = (
        alt.Color(
            f"{color}:N",
            title=color_title or None,
            sort=_order(df[color], last=("control",)),
            scale=alt.Scale(range=["#2f5d9e", "#999999", "#d9822b", "#3a9e5d"]),
        )
        if color
        else alt.value("#2f5d9e")
    )
    base = alt.Chart(data).encode(y=y)
    bars = (
        base.mark_rule(strokeWidth=2)
        .encode(x=alt.X(f"{ci_low}:Q", title=value_title), x2=f"{ci_high}:Q", color=col, tooltip=tips)
        .transform_filter(_valid(ci_low, ci_high))
    )
    points = (
        base.mark_point(filled=True, size=70)
        .encode(x=alt.X(f"{value}:Q", title=value_title), color=col, tooltip=tips)
        .transform_filter(_valid(value))
    )
    layers = []
    if reference is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"ref": [reference]})).mark_rule(color="#444444", strokeWidth=1).encode(x="ref:Q")
        )
    if reference_rule is not None and reference_rule[0] is not None and np.isfinite(reference_rule[0]):
        layers.append(
            alt.Chart(pd.DataFrame({"ref": [reference_rule[0]], "what": [reference_rule[1]]}))
            .mark_rule(color="#999999", strokeDash=[5, 4], strokeWidth=1.5)
            .encode(x="ref:Q", tooltip=alt.Tooltip("what:N", title="reference"))
        )
    if _any_finite(df, ci_low, ci_high):  # an all-empty CI layer would make Vega warn about infinite extents
        layers.append(bars)
    layers.append(points)
    return _layer(*layers).properties(width=WIDTH, height=alt.Step(STEP))


def box_summary(values: pd.Series) -> dict:
    """Tukey box statistics of finite values (whiskers at the most extreme points within 1.5 IQR)."""
    v = _floats(values).to_numpy()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    inside = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "q1": float(q1),
        "median": float(med),
        "q3": float(q3),
        "lo": float(inside.min()),
        "hi": float(inside.max()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def box_chart(
    stats: pd.DataFrame,
    *,
    category: str,
    value_title: str,
    category_title: str,
    group: str | None = None,
    group_title: str = "",
    group_order: Sequence[str] | None = None,
    outliers: pd.DataFrame | None = None,
) -> alt.LayerChart:
    """Pre-aggregated box plots (one per category, optionally split by `group`): the data in the page
    is a few numbers per box, plus at most a capped sample of outlying points. Over 60 lines because it
    is one chart spec (encodings, tooltips, the box's layers) that reads best in one piece."""
    data = _clean(stats)
    cats = _order(stats[category])
    y = alt.Y(f"{category}:N", title=category_title, sort=cats, axis=alt.Axis(labelLimit=200))
    enc: dict[str, Any] = {"y": y}
    if group:
        every = list(group_order or _order(stats[group]))
        g_order = [g for g in every if g in set(stats[group])]
        enc["yOffset"] = alt.YOffset(f"{group}:N", sort=g_order)
        palette = ["#d9822b", "#2f5d9e", "#999999", "#3a9e5d"]
        color = alt.Color(
            f"{group}:N",
            title=group_title or None,
            sort=g_order,
            # a group keeps its colour when another is absent (other terms never take own-specialty orange)
            scale=alt.Scale(domain=g_order, range=[palette[every.index(g) % len(palette)] for g in g_order]),
        )
    else:
        color = alt.Color(
            "is_control:N",
            title="",
            scale=alt.Scale(domain=["clinical terms", "control words"], range=["#2f5d9e", "#999999"]),
        )
    tips = [alt.Tooltip(f"{category}:N", title=category_title)]
    if group:
        tips.append(alt.Tooltip(f"{group}:N", title=group_title or group))
    tips += [
        alt.Tooltip(f"{c}:Q", format=".4f" if c != "n" else "d")
        for c in ("n", "mean", "q1", "median", "q3", "lo", "hi")
    ]
    base = alt.Chart(data).encode(**enc)
    whisker = base.mark_rule(color="#555555").encode(x=alt.X("lo:Q", title=value_title), x2="hi:Q", tooltip=tips)
    box = base.mark_bar(size=12 if not group else 8, opacity=0.85).encode(
        x="q1:Q", x2="q3:Q", color=color, tooltip=tips
    )
    median = base.mark_tick(color="#ffffff", thickness=2, size=12 if not group else 8).encode(
        x="median:Q", tooltip=tips
    )
    mean = base.mark_point(shape="diamond", filled=True, color="#111111", size=30).encode(x="mean:Q", tooltip=tips)
    zero = alt.Chart(pd.DataFrame({"ref": [0.0]})).mark_rule(color="#444444", strokeDash=[2, 2]).encode(x="ref:Q")
    layers = [zero, whisker, box, median, mean]
    if outliers is not None and len(outliers):
        out = _clean(outliers)
        o_enc = {
            "y": y,
            "x": alt.X("value:Q"),
            "tooltip": [alt.Tooltip(f"{category}:N"), alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("term:N")],
        }
        if group:
            o_enc["yOffset"] = alt.YOffset(f"{group}:N", sort=g_order)
        layers.append(alt.Chart(out).mark_point(size=12, opacity=0.5, color="#777777").encode(**o_enc))
    n_groups = stats[group].nunique() if group else 1
    return _layer(*layers).properties(width=WIDTH, height=alt.Step(max(STEP, 12 * n_groups + 6)))


def line_chart(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    series: str | None = None,
    facet: str | None = None,
    ci_low: str | None = None,
    ci_high: str | None = None,
    x_title: str = "",
    y_title: str = "",
    series_title: str = "",
    facet_title: str = "",
    columns: int = 3,
    width: int = 260,
    height: int = 180,
) -> alt.LayerChart | alt.FacetChart:
    """Curves of `y` over `x` (e.g. logit-lens logp over layers), one colour per `series`, one panel
    per `facet`, with a CI band when `ci_low`/`ci_high` are given."""
    data = _clean(df)
    x_enc = alt.X(f"{x}:Q", title=x_title or x, axis=alt.Axis(tickMinStep=1))
    color = alt.Color(f"{series}:N", title=series_title or series) if series else alt.value("#2f5d9e")
    band_color = alt.Color(f"{series}:N", legend=None) if series else alt.value("#2f5d9e")
    tips = [alt.Tooltip(f"{x}:Q", title=x_title or x), alt.Tooltip(f"{y}:Q", title=y_title or y, format=".4f")]
    if series:
        tips.insert(0, alt.Tooltip(f"{series}:N", title=series_title or series))
    if facet:
        tips.insert(0, alt.Tooltip(f"{facet}:N", title=facet_title or facet))
    base = alt.Chart().encode(x=x_enc)
    layers = []
    if ci_low and ci_high and ci_low in df and ci_high in df and _any_finite(df, ci_low, ci_high):
        tips += [
            alt.Tooltip(f"{ci_low}:Q", title="95% CI low", format=".4f"),
            alt.Tooltip(f"{ci_high}:Q", title="95% CI high", format=".4f"),
        ]
        layers.append(
            base.mark_area(opacity=0.18)
            .encode(y=alt.Y(f"{ci_low}:Q", title=y_title or y), y2=f"{ci_high}:Q", color=band_color)
            .transform_filter(_valid(ci_low, ci_high))
        )
    layers.append(
        base.mark_line(point=True)
        .encode(y=alt.Y(f"{y}:Q", title=y_title or y, scale=alt.Scale(zero=False)), color=color, tooltip=tips)
        .transform_filter(_valid(y))
    )
    chart: alt.LayerChart | alt.FacetChart = _layer(*layers, data=data).properties(width=width, height=height)
    if facet:
        chart = chart.facet(
            facet=alt.Facet(f"{facet}:N", title=facet_title or facet, sort=_order(df[facet])), columns=columns
        )
    return chart


def bar_chart(
    df: pd.DataFrame, *, category: str, value: str, category_title: str = "", value_title: str = ""
) -> alt.LayerChart:
    """One horizontal bar per category (e.g. terms per specialty), labelled with its value."""
    data = _clean(df)
    y = alt.Y(f"{category}:N", title=category_title or category, sort=_order(df[category], last=()))
    base = alt.Chart(data).encode(y=y, x=alt.X(f"{value}:Q", title=value_title or value))
    bars = base.mark_bar(color="#2f5d9e").encode(tooltip=[f"{category}:N", f"{value}:Q"])
    labels = base.mark_text(align="left", dx=3, fontSize=11).encode(text=f"{value}:Q")
    return _layer(bars, labels).properties(width=360, height=alt.Step(STEP))
