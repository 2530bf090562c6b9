"""The tests the experiment report adds to the stages' results, so that every heatmap cell and every
finding has a p-value behind it:

- `accuracy_vs_base`: each fine-tuned model's accuracy on a test specialty against the base model's on the
  same questions (Fisher's exact test, Holm across the cells);
- `own_vs_other`: per fine-tuned model, its own specialty's terms against the other specialties' terms in
  the same texts, texts and words both random (`stats.texts_and_words_test`, Holm across the models):
  specialty knowledge beyond the shift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.probe.stats import N_PERM, holm, named_word_counts, texts_and_words_test
from specprobe.reports.sections import is_own_term, own_specialties

OWN_COLUMNS = [
    *("finetune_specialty", "own_specialty", "terms", "mean_diff", "ci_low", "ci_high", "n_pairs", "n_own_words"),
    *("n_other_words", "p_text", "p_word", "p_word_min", "p_value", "p_holm"),
]


def accuracy_vs_base(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (`accuracy_frame`'s rows) with vs_base (accuracy minus the base model's on the same test
    specialty), p_value (two-sided Fisher's exact test of the two proportions) and p_holm (Holm across
    every fine-tuned model's cells). The base row and cells without a base value get NaN.

    The test treats the two sets of answers as independent although they are answers to the same
    questions; with answers that agree more often than chance this is conservative (p too large)."""
    from scipy.stats import fisher_exact

    out = frame.copy()
    base = out[out["train_specialty"] == "base"].set_index("test_specialty")
    vs, ps = [], []
    for rec in out.to_dict(orient="records"):
        spec = rec["test_specialty"]
        if rec["train_specialty"] == "base" or spec not in base.index:
            vs.append(np.nan)
            ps.append(np.nan)
            continue
        b = base.loc[spec]
        k1, n1 = round(float(rec["accuracy"]) * int(rec["n"])), int(rec["n"])
        k0, n0 = round(float(b["accuracy"]) * int(b["n"])), int(b["n"])
        vs.append(float(rec["accuracy"]) - float(b["accuracy"]))
        table = [[k1, n1 - k1], [k0, n0 - k0]]
        ps.append(float(cast(Any, fisher_exact(table)).pvalue) if n1 and n0 else np.nan)
    out["vs_base"] = vs
    out["p_value"] = ps
    out["p_holm"] = holm(ps)
    return out


def own_vs_other(
    comparisons: Mapping[str, Any],
    trained_on: Mapping[str, str | None] | None = None,
    *,
    metric: str = "delta_per_token",
    n_boot: int = 2000,
    n_perm: int = N_PERM,
    seen: Mapping[str, set[str]] | None = None,
) -> pd.DataFrame:
    """Per fine-tuned model trained on one specialty: its terms against the other specialties' terms with
    texts and words random (`stats.texts_and_words_test`): per text, the mean `metric` of the own terms
    minus that of the other terms (texts with both), mean difference with a bootstrap CI, p_text (Wilcoxon
    over the texts), p_word (own words against other words, permuted; p_word_min: the smallest it can be),
    p_value the larger, p_holm across the models. Models trained on every specialty are left out. The
    control words' shift is common to both groups of a text and cancels.

    `seen`: per model, the terms its training questions held (the seen/unseen analysis's "seen" group):
    they are left out of both sides ("terms": "unseen"), so that own vs other is specialty knowledge, not
    memorisation of training terms, which are mostly the own specialty's; a model without it compares
    all its terms ("terms": "all")."""
    rows = []
    for name, comp in comparisons.items():
        own = own_specialties(str(name), trained_on)
        if not own:
            continue
        scored = comp.scored()
        terms = cast(pd.DataFrame, scored[~scored["is_control"]])
        kept = (seen or {}).get(str(name))
        if kept is not None:
            terms = cast(pd.DataFrame, terms[~terms["term"].isin(kept)])
        is_own = terms["specialties"].map(lambda s, own=own: is_own_term(s, own))
        is_other = terms["specialties"].map(lambda s: len(s) > 0) & ~is_own
        test = texts_and_words_test(
            cast(pd.DataFrame, terms[is_own]), cast(pd.DataFrame, terms[is_other]), metric, n_boot=n_boot, n_perm=n_perm
        )
        rows.append(
            {
                "finetune_specialty": str(name),
                "own_specialty": ", ".join(_spelled(cast(pd.Series, terms["specialties"]), own)),
                "terms": "all" if kept is None else "unseen",
                **named_word_counts(test, "n_own_words", "n_other_words"),
            }
        )
    out = pd.DataFrame(rows, columns=OWN_COLUMNS[:-1])
    out["p_holm"] = holm(out["p_value"]) if len(out) else []
    return out


def _spelled(specialties: pd.Series, own: set[str]) -> list[str]:
    """The own specialties as the terms spell them ("Neurology", not the lower-cased key), else the keys."""
    found = sorted({str(x) for s in specialties for x in s if str(x).lower() in own})
    return found or sorted(own)
