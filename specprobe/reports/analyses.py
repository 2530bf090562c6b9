"""Report pages and sections of the analyses: seen vs unseen training terms (`SeenUnseen`), term change
vs accuracy change (`AccuracyLink`), the dose-response over training (`Trajectory`) and the
general-text control (`GeneralTextShift`).

The page builders are registered by kind in `reports/render.py`; the section builders can go on any
page (e.g. the experiment report: `seen_unseen_section({adapter: SeenUnseen, ...})`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pandas as pd

from specprobe.reports import charts
from specprobe.reports import sections as S
from specprobe.reports.page import ChartBlock, Page, Section, TableBlock, TextBlock

NOTES = {
    "seen_unseen": (
        "Each term is put in one group per adapter: 'seen' if it occurs in the adapter's training questions "
        "(read from its manifest, sha256-checked), 'unseen_same' if not but it belongs to a specialty the "
        "adapter was trained on, 'unseen_other' otherwise. Seen far above unseen: memorisation. Unseen same "
        "above unseen other: specialty knowledge. All alike and above the control words: a shift towards the "
        "domain. Means are of Δ logp per token with 95% CIs that resample texts."
    ),
    "seen_unseen_tests": (
        "Contrasts take texts and words as random: per text, the mean Δ of group a minus that of group b, over "
        "the texts holding both (n_pairs), tested with a two-sided Wilcoxon signed-rank test (p_text); group "
        "a's words against group b's words there (n_words_a, n_words_b), a permutation test (p_word; "
        "p_word_min: the smallest p so few words allow); p_value the larger, Holm-adjusted across contrasts."
    ),
    "accuracy_link": (
        "Per (adapter, question): accuracy change = correct(tuned) − correct(base) (−1, 0, +1); margin change = "
        "change of the correct option's log-likelihood minus the best other option's; x = the mean term Δ in "
        "the question's text. rho is Spearman's rank correlation; its 95% CI resamples questions. p_perm "
        "shuffles x across the questions of a specialty, a question's rows under every adapter together, each "
        "adapter keeping its own x (differences between adapters or specialties cannot make it significant); "
        "p_holm adjusts across specialties. rho needs 3 questions (the rows of one question under several "
        "adapters are one unit, in the CI and in the test); p_perm is empty where no specialty has two "
        "questions differing in both x and the outcome (nothing to shuffle); note says why."
    ),
}
SEEN_FORMATS = {name: ".3g" for name in ("p_text", "p_word", "p_word_min", "p_value", "p_holm")}


def _as_mapping(results: Any) -> Mapping[str, Any]:
    return results if isinstance(results, Mapping) else {getattr(results, "adapter", "") or "adapter": results}


def seen_unseen_section(
    results: Any,
    *,
    title: str = "Seen vs unseen training terms",
    n_boot: int = 2000,
    tests: Mapping[str, pd.DataFrame] | None = None,
) -> Section:
    """Per adapter: mean Δ of seen / unseen-same / unseen-other terms and control words (forest plot and
    table), and the paired contrasts. `results`: a SeenUnseen or a mapping label -> SeenUnseen; `tests`:
    label -> its `tests(n_boot=n_boot)` when already computed (its permutation tests then run once)."""
    named = _as_mapping(results)
    groups = pd.concat([r.groups(n_boot=n_boot).assign(adapter=k) for k, r in named.items()], ignore_index=True)
    contrasts = pd.concat(
        [(r.tests(n_boot=n_boot) if tests is None else tests[k]).assign(adapter=k) for k, r in named.items()],
        ignore_index=True,
    )
    notes = [NOTES["seen_unseen"], NOTES["seen_unseen_tests"]]
    if groups["n"].sum() == 0:
        return Section(title, [TextBlock("No scored occurrences.", muted=True)], notes=notes)
    # one adapter: the groups alone (control words last); several: "adapter · group"
    rows = groups["group"] if len(named) == 1 else groups["adapter"].astype(str) + " · " + groups["group"]
    plot = groups.assign(row=rows)
    chart = charts.interval_chart(
        plot,
        category="row",
        value="mean_delta_per_token",
        ci_low="ci_low",
        ci_high="ci_high",
        value_title="mean Δ logp per token",
        category_title="group" if len(named) == 1 else "adapter · group",
        color="group",
        tooltip_extra=("n", "n_terms", "n_texts"),
    )
    blocks = [
        ChartBlock(chart, title="Mean Δ logp per token by group, with 95% CI"),
        TableBlock.from_frame(groups, title="Groups", searchable=False),
        TableBlock.from_frame(contrasts, title="Paired contrasts", formats=SEEN_FORMATS, searchable=False),
    ]
    return Section(title, blocks, notes=notes)


def seen_unseen_terms_section(result: Any, *, title: str = "Terms and their groups", max_rows: int = 500) -> Section:
    """One SeenUnseen's terms: group, occurrences in the training questions, mean Δ."""
    terms = result.terms().sort_values(["group", "term"])
    return Section(title, [TableBlock.from_frame(terms, title="Terms", max_rows=max_rows)])


