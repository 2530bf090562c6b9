"""The findings box and the plain-language readings of the experiment report, written from the numbers.

Each function takes the table a section shows and returns the sentence(s) about it; every verdict and
every word of significance ("significant after Holm correction", "not significant ...") follows from the
same p-values and intervals as the tables, never from a hard-coded conclusion. The three questions of
the study:

1. Does training on a specialty give the best accuracy on it? (`accuracy_finding`, the own-specialty
   permutation test of `AccuracyMatrix.contrast`)
2. Do terms of all specialties rise, above control words? (`shift_finding`, the minus-control matrix)
3. Is there specialty knowledge beyond the shift? (`own_finding`, own-specialty terms vs other terms)

The optional analyses (seen vs unseen terms, accuracy link, trajectory, general text) are in
`app/findings_extra.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.reports import format as fmt
from specprobe.reports import sections as S
from specprobe.reports.page import Finding

ALPHA = fmt.ALPHA  # the significance level (`reports.format.ALPHA`)


def p_text(p: Any, name: str = "p") -> str:
    """ "p = 0.0123" or "p < 0.001"."""
    text = fmt.p_value(p)
    return f"{name} {text[0]} {text[1:]}" if text.startswith("<") else f"{name} = {text}"


def _num(v: Any, signed: bool = False) -> str:
    return fmt.number(v, signed=signed)


def col(df: Any, name: str) -> pd.Series:
    """A column as floats (what is not a number: NaN)."""
    return cast(pd.Series, pd.to_numeric(df[name], errors="coerce")).astype(float)


def mean_of(df: Any, name: str) -> float:
    """The mean of a column's finite values (NaN when there are none)."""
    v = col(df, name).to_numpy()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def row_at_max(df: Any, name: str, *, lowest: bool = False) -> dict:
    """The row (as a dict) where column `name` is largest (or smallest)."""
    values = col(df, name).to_numpy()
    i = int(np.nanargmin(values) if lowest else np.nanargmax(values))
    return df.iloc[i].to_dict()


def _extreme(value: float, *, highest: bool = True) -> str:
    """What the highest (lowest) value of a set is called: a "largest rise" only above 0; below 0 the highest
    is the "smallest fall" (the lowest above 0, the "smallest rise"), so a negative value is never a rise."""
    if highest:
        return "largest rise" if value > 0 else "smallest fall" if value < 0 else "largest change"
    return "largest fall" if value < 0 else "smallest rise" if value > 0 else "smallest change"


def _verdict(k: int, n: int) -> str:
    """yes (all of n), partly (some), not shown (none), not tested (n = 0)."""
    return "not tested" if n == 0 else "yes" if k == n else "partly" if k else "not shown"


# -- 1. accuracy ------------------------------------------------------------------------------------------
Q_ACCURACY = "Does training on a specialty give the best accuracy on it?"


def smallest_permutation_p(n_models: int, n_specialties: int) -> float:
    """The smallest p the own-specialty permutation test can give: 1 over the number of ways to assign
    `n_specialties` of `n_models` models to the specialties (the observed assignment is one of them)."""
    import math

    return 1.0 / math.perm(n_models, n_specialties) if n_models >= n_specialties > 0 else float("nan")


