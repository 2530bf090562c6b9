"""Section builders: each returns one `Section` (notes saying what the numbers mean + charts/tables).

Renderers and the app layer assemble pages from these; e.g. an experiment page:

    from specprobe.reports import sections as S, experiment_page
    page = experiment_page([
        S.accuracy_heatmap_section(acc_frame),
        S.delta_heatmap_section(S.specialty_delta_matrix({"Cardiology": comp_cardio, ...})),
        S.terms_vs_control_section({"Cardiology": comp_cardio, ...}),
        S.distributions_section({"Cardiology": comp_cardio, ...}),
        S.top_movers_section({"Cardiology": comp_cardio, ...}),
        S.layer_curves_section(layer_frame),
        S.metadata_section(metadata),
        S.method_notes_section(),
    ], title="...")
    page.write("report.html")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.reports import charts
from specprobe.reports import format as fmt
from specprobe.reports.page import (
    Block,
    ChartBlock,
    Finding,
    FindingsBlock,
    ListBlock,
    MetaBlock,
    Section,
    TableBlock,
    TextBlock,
)
from specprobe.utils.pvalues import holm

ALPHA = fmt.ALPHA  # the significance level (`reports.format.ALPHA`)
#: the terms-vs-control test behind a heatmap's asterisks (`stats.texts_and_words_test`, Holm over the cells)
TERMS_VS_CONTROL_TEST = (
    "texts and words both random: p the larger of a Wilcoxon signed-rank test over the texts and a "
    "permutation test over the words; Holm across every model × term specialty cell."
)

#: Short method notes, one per topic; sections quote the ones they need, `method_notes_section` lists them.
NOTES: dict[str, str] = {
    "delta": (
        "Δ logp = log p(term | preceding text) under the fine-tuned model minus the same under the base "
        "model, summed over the term's tokens. Δ/token divides by the number of tokens, so multi-token terms "
        "and one-token control words are on one scale. Positive: fine-tuning made the term more likely."
    ),
    "ci": (
        "95% confidence intervals are percentile bootstraps (2,000 draws; the layer curves 1,000) that resample "
        "texts, because "
        "occurrences in one text share their context; a difference between two sets of words (minus control, "
        "own vs other, seen vs unseen) resamples each set's words too. n = occurrences, n_texts = texts they "
        "occur in."
    ),
    "control": (
        "Control words are ordinary words from the same texts (frequency-matched, or given). Fine-tuning on "
        "medical text can raise every word of the domain; a term's Δ is read against theirs. 'Minus control' "
        "pairs, per text, the mean term Δ/token with the mean control Δ/token (n_pairs texts). Texts and words "
        "are both random: p_text is a two-sided Wilcoxon signed-rank test over the texts, p_word a permutation "
        "test of the term words against the control words, p_value the larger (1 where the two differences disagree in sign); p_holm is its Holm adjustment "
        "(across specialties; in the fine-tuning × term specialty matrix, across every cell)."
    ),
    "heatmap": (
        "Fine-tuning specialty × term specialty: each row is one adapter (the specialty it was fine-tuned on), "
        "each column the specialty of the terms, each cell the mean Δ logp/token with its 95% CI. The outlined "
        "diagonal is 'terms of the specialty the model was fine-tuned on': specialty knowledge shows as a "
        "diagonal that stands out from its row and column."
    ),
    "accuracy": (
        "Multiple-choice accuracy: the share of test questions of the column specialty answered correctly "
        "by the model fine-tuned on the row specialty (the answer is the option with the highest "
        "log-probability). The outlined diagonal is in-specialty accuracy."
    ),
    "distributions": (
        "Box: quartiles of Δ logp/token over occurrences; white tick: median; whiskers: the most "
        "extreme values within 1.5 × IQR; diamond: mean. Unlike the CIs, this shows the spread of "
        "single occurrences."
    ),
    "top_movers": (
        "Terms with the largest absolute mean Δ logp/token. mean logp base/tuned are the mean summed "
        "log-probabilities of the term's occurrences. Click a header to sort; type to filter."
    ),
    "layers": (
        "Logit lens: the log-probability of the term's tokens read out from each layer's hidden state "
        "through the model's final norm and unembedding, for the base and the fine-tuned model. Where the "
        "curves part shows at which depth fine-tuning changes the prediction."
    ),
    "layers_delta": (
        "Logit lens, fine-tuned minus base: per layer, the change in log-probability per token of the clinical "
        "terms and of the control words, read out from that layer's hidden state through the model's final norm "
        "and unembedding (mean over occurrences, 95% CI resampling texts). Where a curve leaves zero is the depth "
        "at which fine-tuning changes the prediction."
    ),
    "missing": "Terms of the lexicon found in no text are listed, never silently dropped.",
    "own_vs_other": (
        "Own specialty vs other specialties: for each fine-tuned model, per text, the mean Δ/token of the terms "
        "of the specialty it was fine-tuned on minus the mean Δ/token of the other specialties' terms in the "
        "same text (texts holding both, n_pairs). The control-word shift is the same for both and cancels. "
        "Texts and words are both random: p_text is a two-sided Wilcoxon signed-rank test over the texts, "
        "p_word a permutation test of the own words against the other words (n_own_words, n_other_words; "
        "p_word_min: the smallest p so few words allow), p_value the larger (1 where the two differences disagree in sign); p_holm: Holm adjustment across "
        "the fine-tuned models."
    ),
    "significance": (
        "An asterisk on a heatmap cell: significant after Holm correction (p_holm < 0.05). Holm adjusts the "
        "p-values of a family of tests so that the chance of any false positive in the family stays under 5%."
    ),
}

METRIC_TITLES = {"delta_per_token": "Δ logp per token", "delta": "Δ logp (summed over tokens)"}
Comparisons = Any  # a Comparison or a mapping label -> Comparison


def _is_mapping(x: Any) -> bool:
    return isinstance(x, Mapping)


def _mean_col(metric: str) -> str:
    return f"mean_{metric}"


# -- comparison sections ----------------------------------------------------------------------
def overview_section(comp, *, title: str = "Overview", metric: str = "delta_per_token") -> Section:
    """Counts: occurrences, terms, texts, control words, unscored occurrences, flags."""
    df = comp.to_pandas()
    scored = comp.scored()
    terms = scored[~scored["is_control"]]
    ctrl = scored[scored["is_control"]]
    flags = pd.Series([f for fl in df["flags"] for f in (str(fl).split(",") if fl else []) if f]).value_counts()
    facts = {
        "occurrences scored": f"{len(scored)} of {len(df)}",
        "clinical terms found": f"{terms['term'].nunique()} ({len(terms)} occurrences in {terms['text_id'].nunique()} texts)",
        "control words": f"{ctrl['term'].nunique()} ({len(ctrl)} occurrences)",
        "terms found in no text": len(comp.missing),
        "mean Δ logp/token, terms": _fmt(terms["delta_per_token"].mean()),
        "mean Δ logp/token, control words": _fmt(ctrl["delta_per_token"].mean()),
        "flags": {str(k): int(v) for k, v in flags.items()} or "none",
    }
    return Section(title, [MetaBlock(facts)], notes=[NOTES["delta"]])


def _fmt(v: float) -> str:
    return fmt.number(v, signed=True)


def terms_vs_control_section(
    comps: Comparisons,
    *,
    metric: str = "delta_per_token",
    n_boot: int = 2000,
    table: pd.DataFrame | None = None,
    title: str = "Clinical terms vs control words",
) -> Section:
    """One Comparison: per term specialty, mean Δ with CI next to the control words, and the paired
    term-minus-control difference with CI and Holm-adjusted p. Several (label -> Comparison): a
    fine-tuning specialty × term specialty heatmap of the term-minus-control difference (`table`: that
    matrix when already computed, `specialty_delta_matrix(..., relative_to_control=True)`)."""
    notes = [NOTES["control"], NOTES["ci"]]
    if _is_mapping(comps):
        frame = (
            table
            if table is not None
            else specialty_delta_matrix(comps, metric=metric, n_boot=n_boot, relative_to_control=True)
        )
        return _terms_vs_control_matrix(frame, metric, title, notes)
    table = cast(pd.DataFrame, comps.by_specialty(metric, n_boot=n_boot)) if table is None else table
    if table.empty:
        return Section(title, [TextBlock("No scored occurrences.", muted=True)], notes=notes)
    blocks = _terms_vs_control_charts(table, metric)
    blocks.append(
        TableBlock.from_frame(
            table.drop(columns=[c for c in ("group",) if c in table]),
            title="Per specialty",
            searchable=False,
        )
    )
    return Section(title, blocks, notes=notes)


def _terms_vs_control_matrix(frame: pd.DataFrame, metric: str, title: str, notes: list[str]) -> Section:
    """Several comparisons: the fine-tuning specialty × term specialty heatmap of terms minus control,
    significant cells marked."""
    mt = METRIC_TITLES.get(metric, metric)
    if frame.empty:
        return Section(title, [TextBlock("No scored clinical terms or control words.", muted=True)], notes=notes)
    return delta_heatmap_section(
        frame,
        metric=metric,
        title=title,
        notes=notes,
        value_title=f"{mt}, terms − control",
        chart_title=f"Mean {mt} of terms minus control words (paired by text)",
        test=TERMS_VS_CONTROL_TEST,
    )


def with_significance(frame: pd.DataFrame, p: str = "p_holm", alpha: float = ALPHA) -> pd.DataFrame:
    """`frame` with a boolean `significant` column (p_holm < alpha; missing p: not significant)."""
    out = frame.copy()
    if p in out:
        values = cast(pd.Series, pd.to_numeric(out[p], errors="coerce")).astype(float)
        out["significant"] = (values < alpha).to_numpy(dtype=bool)  # NaN < alpha is False
    return out


def significance_caption(frame: pd.DataFrame, p: str = "p_holm", test: str = "") -> str:
    """What the asterisks mean, how many cells have one, and the test behind them."""
    if p not in frame:
        return "No per-cell test: no cell is marked."
    values = cast(pd.Series, pd.to_numeric(frame[p], errors="coerce")).astype(float)
    k, n = int(np.sum(frame["significant"].to_numpy(dtype=bool))), int(values.notna().sum())
    tail = f" Test: {test}" if test else ""
    return f"{charts.SIGNIFICANT_CAPTION} {k} of {n} tested cells.{tail}"


def _terms_vs_control_charts(table: pd.DataFrame, metric: str) -> list[Block]:
    """One comparison's per-specialty table as charts: mean with CI next to the control words' mean, then
    the paired term-minus-control difference (or a note that no control words were scored)."""
    mt = METRIC_TITLES.get(metric, metric)
    mean = _mean_col(metric)
    data = table.copy()
    data["group"] = np.where(data["specialty"] == "control", "control words", "clinical terms")
    ctrl = data.loc[data["specialty"] == "control", mean]
    ctrl_mean = float(ctrl.iloc[0]) if len(ctrl) else None
    blocks: list[Block] = [
        ChartBlock(
            charts.interval_chart(
                data,
                category="specialty",
                value=mean,
                ci_low="ci_low",
                ci_high="ci_high",
                value_title=f"mean {mt}",
                category_title="term specialty",
                color="group",
                color_title="",
                reference_rule=(ctrl_mean, "control words' mean") if ctrl_mean is not None else None,
                tooltip_extra=("n", "n_terms", "n_texts"),
            ),
            title=f"Mean {mt} with 95% CI; dashed: control words' mean",
        )
    ]
    diff = cast(pd.DataFrame, data[data["specialty"] != "control"])
    if ctrl_mean is not None and bool(diff["minus_control"].notna().any()):
        blocks.append(
            ChartBlock(
                charts.interval_chart(
                    diff,
                    category="specialty",
                    value="minus_control",
                    ci_low="minus_control_ci_low",
                    ci_high="minus_control_ci_high",
                    value_title=f"{mt}: terms − control",
                    category_title="term specialty",
                    tooltip_extra=("n_pairs", "p_value", "p_holm"),
                ),
                title="Terms minus control words, paired by text, with 95% CI",
            )
        )
    else:
        blocks.append(
            TextBlock("No control words were scored, so there is no term-minus-control comparison.", muted=True)
        )
    return blocks


# by_specialty's test with words as well as texts random: word counts and the two p-values p_value combines
WORD_TEST_COLUMNS = ("n_words", "n_control_words", "p_text", "p_word", "p_word_min")


def specialty_delta_matrix(
    comparisons: Mapping[str, Any],
    *,
    metric: str = "delta_per_token",
    n_boot: int = 2000,
    relative_to_control: bool = False,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Long table for the fine-tuning specialty × term specialty heatmap from {fine-tuning specialty:
    Comparison}: columns finetune_specialty, term_specialty, mean, ci_low, ci_high, n, n_texts (and,
    `relative_to_control`, the paired terms-minus-control difference with n_pairs, the word counts and
    component tests of `Comparison.by_specialty` (WORD_TEST_COLUMNS), p_value and p_holm). `tables`: each
    label's `by_specialty(metric, n_boot=n_boot)` when already computed (its permutation tests then run once).

    p_holm is Holm across every cell of the matrix: the heatmap's asterisks and the report's finding read
    all models × term specialties as one family (Holm within each model let 8 models × 8 specialties
    mark a cell in 28% of null experiments)."""
    rows = []
    for label, comp in comparisons.items():
        table = comp.by_specialty(metric, n_boot=n_boot) if tables is None else tables[label]
        for rec in table.to_dict(orient="records"):
            if rec["specialty"] == "control" and relative_to_control:
                continue
            if relative_to_control:
                rows.append(
                    {
                        "finetune_specialty": str(label),
                        "term_specialty": rec["specialty"],
                        "mean": rec["minus_control"],
                        "ci_low": rec["minus_control_ci_low"],
                        "ci_high": rec["minus_control_ci_high"],
                        "n_pairs": rec["n_pairs"],
                        **{c: rec.get(c, np.nan) for c in WORD_TEST_COLUMNS},
                        "p_value": rec["p_value"],
                    }
                )
            else:
                rows.append(
                    {
                        "finetune_specialty": str(label),
                        "term_specialty": rec["specialty"],
                        "mean": rec[_mean_col(metric)],
                        "ci_low": rec["ci_low"],
                        "ci_high": rec["ci_high"],
                        "n": rec["n"],
                        "n_texts": rec["n_texts"],
                    }
                )
    out = pd.DataFrame(rows)
    if relative_to_control and len(out):
        out["p_holm"] = holm(out["p_value"])
    return out