def accuracy_link_section(
    result: Any,
    *,
    title: str = "Term change vs accuracy change",
    n_boot: int = 2000,
    table: Any = None,
) -> Section:
    """Spearman's rho of the per-question term Δ with the accuracy change and the margin change, per
    specialty and overall (forest plot and table). `table`: the result's `correlations(n_boot=n_boot,
    n_perm=n_boot)` when already computed (its permutation tests then run once)."""
    table = result.correlations(n_boot=n_boot, n_perm=n_boot) if table is None else table
    notes = [NOTES["accuracy_link"]]
    blocks: list[Any] = []
    for outcome, g in table.groupby("outcome", sort=False):
        if g["rho"].notna().any():
            chart = charts.interval_chart(
                g,
                category="specialty",
                value="rho",
                ci_low="ci_low",
                ci_high="ci_high",
                value_title=f"Spearman rho, term Δ vs {outcome}",
                category_title="specialty",
                tooltip_extra=("n", "n_questions", "p_perm", "p_holm"),
            )
            blocks.append(ChartBlock(chart, title=f"Term Δ vs {outcome}: rank correlation with 95% CI"))
        else:
            notes_all = g.loc[g["specialty"] == "ALL", "note"] if "note" in g else pd.Series(dtype=str)
            why = str(notes_all.iloc[0]) if len(notes_all) and notes_all.iloc[0] else "no values vary"
            blocks.append(TextBlock(f"No correlation of the term Δ with {outcome} to show: {why}.", muted=True))
    blocks.append(TableBlock.from_frame(table, title="Correlations", formats={"p_perm": ".3g", "p_holm": ".3g"}))
    return Section(title, blocks, notes=notes)


def seen_unseen_page(result: Any, *, title: str | None = None, n_boot: int = 2000, **_: Any) -> Page:
    """A SeenUnseen: groups, contrasts, per-specialty view, terms, metadata."""
    by_spec = result.by_specialty(n_boot=n_boot)
    secs = [
        seen_unseen_section(result, n_boot=n_boot),
        Section("Per term specialty", [TableBlock.from_frame(by_spec, title="Seen and unseen, per term specialty")]),
        seen_unseen_terms_section(result),
        S.metadata_section(result),
    ]
    return Page(title or f"specprobe seen vs unseen: {result.adapter}", secs)


def accuracy_link_page(result: Any, *, title: str | None = None, n_boot: int = 2000, **_: Any) -> Page:
    """An AccuracyLink: correlations, the per-question table, metadata."""
    secs = [
        accuracy_link_section(result, n_boot=n_boot),
        S.table_section(result.to_pandas(), title="Per adapter and question"),
        S.metadata_section(result),
    ]
    return Page(title or "specprobe: term change vs accuracy change", secs)


