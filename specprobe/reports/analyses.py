"""Report pages and sections of the analyses of saved results: seen vs unseen training terms
(`SeenUnseen`) and term change vs accuracy change (`AccuracyLink`).

The page builders are registered by kind in `reports/render.py`; the section builders can go on any
page (e.g. the experiment report: `seen_unseen_section({adapter: SeenUnseen, ...})`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
        "Contrasts pair groups within texts: per text, the mean Δ of group a minus that of group b, over the "
        "texts holding both (n_pairs); two-sided Wilcoxon signed-rank p, Holm-adjusted across contrasts."
    ),
    "accuracy_link": (
        "Per (adapter, question): accuracy change = correct(tuned) − correct(base) (−1, 0, +1); margin change = "
        "change of the correct option's log-likelihood minus the best other option's; x = the mean term Δ in "
        "the question's text. rho is Spearman's rank correlation; its 95% CI resamples questions. p_perm "
        "shuffles x across questions within each adapter × specialty (differences between adapters or "
        "specialties cannot make it significant); p_holm adjusts across specialties."
    ),
}
SEEN_FORMATS = {"p_value": ".3g", "p_holm": ".3g"}


def _as_mapping(results: Any) -> Mapping[str, Any]:
    return results if isinstance(results, Mapping) else {getattr(results, "adapter", "") or "adapter": results}


def seen_unseen_section(results: Any, *, title: str = "Seen vs unseen training terms", n_boot: int = 2000) -> Section:
    """Per adapter: mean Δ of seen / unseen-same / unseen-other terms and control words (forest plot and
    table), and the paired contrasts. `results`: a SeenUnseen or a mapping label -> SeenUnseen."""
    named = _as_mapping(results)
    groups = pd.concat([r.groups(n_boot=n_boot).assign(adapter=k) for k, r in named.items()], ignore_index=True)
    tests = pd.concat([r.tests(n_boot=n_boot).assign(adapter=k) for k, r in named.items()], ignore_index=True)
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
        TableBlock.from_frame(tests, title="Paired contrasts", formats=SEEN_FORMATS, searchable=False),
    ]
    return Section(title, blocks, notes=notes)


def seen_unseen_terms_section(result: Any, *, title: str = "Terms and their groups", max_rows: int = 500) -> Section:
    """One SeenUnseen's terms: group, occurrences in the training questions, mean Δ."""
    terms = result.terms().sort_values(["group", "term"])
    return Section(title, [TableBlock.from_frame(terms, title="Terms", max_rows=max_rows)])


def accuracy_link_section(result: Any, *, title: str = "Term change vs accuracy change", n_boot: int = 2000) -> Section:
    """Spearman's rho of the per-question term Δ with the accuracy change and the margin change, per
    specialty and overall (forest plot and table)."""
    table = result.correlations(n_boot=n_boot, n_perm=n_boot)
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
            blocks.append(TextBlock(f"No {outcome} values vary, so there is no correlation to show.", muted=True))
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