def delta_heatmap_section(
    frame: pd.DataFrame,
    *,
    finetune: str = "finetune_specialty",
    term: str = "term_specialty",
    value: str = "mean",
    ci_low: str | None = "ci_low",
    ci_high: str | None = "ci_high",
    metric: str = "delta_per_token",
    title: str = "Fine-tuning specialty × term specialty",
    notes: Sequence[str] | None = None,
    value_title: str | None = None,
    chart_title: str | None = None,
    test: str = TERMS_VS_CONTROL_TEST,
) -> Section:
    """The study's second finding: mean Δ logp of terms of each specialty (columns) under each
    specialty's fine-tuned model (rows), with CIs; cells with p_holm < 0.05 (when the frame has p_holm,
    e.g. the minus-control matrix) get an asterisk. `frame`: long format, e.g. `specialty_delta_matrix`."""
    mt = METRIC_TITLES.get(metric, metric)
    notes = list(notes) if notes is not None else [NOTES["heatmap"], NOTES["delta"], NOTES["ci"]]
    if frame is None or frame.empty:
        return Section(title, [TextBlock("No data.", muted=True)], notes=notes)
    frame = with_significance(frame)
    extra = tuple(c for c in ("n", "n_texts", "n_pairs", "p_holm") if c in frame)
    chart = charts.heatmap(
        frame,
        x=term,
        y=finetune,
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        x_title="term specialty",
        y_title="fine-tuned on",
        value_title=value_title or f"mean {mt}",
        tooltip_extra=extra,
        significant="significant" if "significant" in frame else None,
    )
    caption = significance_caption(frame, test=test)
    return Section(
        title,
        [
            ChartBlock(chart, title=chart_title or f"Mean {mt} [95% CI]", caption=caption),
            TableBlock.from_frame(frame, title="Values", max_rows=2000),
        ],
        notes=notes,
    )