# -- over training (Trajectory) and the general-text control (GeneralTextShift) ---------------------------
NOTES.update(
    trajectory=(
        "Each checkpoint (snapshot) of the adapter is compared with the same base on the same texts. Lines: the "
        "mean Δ logp per token of each term specialty over training steps, with 95% CIs that resample texts "
        "(bands); control words dashed. Terms minus controls: per text, mean term Δ minus mean control Δ. Own "
        "specialty ahead: per text, the mean Δ of the adapter's own specialty's terms minus that of other "
        "specialties' terms; the onset is the first step from which it stays ahead. Both take texts and words "
        "as random: p_value is the larger of p_text (Wilcoxon over the texts) and p_word (a permutation test of "
        "the one set of words against the other), Holm across steps. In the table per step and term specialty, "
        "p_holm_within_step adjusts across the specialties of one step only: the study's heatmap, Holm across "
        "every cell of its matrix, is the test to quote for the final adapter."
    ),
    general_text=(
        "Whole general-English texts (WordNet glosses unless others were given) scored under base and tuned: "
        "Δ logp per token = sum of the texts' Δ over the sum of their tokens, 95% CI resampling texts. A shift "
        "towards the clinical domain makes general text less likely (Δ < 0) while clinical terms and even "
        "ordinary words in clinical questions rise; so does forgetting from any fine-tuning, which no "
        "non-clinical fine-tune here controls for. The table beside it gives means and CIs only: each term "
        "specialty's test against the control words is in the study's heatmap (Holm across every cell)."
    ),
)


def trajectory_chart(
    curves: pd.DataFrame,
    *,
    value: str = "mean_delta_per_token",
    value_title: str = "mean Δ logp per token",
    width: int = 560,
    height: int = 300,
) -> Any:
    """One line per term specialty over training steps with its CI band; the control words dashed."""
    import altair as alt

    data = charts._clean(
        curves.assign(line=["control words" if s == "control" else "terms" for s in curves["specialty"]])
    )
    order = charts._order(curves["specialty"])
    color = alt.Color("specialty:N", sort=order, title="term specialty")
    dash = alt.StrokeDash(
        "line:N", scale=alt.Scale(domain=["terms", "control words"], range=[[1, 0], [6, 4]]), title="", sort=None
    )
    tips = [
        alt.Tooltip("specialty:N"),
        alt.Tooltip("step:Q", title="step"),
        alt.Tooltip(f"{value}:Q", title=value_title, format=".4f"),
        alt.Tooltip("ci_low:Q", title="95% CI low", format=".4f"),
        alt.Tooltip("ci_high:Q", title="95% CI high", format=".4f"),
        alt.Tooltip("n:Q"),
    ]
    base = alt.Chart().encode(x=alt.X("step:Q", title="training step", axis=alt.Axis(tickMinStep=1)))
    band = (
        base.mark_area(opacity=0.15)
        .encode(
            y=alt.Y("ci_low:Q", title=value_title),
            y2="ci_high:Q",
            color=alt.Color("specialty:N", sort=order, legend=None),
        )
        .transform_filter(charts._valid("ci_low", "ci_high"))
    )
    line = (
        base.mark_line(point=True)
        .encode(y=alt.Y(f"{value}:Q", title=value_title), color=color, strokeDash=dash, tooltip=tips)
        .transform_filter(charts._valid(value))
    )
    zero = alt.Chart(pd.DataFrame({"ref": [0.0]})).mark_rule(color="#444444", strokeDash=[2, 2]).encode(y="ref:Q")
    return charts._layer(band, line, zero, data=data).properties(width=width, height=height)


def onset_words(onset: Mapping[str, Any]) -> str:
    """`Trajectory.onset` in words: "ahead first at step 4, from step 8 on", "ahead at step 4, not to the
    end" or "never ahead" (a step of "never" is no step)."""
    first, sustained = onset["first"], onset["sustained"]
    if not isinstance(first, int):
        return "never ahead"
    if not isinstance(sustained, int):
        return f"ahead at step {first}, not to the end"
    return (
        f"ahead from step {first}" if first == sustained else f"ahead first at step {first}, from step {sustained} on"
    )