def accuracy_finding(contrast: pd.DataFrame, link: str = "", n_models: int | None = None) -> Finding:
    """From `AccuracyMatrix.contrast()` and its attrs (mean_diag, mean_offdiag, mean_diff, n_best,
    n_specialties, p_value, n_perm); `n_models` (fine-tuned models in the matrix): say so when the test
    cannot reach p < 0.05 with so few models."""
    a = contrast.attrs
    if not a.get("n_specialties") or "mean_diff" not in a:
        why = "it needs at least two fine-tuned models, each trained on one specialty."
        return Finding(Q_ACCURACY, f"Not tested: {why}", "", "not tested", link)
    n, k, p = int(a["n_specialties"]), int(a["n_best"]), float(a["p_value"])
    own, other, diff = a["mean_diag"], a["mean_offdiag"], a["mean_diff"]
    if a.get("untested"):
        # a missing cell: no test, and "best" on a specialty may be among fewer than all the models
        missing = ", ".join(str(c) for c in a["untested"])
        answer = (
            f"Not tested: some fine-tuned models have no accuracy on an own specialty ({missing}; model on "
            f"specialty), so the own-specialty test was not run; {_best_words(contrast)}."
        )
        evidence = "The permutation test needs every fine-tuned model's accuracy on every own specialty."
        return Finding(Q_ACCURACY, answer, evidence, "not tested", link)
    gist = (
        f"the own-specialty model scores {_num(own)} on its specialty's questions vs {_num(other)} for the "
        f"other models (difference {_num(diff, True)}), and is the best of the {_n_adapters(contrast)} "
        f"fine-tuned models (ties included) on {k} of {n} specialties"
        + (f", {int(a['n_tied'])} of them tied with another model" if int(a.get("n_tied") or 0) else "")
    )
    if p < ALPHA and diff > 0:
        answer, verdict = (f"Yes: {gist}.", "yes") if k == n else (f"Partly: {gist}.", "partly")
    else:
        answer, verdict = f"Not shown: {gist}; the difference is not significant ({p_text(p)}).", "not shown"
    evidence = (
        f"Mean accuracy difference own − other models {_num(diff, True)}; one-sided permutation test over "
        f"model-to-specialty assignments ({int(a.get('n_perm', 0)):,} permutations), {p_text(p)}."
    )
    floor = smallest_permutation_p(n_models or 0, n)
    if floor >= ALPHA:
        evidence += f" With {n_models} models the smallest possible p is {_num(floor)}: more models are needed."
    return Finding(Q_ACCURACY, answer, evidence, verdict, link)


def _n_adapters(contrast: pd.DataFrame) -> int:
    """The number of fine-tuned models `contrast` ranked (its attrs' n_adapters; else the most of a row)."""
    if "n_adapters" in contrast.attrs:
        return int(contrast.attrs["n_adapters"])
    return int(col(contrast, "n_adapters").max()) if "n_adapters" in contrast and len(contrast) else 0