def own_specialties(name: str, trained_on: Mapping[str, str | None] | None = None) -> set[str]:
    """The specialties a model was fine-tuned on, lower-cased: from `trained_on` (model -> specialty), else
    its name; none for a model trained on all ("all")."""
    spec = (trained_on or {}).get(name, name)
    return {str(spec).strip().lower()} if spec and str(spec).strip().lower() != "all" else set()


def is_own_term(specialties: Any, own: set[str]) -> bool:
    """Whether a term of `specialties` belongs to a specialty in `own` (lower-cased, see `own_specialties`)."""
    return bool({str(x).lower() for x in specialties} & own)


def accuracy_rows(models: Sequence[Any], trained_on: Sequence[Any]) -> list[str]:
    """The accuracy heatmap's row of each (model, trained_on) pair: the specialty the model was trained on,
    else its name; a specialty that several models were trained on gets each model's name beside it
    ("Neurology (neuro-lr2)"), else their cells would be drawn over one another and one model hidden."""
    labels = [t if isinstance(t, str) and t else str(m) for m, t in zip(models, trained_on)]
    owners: dict[str, set[str]] = {}
    for label, m in zip(labels, models):
        owners.setdefault(label, set()).add(str(m))
    return [f"{label} ({m})" if len(owners[label]) > 1 else label for label, m in zip(labels, models)]


