"""What a notebook shows of each result kind (and of the `Lexicon`): a title, a small table, the main chart.

Each view is registered with `@view(kind)` and built from the report's own chart builders
(`charts.py`, `sections.py`), so `.chart()` and the notebook show what the report leads with. The
tables are aggregates with bootstrap CIs (`N_BOOT` draws, fewer than the report's 2,000, so a
display stays quick); `.report(path)` has the full analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from specprobe.reports import charts
from specprobe.reports import sections as S
from specprobe.reports.page import ChartBlock, Section
from specprobe.utils.pvalues import holm

N_BOOT = 500


@dataclass
class View:
    """A title line, a small table, a chart (an altair chart or None) and a caption saying what it shows."""

    title: str
    table: pd.DataFrame
    chart: Any = None
    caption: str = ""


ViewBuilder = Callable[[Any, int], View]
_VIEWS: dict[str, ViewBuilder] = {}


def view(kind: str) -> Callable[[ViewBuilder], ViewBuilder]:
    """Decorator: `builder(obj, n_boot) -> View` is the notebook view of objects whose `kind` is `kind`."""

    def deco(fn: ViewBuilder) -> ViewBuilder:
        _VIEWS[kind] = fn
        return fn

    return deco


def build_view(obj: Any, *, n_boot: int = N_BOOT) -> View:
    """The registered view of `obj` (by its `kind`), or a generic one: its first rows, no chart."""
    builder = _VIEWS.get(str(getattr(obj, "kind", "result")))
    if builder is None:
        frame = obj.to_pandas()
        return View(f"{type(obj).__name__}: {len(frame)} rows", frame)
    return builder(obj, n_boot)


def main_chart(obj: Any, *, n_boot: int = N_BOOT) -> Any:
    """The main altair chart of a result or lexicon; a ValueError when its kind has none."""
    chart = build_view(obj, n_boot=n_boot).chart
    if chart is None:
        raise ValueError(f"a {type(obj).__name__} has no chart; use .to_pandas() or .report(path)")
    return chart


def _short(name: Any, limit: int = 40) -> str:
    """A long model path shortened to its last two parts (the full one is in `.metadata`)."""
    text = str(name)
    parts = text.replace("\\", "/").rstrip("/").split("/")
    return text if len(text) <= limit or len(parts) < 3 else "…/" + "/".join(parts[-2:])


def _title(obj: Any, what: str) -> str:
    meta = getattr(obj, "metadata", {}) or {}
    models = " · ".join(f"{k}: {_short(meta[k])}" for k in ("base", "tuned") if meta.get(k))
    return f"{type(obj).__name__}: {what}" + (f" · {models}" if models else "")


def _first_chart(section: Section) -> Any:
    found = [b for b in section.blocks if isinstance(b, ChartBlock)]
    return found[0].chart if found else None


def _pick(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return cast(pd.DataFrame, frame[[c for c in columns if c in frame]])


# -- probe results ------------------------------------------------------------------------------------------
@view("comparison")
def comparison_view(result: Any, n_boot: int) -> View:
    """Per term specialty: mean Δ logp/token with its CI next to the control words (the report's lead chart)."""
    metric = "delta_per_token"
    table = result.by_specialty(metric, n_boot=n_boot)
    title = _title(result, f"{len(result)} occurrences")
    if table.empty:
        return View(title, table, None, "No scored occurrences.")
    chart = _first_chart(Section("", S._terms_vs_control_charts(table, metric)))
    cols = ["specialty", "n", "n_terms", f"mean_{metric}", "ci_low", "ci_high", "minus_control", "p_holm"]
    caption = f"Δ logp per token (tuned − base), 95% CIs over texts ({n_boot} bootstrap draws)."
    return View(title, _pick(table, cols), chart, caption)


@view("layers")
def layers_view(result: Any, n_boot: int) -> View:
    """Tuned − base logp/token over layers, one line per specialty; the table holds the last layer."""
    table = result.by_specialty(n_boot=n_boot)
    title = _title(result, f"{len(result)} rows, {result.n_layers} layers")
    if table.empty:
        return View(title, table, None, "No scored occurrences.")
    delta = cast(pd.DataFrame, table[table["model"] == "delta"])
    chart = charts.line_chart(
        delta, x="layer", y="mean", series="specialty", x_title="layer", y_title="tuned − base, logp/token"
    ).properties(width=420, height=240)
    last = cast(pd.DataFrame, table[table["layer"] == table["layer"].max()])
    summary = last.pivot_table(index="specialty", columns="model", values="mean")
    summary = summary.reindex(columns=[m for m in ("base", "tuned", "delta") if m in summary]).reset_index()
    summary.columns.name = None
    caption = f"Logit lens; table: mean logp/token at the last layer (layer {int(table['layer'].max())})."
    return View(title, summary, chart, caption)


@view("patching")
def patching_view(result: Any, n_boot: int) -> View:
    """Pooled share of the Δ recovered by patching each layer's component, per direction."""
    table = result.by_site(n_boot=n_boot)
    title = _title(result, f"{len(result)} rows")
    if table.empty:
        return View(title, table, None, "No scored occurrences.")
    chart = charts.line_chart(
        table, x="layer", y="pooled_recovered", series="component", facet="direction", columns=2,
        x_title="layer", y_title="share of Δ recovered",
    )  # fmt: skip
    top = table.reindex(table["pooled_recovered"].abs().sort_values(ascending=False).index)
    cols = ["direction", "layer", "component", "n", "pooled_recovered", "mean_recovered", "ci_low", "ci_high"]
    return View(title, _pick(top, cols), chart, "Table: the sites that recover the most, first.")


@view("logit_attribution")
def attribution_view(result: Any, n_boot: int) -> View:
    """Mean change of each layer part's direct contribution to the clinical terms' logits."""
    d = result.delta()
    title = _title(result, f"{len(result)} rows")
    terms = cast(pd.DataFrame, d[~d["is_control"].astype(bool)])
    if terms.empty:
        return View(title, terms, None, "No clinical-term occurrences.")
    agg = cast(pd.DataFrame, terms.groupby(["layer", "component"], as_index=False)["delta"].mean())
    chart = charts.line_chart(
        agg, x="layer", y="delta", series="component", x_title="layer", y_title="tuned − base, contribution"
    ).properties(width=420, height=240)
    top = agg.reindex(cast(pd.Series, agg["delta"]).abs().sort_values(ascending=False).index)
    return View(title, top, chart, "Clinical terms, mean over occurrences; table: largest changes first.")


# -- fine-tuning results -----------------------------------------------------------------------------------
@view("mc_evaluation")
def mc_view(result: Any, n_boot: int) -> View:
    """Multiple-choice accuracy per specialty with Wilson 95% intervals."""
    table = result.accuracy()
    title = _title(result, f"{len(result)} scored questions")
    if table.empty:
        return View(title, table, None, "No questions.")
    data = table.copy()
    several = data["model"].nunique() > 1
    data["row"] = [f"{m} · {s}" if several else s for m, s in zip(data["model"], data["specialty"])]
    chart = charts.interval_chart(
        data, category="row", value="acc", ci_low="acc_lo", ci_high="acc_hi", value_title="accuracy",
        category_title="specialty", reference=None, fmt=".3f",
    )  # fmt: skip
    cols = ["model", "specialty", "n", "acc", "acc_lo", "acc_hi", "acc_norm"]
    return View(title, _pick(table, cols), chart, "Accuracy with Wilson 95% intervals.")


@view("accuracy_matrix")
def accuracy_matrix_view(result: Any, n_boot: int) -> View:
    """The accuracy heatmap of the report (fine-tuned on × test specialty)."""
    from specprobe.reports.render import accuracy_matrix_page

    page = accuracy_matrix_page(result)
    chart = page.charts()[0].chart if page.charts() else None
    summary = result.table("acc").reset_index()
    summary.columns.name = None
    return View(_title(result, f"{len(result.models)} models"), summary, chart, "Accuracy (acc), model × specialty.")


# -- the experiment and the lexicon -------------------------------------------------------------------------
@view("experiment")
def experiment_view(result: Any, n_boot: int) -> View:
    """The compare matrix: fine-tuning specialty × term specialty heatmap of mean Δ logp/token."""
    frame = result.to_pandas()
    title = _title(result, f"{frame['finetune_specialty'].nunique() if len(frame) else 0} adapters")
    if frame.empty:
        return View(title, frame, None, "No comparisons.")
    if "p_value" in frame:  # one family, as the report reads it (each Comparison's p_holm is Holm within its model)
        frame = frame.assign(p_holm=holm(frame["p_value"]))  # the control words' row has no test (NaN)
    section = S.delta_heatmap_section(frame, term="specialty", value="mean_delta_per_token")
    terms = frame[frame["specialty"] != "control"]  # the control words' row is no term specialty
    g = terms.groupby("finetune_specialty")
    own = terms[terms["finetune_specialty"] == terms["specialty"]].groupby("finetune_specialty")
    summary = pd.DataFrame(
        {
            "mean Δ/token, all term specialties": g["mean_delta_per_token"].mean(),
            "own specialty": own["mean_delta_per_token"].mean(),
            "mean terms − control": g["minus_control"].mean(),
        }
    ).reset_index(names="finetune_specialty")
    caption = (
        "Mean Δ logp/token of the terms of each specialty (column 'control': the control words); * : the terms "
        "differ from the control words in the same "
        f"texts (p_holm < 0.05; {S.TERMS_VS_CONTROL_TEST})"
    )
    return View(title, summary, _first_chart(section), caption)


@view("lexicon")
def lexicon_view(lexicon: Any, n_boot: int) -> View:
    """Specific terms per specialty (bar chart) and each specialty's strongest terms."""
    stats = lexicon.stats()
    per = stats["specific_per_specialty"]
    rows = [
        {"specialty": s, "specific terms": n, "top terms": ", ".join(e.term for e in lexicon.for_specialty(s)[:4])}
        for s, n in per.items()
    ]
    table = pd.DataFrame(rows, columns=["specialty", "specific terms", "top terms"])
    title = f"Lexicon: {stats['terms']} terms, {stats['specific_terms']} specific, {len(per)} specialties"
    chart = charts.bar_chart(table, category="specialty", value="specific terms") if len(table) else None
    return View(title, table, chart, "Top terms: strongest corpus signal first.")
