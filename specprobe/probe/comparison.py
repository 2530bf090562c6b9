"""`Comparison`: per-occurrence base vs tuned log-probabilities, with per-specialty and per-term views."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
import pandas as pd

from specprobe.core.results import Result
from specprobe.probe.inputs import UNASSIGNED
from specprobe.probe.stats import (
    N_PERM,
    cluster_bootstrap_mean,
    estimate_fields,
    finite_rows,
    holm,
    texts_and_words_test,
)

if TYPE_CHECKING:
    from specprobe.probe.prepare import Prepared

METRICS = ("delta", "delta_per_token")


class Comparison(Result):
    """One row per occurrence of a term or control word in a text; `delta = logp_tuned - logp_base`.

    Summaries use `delta_per_token` by default (sum over the term's tokens divided by their
    count), so multi-token terms and one-token control words are on the same scale.
    """

    kind: ClassVar[str] = "comparison"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties", "text_specialties")
    columns: ClassVar[list[str]] = [
        "text_id",
        "term",
        "specialties",
        "text_specialties",
        "surface",
        "start",
        "end",
        "n_tokens",
        "logp_base",
        "logp_tuned",
        "delta",
        "delta_per_token",
        "token_logp_base",
        "token_logp_tuned",
        "is_control",
        "flags",
    ]

    @property
    def missing(self) -> list[str]:
        """Terms found in no text: reported, never silently dropped."""
        return list(self.extras.get("missing", []))

    def scored(self) -> pd.DataFrame:
        """Rows with a finite delta (drops occurrences that could not be scored, e.g. unconditioned starts)."""
        df = self.to_pandas()
        df["is_control"] = df["is_control"].astype(bool)  # an empty table read back has no dtype: `~` must negate
        return finite_rows(df)

    def _check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")

    def by_term(self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per term: n, mean delta and a 95% CI that resamples texts."""
        self._check_metric(metric)
        rows = []
        for key, g in self.scored().groupby(["term", "is_control"], sort=True):
            term, is_control = cast(tuple, key)
            est = cluster_bootstrap_mean(g[metric], g["text_id"], n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "term": term,
                    "is_control": is_control,
                    "specialties": g["specialties"].iloc[0],
                    "n": est.n,
                    "n_texts": est.n_clusters,
                    "mean_logp_base": g["logp_base"].mean(),
                    "mean_logp_tuned": g["logp_tuned"].mean(),
                    f"mean_{metric}": est.mean,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                }
            )
        return pd.DataFrame(rows)

    def by_specialty(
        self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0, n_perm: int = N_PERM
    ) -> pd.DataFrame:
        """Per term specialty: mean delta with a 95% text-level bootstrap CI, and the terms against the
        control words with texts and words both random (`stats.texts_and_words_test`): minus_control (per
        text, mean term delta minus mean control delta) with p_text (Wilcoxon over the texts), p_word (the
        specialty's term words against the control words, permuted; p_word_min: the smallest it can be),
        p_value = the larger (1 if they disagree in sign), Holm-adjusted across specialties (p_holm).
        A term of several specialties counts in each."""
        self._check_metric(metric)
        df = self.scored()
        terms = cast(pd.DataFrame, df[~df["is_control"]]).copy()
        terms["specialty"] = terms["specialties"].map(lambda s: tuple(s) or (UNASSIGNED,))
        terms = terms.explode("specialty")
        ctrl = cast(pd.DataFrame, df[df["is_control"]])
        rows = []
        for spec, g in terms.groupby("specialty", sort=True):
            est = cluster_bootstrap_mean(g[metric], g["text_id"], n_boot=n_boot, seed=seed)
            test = texts_and_words_test(g, ctrl, metric, n_boot=n_boot, seed=seed, n_perm=n_perm)
            rows.append({"specialty": spec, **estimate_fields(est, g, metric), **_against_control(test)})
        if len(ctrl):
            est = cluster_bootstrap_mean(ctrl[metric], ctrl["text_id"], n_boot=n_boot, seed=seed)
            rows.append({"specialty": "control", **estimate_fields(est, ctrl, metric), **_against_control(None)})
        out = pd.DataFrame(rows)
        if len(out):
            out["p_holm"] = holm(out["p_value"])
        return out

    def summary(self, metric: str = "delta_per_token", *, table: pd.DataFrame | None = None) -> str:
        """A plain-text per-specialty table for terminals and logs (`table`: this comparison's `by_specialty(metric)`
        when already computed, so that its permutation tests do not run twice)."""
        table = self.by_specialty(metric) if table is None else table
        if table.empty:
            return "no scored occurrences"
        cols = [
            "specialty",
            "n",
            "n_terms",
            "n_texts",
            f"mean_{metric}",
            "ci_low",
            "ci_high",
            "minus_control",
            "p_holm",
        ]
        return cast(pd.DataFrame, table[cols]).to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _against_control(test: dict | None) -> dict:
    """`by_specialty`'s term-vs-control columns from `texts_and_words_test` (None: the control row's NaNs)."""
    nan = math.nan
    t = test or {"n_pairs": 0, "n_words_a": 0, "n_words_b": 0}
    return {
        "minus_control": t.get("mean_diff", nan),
        "minus_control_ci_low": t.get("ci_low", nan),
        "minus_control_ci_high": t.get("ci_high", nan),
        "n_pairs": t["n_pairs"],
        "n_words": t["n_words_a"],
        "n_control_words": t["n_words_b"],
        "p_text": t.get("p_text", nan),
        "p_word": t.get("p_word", nan),
        "p_word_min": t.get("p_word_min", nan),
        "p_value": t.get("p_value", nan),
    }


def occurrence_rows(prep: Prepared, scored: dict[str, list]) -> list[dict]:
    """One row per occurrence (`Comparison.columns`): its log-probability under base and tuned (NaN where not
    scorable), from the prepared occurrences and each variant's scored items (compare, trajectory)."""
    rows = []
    for oi, occ in enumerate(prep.occs):
        rec = prep.records[occ.text_index]
        item_i, slots = prep.where[oi]
        if item_i >= 0:
            tok_b = scored["base"][item_i].logps[slots]
            tok_t = scored["tuned"][item_i].logps[slots]
            lb, lt = float(tok_b.sum()), float(tok_t.sum())
        else:
            tok_b = tok_t = np.array([])
            lb = lt = math.nan
        rows.append(
            {
                "text_id": rec.id,
                "term": occ.term,
                "specialties": occ.specialties,
                "text_specialties": rec.specialties,
                "surface": rec.text[occ.start : occ.end],
                "start": occ.start,
                "end": occ.end,
                "n_tokens": occ.n_tokens,
                "logp_base": lb,
                "logp_tuned": lt,
                "delta": lt - lb,
                "delta_per_token": (lt - lb) / occ.n_tokens if occ.n_tokens else math.nan,
                "token_logp_base": [float(x) for x in tok_b],
                "token_logp_tuned": [float(x) for x in tok_t],
                "is_control": occ.is_control,
                "flags": ",".join(occ.flags),
            }
        )
    return rows