def accuracy_heatmap_section(
    frame: pd.DataFrame,
    *,
    train: str = "train_specialty",
    test: str = "test_specialty",
    value: str = "accuracy",
    ci_low: str | None = None,
    ci_high: str | None = None,
    title: str = "Accuracy: fine-tuning specialty × test specialty",
    notes: Sequence[str] | None = None,
    accuracy_test: str = "",
) -> Section:
    """The study's first finding: accuracy of each specialty's fine-tuned model (rows) on each
    specialty's test questions (columns). `frame`: long format, one row per (train, test) cell; extra
    columns such as n or the base model's accuracy go into tooltips and the table; with a p_holm
    column (e.g. each cell against the base model) cells with p_holm < 0.05 get an asterisk."""
    notes = list(notes) if notes is not None else [NOTES["accuracy"]]
    if frame is None or frame.empty:
        return Section(title, [TextBlock("No data.", muted=True)], notes=notes)
    frame = with_significance(frame)
    extra = tuple(c for c in frame.columns if c not in {train, test, value, ci_low, ci_high, "significant"})
    chart = charts.heatmap(
        frame,
        x=test,
        y=train,
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        x_title="test specialty",
        y_title="fine-tuned on",
        value_title=value,
        diverging=False,
        fmt=".2f",
        tooltip_extra=extra,
        significant="significant" if "significant" in frame else None,
    )
    caption = significance_caption(frame, test=accuracy_test)
    return Section(
        title,
        [
            ChartBlock(chart, title=f"{value} by fine-tuning and test specialty", caption=caption),
            TableBlock.from_frame(frame, title="Values", max_rows=2000),
        ],
        notes=notes,
    )