def _best_split(contrast: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """The specialties where the own model is best of all fine-tuned models, where it is best of only those
    with a result there ("B (2 of 3)"), and where the own model has no result."""
    total = _n_adapters(contrast)
    own = f"own_{contrast.attrs.get('metric', 'acc')}"
    full, partial, missing = [], [], []
    for r in contrast.to_dict(orient="records"):
        ranked = int(r.get("n_adapters", total))
        if not np.isfinite(float(r.get(own, 0.0))):
            missing.append(str(r["specialty"]))
        elif bool(r["is_best"]) and ranked >= total:
            full.append(str(r["specialty"]))
        elif bool(r["is_best"]):
            partial.append(f"{r['specialty']} ({ranked} of {total} models have a result there)")
    return full, partial, missing


def _best_words(contrast: pd.DataFrame) -> str:
    """Where the own model is best, counting only the specialties every fine-tuned model was tested on as
    "best of all"."""
    full, partial, missing = _best_split(contrast)
    words = (
        f"the own-specialty model is the best of all {_n_adapters(contrast)} fine-tuned models (ties included) "
        f"on {len(full)} of {len(contrast)} specialties"
    )
    if partial:
        words += f", and the best of only the models with a result on {', '.join(partial)}"
    if missing:
        words += f"; the own model has no result on {', '.join(missing)}"
    return words


def accuracy_reading(frame: pd.DataFrame, contrast: pd.DataFrame) -> str:
    """One paragraph on the accuracy heatmap: what a cell is, the own-specialty result, the cells that
    differ from the base model."""
    base = frame[frame["train_specialty"] == "base"]
    tuned = frame[frame["train_specialty"] != "base"]
    parts = [
        "Each cell is the share of a specialty's test questions (columns) that a model (rows) answered "
        f"correctly; the base model answered {_num(mean_of(base, 'accuracy'))} on average and the fine-tuned "
        f"models {_num(mean_of(tuned, 'accuracy'))}."
    ]
    if "p_holm" in frame and bool(col(tuned, "p_holm").notna().any()):
        tested = tuned[col(tuned, "p_holm").notna()]
        sig = tested[tested["p_holm"] < ALPHA]
        up, down = int((sig["vs_base"] > 0).sum()), int((sig["vs_base"] < 0).sum())
        untested = len(tuned) - len(tested)
        parts.append(
            f"Against the base model on the same questions, {up} cell(s) are significantly higher and {down} "
            f"significantly lower after Holm correction (asterisks); the other {len(tested) - len(sig)} are "
            "within chance"
            + (f", and {untested} could not be tested (no base model result on them)." if untested else ".")
        )
    if len(contrast):
        full, partial, missing = _best_split(contrast)
        text = f"The model trained on a specialty is the best fine-tuned model on it for: {', '.join(full) or 'none'}."
        if partial:
            text += f" It is the best only of the models with a result for: {', '.join(partial)}."
        if missing:
            text += f" The model trained on a specialty has no result on it for: {', '.join(missing)}."
        parts.append(text)
    return " ".join(parts)


# -- 2. the shift above control words --------------------------------------------------------------------
Q_SHIFT = "Do terms of all specialties rise, above control words?"


def shift_finding(matrix: pd.DataFrame, link: str = "") -> Finding:
    """From the minus-control matrix (`specialty_delta_matrix(..., relative_to_control=True)`): how many
    model × term-specialty cells rose significantly above the control words after Holm correction."""
    tested = matrix[col(matrix, "p_holm").notna()] if len(matrix) and "p_holm" in matrix else matrix.iloc[:0]
    if tested.empty:
        why = "no model × specialty cell has 2 texts holding both terms and control words (the paired test needs 2)"
        return Finding(Q_SHIFT, f"Not tested: {why}.", "", "not tested", link)
    up = tested[(tested["p_holm"] < ALPHA) & (tested["mean"] > 0)]
    down = tested[(tested["p_holm"] < ALPHA) & (tested["mean"] < 0)]
    n, k = len(tested), len(up)
    mean = mean_of(tested, "mean")
    verdict = _verdict(k, n)
    if verdict == "yes" and len(matrix) > n:  # "every specialty" would take in the cells without a test
        answer = (
            f"Yes: in every tested model × specialty cell, the terms rose more than the control words ({n} of {n} "
            f"tested cells; {len(matrix) - n} without a test)."
        )
    elif verdict == "yes":
        answer = f"Yes: under every fine-tuned model, the terms of every specialty rose more than the control words ({n} of {n} cells)."
    elif verdict == "partly":
        answer = (
            f"Partly: terms rose more than the control words in {k} of {n} model × specialty cells after Holm "
            "correction; the other cells are not significant"
            + (f", and {len(down)} fell significantly below them." if len(down) else ".")
        )
    elif len(down):  # none rose significantly, but some fell: "not significant in any cell" would be false
        answer = (
            f"Not shown: on average terms moved {_num(mean, True)} logp/token against the control words; no cell "
            f"rose significantly above them after Holm correction, and {len(down)} of {n} fell significantly below them."
        )
    else:
        answer = (
            f"Not shown: on average terms moved {_num(mean, True)} logp/token against the control words, "
            "not significant after Holm correction in any cell."
        )
    evidence = (
        f"Mean terms − control words over cells {_num(mean, True)} logp/token (range {_num(tested['mean'].min(), True)} "
        f"to {_num(tested['mean'].max(), True)}); a cell is tested with texts and words both random: a paired "
        "Wilcoxon signed-rank test per text and a permutation test of its term words against the control words, "
        f"p the larger of the two; Holm across all model × specialty cells; smallest {p_text(tested['p_holm'].min(), 'p_holm')}."
    )
    if len(matrix) > n:
        evidence += f" {len(matrix) - n} cell(s) without a test (fewer than 2 texts with both terms and control words)."
    evidence += too_few_words(tested, "tested cell(s)", "rise")
    return Finding(Q_SHIFT, answer, evidence, verdict, link)


def too_few_words(tested: Any, rows: str, change: str) -> str:
    """The sentence that names the `rows` whose word-level test cannot reach ALPHA (p_word_min >= ALPHA): a
    "not significant" there is a lack of words, not evidence of no `change` ("" when there are none)."""
    few = int((col(tested, "p_word_min") >= ALPHA).sum()) if "p_word_min" in tested else 0
    if not few:
        return ""
    return (
        f" {few} {rows} have too few words to ever reach p < {ALPHA:g} (the word-level test's smallest "
        f"possible p is above it): not significant there is no evidence of no {change}."
    )


def shift_reading(matrix: pd.DataFrame) -> str:
    """One paragraph on the minus-control heatmap."""
    if matrix.empty or not bool(col(matrix, "mean").notna().any()):  # no cell paired with control words
        return "No control words were scored, so the terms' change cannot be set against ordinary words."
    # the extreme among the cells with a test (as the finding's range); a cell of too few texts is no finding
    tested = matrix[col(matrix, "p_holm").notna() & col(matrix, "mean").notna()]
    top = row_at_max(tested if len(tested) else matrix, "mean")
    among = "Among the tested cells, the" if len(tested) < len(matrix) and len(tested) else "The"
    return (
        "Each cell is how much more (positive, orange) or less (negative, blue) a model made the terms of a "
        "specialty likely than ordinary control words in the same question texts, in log-probability per token. "
        f"{among} {_extreme(top['mean'])} against the control words is {_num(top['mean'], True)} for "
        f"{top['term_specialty']} terms under the model fine-tuned on {top['finetune_specialty']}"
        f"{'' if len(tested) else ' (no cell could be tested)'}. "
        f"{int((col(matrix, 'p_holm') < ALPHA).sum())} of {len(matrix)} cells carry an asterisk (significant after "
        "Holm correction); an unmarked cell may still be a real change the texts are too few to show."
    )


# -- 3. specialty knowledge beyond the shift -------------------------------------------------------------
Q_OWN = "Is there specialty knowledge beyond the shift (own-specialty terms vs other specialties' terms)?"


def own_finding(own: pd.DataFrame, link: str = "") -> Finding:
    """From `report_stats.own_vs_other`: in how many models the own specialty's terms rose significantly
    more than the other specialties' terms in the same texts (Holm across models)."""
    tested = own[own["p_holm"].notna()] if len(own) else own
    if tested.empty:
        why = "no text holds terms of both a model's own specialty and another specialty."
        return Finding(Q_OWN, f"Not tested: {why}", "", "not tested", link)
    n = len(tested)
    ahead = tested[(tested["p_holm"] < ALPHA) & (tested["mean_diff"] > 0)]
    behind = tested[(tested["p_holm"] < ALPHA) & (tested["mean_diff"] < 0)]
    mean = mean_of(tested, "mean_diff")
    verdict = _verdict(len(ahead), n)
    untested = sorted(set(own["finetune_specialty"].astype(str)) - set(tested["finetune_specialty"].astype(str)))
    if untested and verdict == "yes":
        verdict = "partly"  # every tested model is not every model
    if verdict in ("yes", "partly"):
        names = ", ".join(ahead["finetune_specialty"].astype(str))
        lead = "Yes" if verdict == "yes" else "Partly"
        unseen = " (both unseen in training)" if _term_kinds(cast(pd.DataFrame, tested)) == {"unseen"} else ""
        answer = (
            f"{lead}: in {len(ahead)} of {n} models ({names}) the own specialty's terms{unseen} rose more than "
            "other specialties' terms in the same texts, significant after Holm correction"
            + (f"; {len(untested)} more could not be tested." if untested else ".")
        )
    elif len(behind):
        answer = (
            f"Not shown: in no model did the own specialty's terms rise significantly more than other specialties' "
            f"terms in the same texts after Holm correction; in {len(behind)} of {n} they rose significantly less "
            f"(mean over models {_num(mean, True)} logp/token)."
        )
    else:
        answer = (
            f"Not shown: own-specialty terms moved {_num(mean, True)} logp/token against other specialties' terms "
            "in the same texts (mean over models), not significant after Holm correction."
        )
    evidence = (
        f"Mean own − other {_num(mean, True)} logp/token over {n} model(s); tested with texts and words both "
        "random: a paired Wilcoxon signed-rank test per text and a permutation test of the own specialty's "
        f"term words against the other specialties' term words, p the larger of the two; Holm across models; "
        f"smallest {p_text(tested['p_holm'].min(), 'p_holm')}."
    )
    evidence += too_few_words(tested, "model(s)", "difference")
    if untested:
        evidence += f" {len(untested)} model(s) could not be tested (no text holds both groups): {', '.join(untested)}."
    evidence += _seen_terms_note(cast(pd.DataFrame, tested))
    return Finding(Q_OWN, answer, evidence, verdict, link)


def _term_kinds(tested: pd.DataFrame) -> set[str]:
    """Which terms `own_vs_other` compared for the tested models: {"unseen"}, {"all"} or both."""
    return {str(k) for k in tested["terms"]} if "terms" in tested else {"all"}


def _seen_terms_note(tested: pd.DataFrame) -> str:
    """What the own and other terms were: without the terms a model saw in training, or all of them (then the
    difference mixes memorisation of training terms, mostly the own specialty's, with specialty knowledge)."""
    if _term_kinds(tested) == {"unseen"}:
        return " Terms a model's training questions held are left out of both sides (the seen/unseen analysis)."
    return (
        " Own-specialty terms include those the model's training questions held, so the difference mixes "
        "memorisation of training terms with specialty knowledge; the seen/unseen analysis (analyses = "
        '["seen_unseen"]) separates them, and with it this test leaves the seen terms out.'
    )


def own_reading(own: pd.DataFrame) -> str:
    """One paragraph on the own-vs-other section."""
    tested = cast(pd.DataFrame, own[col(own, "mean_diff").notna()] if len(own) else own)
    if tested.empty:
        return "There is nothing to compare: no question text holds terms of a model's own and of another specialty."
    rows = "; ".join(
        f"{r['finetune_specialty']}: {_num(r['mean_diff'], True)} ({p_text(r['p_holm'], 'p_holm')}, "
        f"{int(r['n_pairs'])} texts)"
        for r in tested.to_dict(orient="records")
    )
    return (
        "If fine-tuning taught a specialty rather than just medical language, the model's own specialty's terms "
        "should rise more than other specialties' terms in the same question. Positive means they did. " + rows + "."
    )


# -- the descriptive sections ----------------------------------------------------------------------------
def distributions_reading(comps: dict, trained_on: Mapping[str, str | None] | None = None) -> str:
    """One paragraph on the box plots: the median change of own-specialty terms, other terms and control words."""
    import numpy as np

    parts = []
    for name, comp in comps.items():
        df = comp.scored()
        own = df["specialties"].map(lambda s, o=S.own_specialties(str(name), trained_on): S.is_own_term(s, o))
        groups = {"own-specialty terms": df[own & ~df["is_control"]], "control words": df[df["is_control"]]}
        meds = {g: float(np.median(d["delta_per_token"])) for g, d in groups.items() if len(d)}
        if meds:
            parts.append(f"{name}: " + ", ".join(f"{g} {_num(m, True)}" for g, m in meds.items()))
    head = (
        "The boxes show how single occurrences spread: half of them lie inside a box, and a box right of zero "
        "means most occurrences became more likely."
    )
    return head + (" Medians per model: " + "; ".join(parts) + "." if parts else "")


def top_movers_reading(table: pd.DataFrame, metric: str = "delta_per_token") -> str:
    """One paragraph on the top movers: the terms that moved most, up and down."""
    mean = f"mean_{metric}"
    if table.empty or mean not in table:
        return "No term was scored."
    terms = table[~table["is_control"].astype(bool)]
    if terms.empty:
        return "Only control words were scored."
    up, down = row_at_max(terms, mean), row_at_max(terms, mean, lowest=True)
    where = " under the model fine-tuned on {}".format
    rise, fall = _extreme(up[mean]), _extreme(down[mean], highest=False)
    return (
        "The table lists single terms by how much their probability changed. "
        f"The {rise} is '{up['term']}' ({_num(up[mean], True)} logp/token"
        f"{where(up['finetune_specialty']) if 'finetune_specialty' in up else ''}), the {fall} "
        f"'{down['term']}' ({_num(down[mean], True)}"
        f"{where(down['finetune_specialty']) if 'finetune_specialty' in down else ''}). "
        "Single terms with few occurrences move by chance; read their CIs."
    )


def layers_reading(frame: pd.DataFrame) -> str:
    """One paragraph on the logit-lens curves: at which layer the terms' change is largest."""
    terms = frame[frame["model"] == "clinical terms"] if len(frame) else frame
    if terms.empty:
        return "No layer was read."
    size = terms.assign(size=col(terms, "mean_logp").abs())
    top = row_at_max(size, "size")  # the largest change either way, not the largest rise
    last = int(col(terms, "layer").max())
    at_last = mean_of(terms[terms["layer"] == last], "mean_logp")
    return (
        "The curves read the model's prediction off each layer in turn (the logit lens): where the line leaves "
        f"zero is the depth at which fine-tuning changes the terms' probability. The change is largest at layer "
        f"{int(top['layer'])} ({_num(top['mean_logp'], True)} under {top['group']}); at the last layer ({last}) it "
        f"averages {_num(at_last, True)} logp/token."
    )