def trajectory_section(
    result: Any, *, title: str = "Over training", n_boot: int = 2000, advantage: pd.DataFrame | None = None
) -> Section:
    """A Trajectory: per-specialty Δ over steps (chart), terms minus controls per step, the own
    specialty's advantage per step and its onset. `advantage`: the result's `own_advantage(n_boot=n_boot)`
    when already computed (its permutation tests then run once)."""
    curves = result.curves(n_boot=n_boot)
    notes = [NOTES["trajectory"]]
    if curves.empty:
        return Section(title, [TextBlock("No scored occurrences.", muted=True)], notes=notes)
    if advantage is None:
        advantage = cast(pd.DataFrame, result.own_advantage(n_boot=n_boot))
    onset = result.onset(n_boot=n_boot, table=advantage)
    own = ", ".join(result.trained_on or []) or "every specialty"
    blocks: list[Any] = [
        ChartBlock(trajectory_chart(curves), title="Mean Δ logp per token by term specialty over training steps"),
        TextBlock(
            f"Own specialty ({own}) against the others: {onset_words(onset)}."
            if onset["first"] != "not applicable"
            else "Trained on every specialty: there is no own specialty to set against the others."
        ),
        TableBlock.from_frame(
            result.gap(n_boot=n_boot), title="Terms minus control words, per step", formats=SEEN_FORMATS
        ),
        TableBlock.from_frame(
            advantage,
            title="Own specialty minus other specialties, per step",
            formats=SEEN_FORMATS,
        ),
        TableBlock.from_frame(
            curves.rename(columns={"p_holm": "p_holm_within_step"}),
            title="Per step and term specialty",
            formats={**SEEN_FORMATS, "p_holm_within_step": ".3g"},
        ),
    ]
    return Section(title, blocks, notes=notes)


def trajectory_page(result: Any, *, title: str | None = None, n_boot: int = 2000, **_: Any) -> Page:
    """A Trajectory: the curves over training, the tests per step, metadata."""
    secs = [trajectory_section(result, n_boot=n_boot), S.metadata_section(result)]
    return Page(title or f"specprobe over training: {result.adapter}", secs)


def general_text_section(
    shift: Any,
    comparison: Any = None,
    *,
    title: str = "General-text control",
    n_boot: int = 2000,
    by_specialty: pd.DataFrame | None = None,
) -> Section:
    """The general text's Δ per token beside a Comparison's specialties and control words (forest plot
    and table) when `comparison` is given (or was kept with the result), else alone. `by_specialty`: the
    comparison's `by_specialty(n_boot=n_boot)` when already computed (its permutation tests then run once)."""
    row = shift.row(n_boot=n_boot)
    if comparison is not None:
        by_spec = comparison.by_specialty(n_boot=n_boot) if by_specialty is None else by_specialty
        table = pd.concat([by_spec, pd.DataFrame([{c: row.get(c) for c in by_spec.columns}])], ignore_index=True)
    elif shift.extras.get("beside_controls"):
        table = pd.DataFrame(shift.extras["beside_controls"])
    else:
        table = pd.DataFrame([row])
    chart = charts.interval_chart(
        table,
        category="specialty",
        value="mean_delta_per_token",
        ci_low="ci_low",
        ci_high="ci_high",
        value_title="mean Δ logp per token",
        category_title="term specialty / control words / general text",
        tooltip_extra=("n", "n_texts"),
    )
    # means and CIs only: the per-specialty tests here adjust within this one model (Holm across its
    # specialties), and the same cells' tests in the study's heatmap adjust across every cell
    shown = table.drop(columns=[c for c in ("p_text", "p_word", "p_word_min", "p_value", "p_holm") if c in table])
    blocks = [
        ChartBlock(chart, title="Δ logp per token: clinical terms, control words and general text, with 95% CI"),
        TableBlock.from_frame(shown, title="Beside the control words", formats=SEEN_FORMATS, searchable=False),
    ]
    return Section(title, blocks, notes=[NOTES["general_text"]])


def general_text_page(result: Any, *, title: str | None = None, n_boot: int = 2000, **_: Any) -> Page:
    """A GeneralTextShift: the delta per token (beside the control words when kept), per-text table, metadata."""
    secs = [
        general_text_section(result, n_boot=n_boot),
        S.table_section(result.to_pandas(), title="Per text"),
        S.metadata_section(result),
    ]
    return Page(title or "specprobe general-text control", secs)