def _occurrence_groups(
    comps: Comparisons, metric: str, trained_on: Mapping[str, str | None] | None = None
) -> tuple[pd.DataFrame, str, str | None]:
    """Long (category, group, value) rows for box plots."""
    if _is_mapping(comps):
        parts = []
        for label, comp in comps.items():
            df = comp.scored()
            own = df["specialties"].map(lambda s, o=own_specialties(str(label), trained_on): is_own_term(s, o))
            group = np.where(df["is_control"], "control words", np.where(own, "own-specialty terms", "other terms"))
            parts.append(
                pd.DataFrame({"category": str(label), "group": group, "value": df[metric].astype(float).to_numpy()})
            )
        return (
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["category", "group", "value"]),
            "fine-tuned on",
            "group",
        )
    df = comps.scored()
    terms = df[~df["is_control"]].copy()
    terms["category"] = terms["specialties"].map(lambda s: tuple(s) or ("unassigned",))
    terms = terms.explode("category")
    ctrl = df[df["is_control"]].assign(category="control")
    both = pd.concat([terms, ctrl], ignore_index=True)
    out = pd.DataFrame({"category": both["category"].astype(str), "value": both[metric].astype(float)})
    out["is_control"] = np.where(out["category"] == "control", "control words", "clinical terms")
    return out, "term specialty", None


def distributions_section(
    comps: Comparisons,
    *,
    metric: str = "delta_per_token",
    title: str = "Per-specialty distributions",
    trained_on: Mapping[str, str | None] | None = None,
) -> Section:
    """Box plots of per-occurrence Δ by term specialty (one Comparison), or by fine-tuning specialty
    split into own-specialty terms / other terms / control words (several; a model's own specialty is
    `trained_on[name]`, else its name)."""
    mt = METRIC_TITLES.get(metric, metric)
    long, cat_title, group = _occurrence_groups(comps, metric, trained_on)
    long = long[np.isfinite(long["value"].astype(float))] if len(long) else long
    notes = [NOTES["distributions"], NOTES["delta"]]
    if long.empty:
        return Section(title, [TextBlock("No scored occurrences.", muted=True)], notes=notes)
    keys = ["category"] + ([group] if group else ["is_control"])
    stats = pd.DataFrame(
        [
            {**dict(zip(keys, k if isinstance(k, tuple) else (k,))), **charts.box_summary(cast(pd.Series, g["value"]))}
            for k, g in long.groupby(keys, sort=True)
        ]
    )
    chart = charts.box_chart(
        stats,
        category="category",
        value_title=mt,
        category_title=cat_title,
        group=group,
        group_order=["own-specialty terms", "other terms", "control words"],
    )
    return Section(title, [ChartBlock(chart, title=f"{mt} per occurrence")], notes=notes)


def top_movers_section(
    comps: Comparisons,
    *,
    metric: str = "delta_per_token",
    n: int = 300,
    n_boot: int = 2000,
    table: pd.DataFrame | None = None,
    title: str = "Top movers",
) -> Section:
    """Terms (and control words) sorted by |mean Δ|, as a sortable, searchable table (capped at `n` rows)."""
    mean = _mean_col(metric)
    if table is None:
        if _is_mapping(comps):
            parts = [c.by_term(metric, n_boot=n_boot).assign(finetune_specialty=str(k)) for k, c in comps.items()]
            parts = [p for p in parts if len(p)]
            table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        else:
            table = cast(pd.DataFrame, comps.by_term(metric, n_boot=n_boot))
    notes = [NOTES["top_movers"], NOTES["ci"]]
    if table.empty:
        return Section(title, [TextBlock("No scored occurrences.", muted=True)], notes=notes)
    t = table.copy()
    t["kind"] = np.where(t["is_control"], "control word", "clinical term")
    t = t.iloc[np.argsort(-t[mean].abs().fillna(-1).to_numpy(), kind="stable")]
    cols = [
        c
        for c in (
            "finetune_specialty",
            "term",
            "kind",
            "specialties",
            "n",
            "n_texts",
            "mean_logp_base",
            "mean_logp_tuned",
            mean,
            "ci_low",
            "ci_high",
        )
        if c in t
    ]
    rename = {"finetune_specialty": "fine-tuned on", mean: f"mean {METRIC_TITLES.get(metric, metric)}"}
    desc = {
        "n": "occurrences",
        "n_texts": "texts the term occurs in",
        "ci_low": "95% CI, text bootstrap",
        "ci_high": "95% CI, text bootstrap",
        "mean_logp_base": "mean summed logp under the base model",
        "mean_logp_tuned": "mean summed logp under the fine-tuned model",
    }
    block = TableBlock.from_frame(
        t[cols],
        max_rows=n,
        rename=rename,
        descriptions=desc,
        caption=f"{len(t)} terms and control words, largest |mean| first.",
    )
    return Section(title, [block], notes=notes)


def missing_section(comp, *, title: str = "Terms found in no text") -> Section:
    missing = list(comp.missing)
    shown = missing[:500]
    items = shown + ([f"… and {len(missing) - len(shown)} more"] if len(missing) > len(shown) else [])
    return Section(title, [ListBlock(items, empty="Every term was found.")], notes=[NOTES["missing"]])


def layer_curves_section(
    frame: pd.DataFrame,
    *,
    layer: str = "layer",
    value: str = "mean_logp",
    series: str = "model",
    facet: str | None = "group",
    ci_low: str | None = "ci_low",
    ci_high: str | None = "ci_high",
    value_title: str = "mean logp of the term",
    title: str = "Layer curves (logit lens)",
    notes: Sequence[str] | None = None,
    max_facets: int = 24,
    series_title: str | None = None,
) -> Section:
    """Curves over layers, one colour per `series` (e.g. base / tuned), one panel per `facet` (e.g.
    term specialty or terms vs control). `frame`: aggregated long format, one row per point;
    `series_title`: the legend's title (default: the `series` column's name)."""
    notes = list(notes) if notes is not None else [NOTES["layers"]]
    if frame is None or frame.empty:
        return Section(title, [TextBlock("No data.", muted=True)], notes=notes)
    blocks: list[Block] = []
    data = frame
    if facet and facet in frame and frame[facet].nunique() > max_facets:
        keep = sorted(frame[facet].dropna().unique(), key=str)[:max_facets]
        data = cast(pd.DataFrame, frame[frame[facet].isin(keep)])
        blocks.append(TextBlock(f"Showing {max_facets} of {frame[facet].nunique()} panels.", muted=True))
    chart = charts.line_chart(
        data,
        x=layer,
        y=value,
        series=series if series in frame else None,
        facet=facet if facet and facet in frame else None,
        ci_low=ci_low if ci_low in frame else None,
        ci_high=ci_high if ci_high in frame else None,
        x_title="layer",
        y_title=value_title,
        series_title=series_title if series_title is not None else series or "",
    )
    blocks.insert(0, ChartBlock(chart, title=f"{value_title} by layer"))
    return Section(title, blocks, notes=notes)


def metadata_section(metadata: Mapping[str, Any] | Any, *, title: str = "Metadata") -> Section:
    """Models, adapter / weights / data hashes, versions and options, grouped."""
    meta = dict(getattr(metadata, "metadata", metadata) or {})
    groups: dict[str, dict] = {"Models": {}, "Hashes": {}, "Data": {}, "Options": {}, "Versions": {}, "Other": {}}
    model_keys = {
        "base",
        "tuned",
        "tokenizer",
        "adapter_base_model",
        "device",
        "dtype",
        "model",
        "models",
        "adapter",
        "adapters",
    }
    for key, value in meta.items():
        k = str(key)
        if k == "options":
            groups["Options"].update(value if isinstance(value, Mapping) else {"options": value})
        elif k == "versions":
            groups["Versions"].update(value if isinstance(value, Mapping) else {"versions": value})
        elif "sha256" in k or "hash" in k or "fingerprint" in k:
            groups["Hashes"][k] = value
        elif k in model_keys:
            groups["Models"][k] = value
        elif k.startswith("n_") or "data" in k or k in {"control_words", "texts", "terms", "specialties", "split"}:
            groups["Data"][k] = value
        else:
            groups["Other"][k] = value
    blocks = [MetaBlock(_cap(v), title=name) for name, v in groups.items() if v]
    if not blocks:
        blocks = [TextBlock("No metadata.", muted=True)]
    return Section(title, blocks)


def _cap(value: Any, n: int = 60) -> Any:
    """Shorten long lists for display; recurse into mappings."""
    if isinstance(value, Mapping):
        return {str(k): _cap(v, n) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_cap(v, n) if isinstance(v, Mapping) else str(v) for v in value]
        if any(isinstance(v, Mapping) for v in items):
            return {str(i): v for i, v in enumerate(items[:n])}
        return items[:n] + ([f"… ({len(items)} in all)"] if len(items) > n else [])
    return value


def method_notes_section(topics: Sequence[str] | None = None, *, title: str = "Method notes") -> Section:
    """What each number means: the notes for `topics` (keys of `NOTES`; default all)."""
    topics = list(topics) if topics is not None else list(NOTES)
    return Section(title, [ListBlock([NOTES[t] for t in topics])])


def table_section(frame: pd.DataFrame, *, title: str, notes: Sequence[str] = (), max_rows: int = 500) -> Section:
    """Any DataFrame as a sortable, searchable table (the generic fallback)."""
    if frame is None or frame.empty:
        return Section(title, [TextBlock("Empty table.", muted=True)], notes=list(notes))
    return Section(title, [TableBlock.from_frame(frame, max_rows=max_rows)], notes=list(notes))


# -- the findings box, the reading of each section, the method text in one place ---------------------------
def findings_section(findings: Sequence[Finding], *, title: str = "Findings") -> Section:
    """The findings box: each question of the study, its answer in one sentence, the number and test behind
    it. Goes first on a page; the sentences come from the numbers (see `app/findings.py`)."""
    if not findings:
        return Section(title, [TextBlock("No results to summarise.", muted=True)], anchor="findings")
    return Section(title, [FindingsBlock(list(findings))], anchor="findings")


def how_to_read_section(
    sections: Sequence[Section | None], *, lead: Sequence[str] = (), title: str = "How to read this"
) -> Section:
    """The method text of a page in one place: the `lead` paragraphs (e.g. what Δ is), then the notes of
    `sections` in the order they first appear, each paragraph once; the notes are taken off the
    sections, so no paragraph is repeated on the page."""
    seen: dict[str, None] = dict.fromkeys(lead)
    for s in sections:
        if s is None:
            continue
        for note in s.notes:
            seen.setdefault(note, None)
        s.notes = []
    return Section(title, [ListBlock(list(seen))], anchor="how-to-read-this")


def own_vs_other_section(
    frame: pd.DataFrame,
    *,
    metric: str = "delta_per_token",
    title: str = "Own specialty vs other specialties",
    reading: str = "",
) -> Section:
    """Per fine-tuned model: the mean Δ of its own specialty's terms minus that of other specialties'
    terms in the same texts, with 95% CI (forest plot) and the test (table). `frame`: rows with
    finetune_specialty, mean_diff, ci_low, ci_high, n_pairs, p_value, p_holm."""
    mt = METRIC_TITLES.get(metric, metric)
    notes = [NOTES["own_vs_other"]]
    if frame is None or frame.empty or not bool(frame["mean_diff"].notna().any()):
        text = "No text holds terms of both a model's own specialty and another specialty, so there is no test."
        return Section(title, [TextBlock(text, muted=True)], notes=notes, reading=reading)
    chart = charts.interval_chart(
        frame,
        category="finetune_specialty",
        value="mean_diff",
        ci_low="ci_low",
        ci_high="ci_high",
        value_title=f"{mt}: own-specialty terms − other terms",
        category_title="fine-tuned on",
        tooltip_extra=("n_pairs", "p_value", "p_holm"),
    )
    blocks: list[Block] = [
        ChartBlock(chart, title="Own-specialty terms minus other specialties' terms, paired by text, with 95% CI"),
        TableBlock.from_frame(frame, title="Per fine-tuned model", searchable=False),
    ]
    return Section(title, blocks, notes=notes, reading=reading)
