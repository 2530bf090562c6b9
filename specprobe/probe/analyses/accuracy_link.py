"""`accuracy_link(evaluation, comparison)`: does a question's change in term probability go with its
change in accuracy?

Per (adapter, question): the accuracy change correct(tuned) - correct(base) (-1, 0 or +1), the change
of the correct option's log-likelihood margin (its log-likelihood minus the best other option's), and
the mean term delta of that question's text in the Comparison. Their Spearman correlation is reported
per specialty and overall with a question-clustered bootstrap CI and a within-specialty permutation
test that moves each question with all its adapters' rows (`rank_stats`).

Layering: `probe` may not import `finetune`, so the evaluation is read as a table, from anything with
`to_pandas()` (an `MCEvaluation`), an `AccuracyMatrix` (its per-item outcomes; margins where it stored the
options' log-likelihoods), a
DataFrame with MCEvaluation's columns, or a saved result's path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd

from specprobe.core.models import adapter_weights_sha256
from specprobe.core.results import Result
from specprobe.probe.analyses.rank_stats import RankCorrelation, rank_correlation
from specprobe.probe.comparison import METRICS, Comparison
from specprobe.probe.identity import check_same_weights
from specprobe.probe.stats import holm
from specprobe.terms.selection import NO_SPECIALTY

BASE = "base"
OVERALL = "ALL"
OUTCOMES = ("acc_change", "margin_change")
PREDICTORS = ("term_delta", "term_minus_control")


class AccuracyLink(Result):
    """One row per (adapter, question) scored in both the evaluation and the Comparison: the question's
    mean term delta (and minus its control words'), base and tuned correctness and margins, and their
    changes. `correlations()` gives Spearman's rho with CIs and permutation p-values."""

    kind: ClassVar[str] = "accuracy_link"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = [
        "adapter",
        "item_id",
        "specialties",
        "n_occurrences",
        "term_delta",
        "control_delta",
        "term_minus_control",
        "correct_base",
        "correct_tuned",
        "acc_change",
        "margin_base",
        "margin_tuned",
        "margin_change",
    ]

    def correlations(
        self,
        outcomes: Sequence[str] | None = None,
        *,
        x: str = "term_delta",
        n_boot: int = 2000,
        n_perm: int = 2000,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Per outcome and specialty (a question of several counts in each; plus "ALL"): n questions,
        Spearman's rho of `x` with the outcome, its 95% CI (bootstrap over questions, all adapters'
        rows of a question together), the two-sided permutation p (x shuffled between the
        questions of a specialty, all of a question's rows together) and p_holm (Holm across the specialties of one outcome; not for ALL), and a note saying
        why rho or p is missing (fewer than 3 questions, no variation, nothing to permute). `outcomes`:
        default both, leaving out margin_change where there are no margins (an older AccuracyMatrix)."""
        if outcomes is None:
            outcomes = [o for o in OUTCOMES if np.isfinite(self._frame[o].astype(float)).any()] or list(OUTCOMES)
        if x not in PREDICTORS:
            raise ValueError(f"x must be one of {PREDICTORS}, got {x!r}")
        bad = [o for o in outcomes if o not in OUTCOMES]
        if bad:
            raise ValueError(f"outcomes must be among {OUTCOMES}, got {bad[0]!r}")
        # each specialty once (a QA file may list one twice: the question's rows must not count twice in
        # it, as in the accuracy table), in a fixed order (the ALL strata are specialty *sets*)
        df = self._frame.assign(
            _specs=self._frame["specialties"].map(lambda s: tuple(sorted(set(s))) or (NO_SPECIALTY,))
        )
        # the permutation strata: a specialty's questions (for ALL: of one specialty set); a question's
        # rows under every adapter move together, each adapter's row taking that adapter's x (rank_stats)
        parts: list[tuple[Any, pd.DataFrame, Any]] = [
            (spec, g, None) for spec, g in df.explode("_specs").groupby("_specs", sort=True)
        ]
        parts.append((OVERALL, df, df["_specs"].map("|".join)))
        rows = []
        for outcome in outcomes:
            for spec, g, strata in parts:
                est = rank_correlation(
                    g[x],
                    g[outcome],
                    clusters=g["item_id"],
                    strata=strata,
                    slots=g["adapter"],
                    n_boot=n_boot,
                    n_perm=n_perm,
                    seed=seed,
                )
                rows.append(
                    {
                        "outcome": outcome,
                        "specialty": spec,
                        "n": est.n,
                        "n_questions": est.n_clusters,
                        "rho": est.rho,
                        "ci_low": est.ci_low,
                        "ci_high": est.ci_high,
                        "p_perm": est.p_value,
                        "note": _note(est),
                    }
                )
        out = pd.DataFrame(rows)
        out["p_holm"] = np.nan
        for outcome in outcomes:
            mask = (out["outcome"] == outcome) & (out["specialty"] != OVERALL)
            out.loc[mask, "p_holm"] = holm(out.loc[mask, "p_perm"])
        out["note"] = out.pop("note")  # last
        out.attrs.update({"x": x, "n_boot": n_boot, "n_perm": n_perm})
        return out

    def summary(self, x: str = "term_delta") -> str:
        """Plain-text correlation table for terminals and logs."""
        table = self.correlations(x=x)
        return table.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _note(est: RankCorrelation) -> str:
    """Why a correlations row has no rho or no p ("" where it has both)."""
    if est.n_clusters < 3:
        return f"only {est.n_clusters} question(s): a correlation needs 3"
    if not np.isfinite(est.rho):
        return "no variation: the term change or the outcome is the same for every question"
    if not np.isfinite(est.p_value):
        return "no permutation test: no specialty has two questions that differ in both"
    return ""


# -- reading the inputs ------------------------------------------------------------------------------
#: the saved result kinds each input takes, and how errors describe them (a saved result records its kind)
EVALUATION_KINDS = ("mc_evaluation", "accuracy_matrix")
COMPARISON_KINDS = ("comparison",)
_EXPECTED = {
    "evaluation": "an evaluation (an MCEvaluation from `specprobe evaluate`, or an AccuracyMatrix from --matrix)",
    "comparison": "a Comparison (comparison.json.gz from `specprobe compare`)",
}


def _load(obj: Any, role: str) -> Any:
    """`obj`, or the result saved at the path `obj`, checked to be of a kind the `role` input takes."""
    if not isinstance(obj, (str, os.PathLike)):
        _check_kind(obj, role)
        return obj
    result = Result.load(obj)
    _check_kind(result, role, obj)
    return result


def _check_kind(obj: Any, role: str, path: str | os.PathLike | None = None) -> None:
    """A result of another kind than the `role` input ("evaluation" or "comparison") takes is a ValueError
    naming the file it was read from, the kind it holds and the one expected (a table or another object
    is checked later, by its columns)."""
    kinds = EVALUATION_KINDS if role == "evaluation" else COMPARISON_KINDS
    if not isinstance(obj, Result) or obj.kind in kinds:
        return
    other = "comparison" if role == "evaluation" else "evaluation"
    swapped = obj.kind in (COMPARISON_KINDS if role == "evaluation" else EVALUATION_KINDS)
    what = f"the {role} file {path} holds a saved" if path is not None else f"the {role} is a"
    raise ValueError(
        f"{what} {type(obj).__name__} result (kind {obj.kind!r}), not {_EXPECTED[role]}"
        + (f"; swapped with the {other}?" if swapped else "")
    )


def evaluation_items(evaluation: Any) -> pd.DataFrame:
    """Per-(model, question) rows from an MCEvaluation (or its path, or its `to_pandas()` table) or an
    AccuracyMatrix (its stored per-item outcomes, with option log-likelihoods where stored)."""
    evaluation = _load(evaluation, "evaluation")
    if getattr(evaluation, "kind", None) == "accuracy_matrix":
        return _matrix_items(evaluation)
    frame = evaluation if isinstance(evaluation, pd.DataFrame) else getattr(evaluation, "to_pandas", lambda: None)()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"evaluation must be an MCEvaluation, an AccuracyMatrix or a DataFrame, got {type(evaluation).__name__}"
        )
    missing = [c for c in ("model", "item_id", "correct") if c not in frame]
    if missing:
        raise ValueError(f"the evaluation table has no column {missing[0]!r} (columns: {list(frame.columns)})")
    return frame.assign(item_id=frame["item_id"].astype(str))


def _matrix_items(matrix: Any) -> pd.DataFrame:
    """Per-(model, question) rows of an AccuracyMatrix's stored outcomes (extras["items"]), with each
    option's log-likelihood and the answer's index where the matrix stored them (newer matrices do)."""
    items = matrix.extras.get("items") or {}
    if not items:
        raise ValueError("the AccuracyMatrix holds no per-question outcomes (extras 'items'); re-run the matrix")
    rows = []
    for m, d in items.items():
        n = len(d["ids"])
        logps, answers = d.get("option_logp") or [None] * n, d.get("answer_index") or [None] * n
        norms = d.get("correct_norm") or [None] * n  # older matrices may lack it: norm=True is refused then
        copies = d.get("answer_indices") or [None] * n  # older matrices: the first copy only
        for i, c, cn, lp, a, aa in zip(d["ids"], d["correct"], norms, logps, answers, copies):
            row = {"model": m, "item_id": str(i), "correct": bool(c), "option_logp": lp, "answer_index": a}
            rows.append({**row, "answer_indices": aa, "correct_norm": None if cn is None else bool(cn)})
    return pd.DataFrame(rows)


def _answer_set(row: Mapping) -> list[int] | None:
    """The indices of the options that are the answer: `answer_indices` (every copy of the answer's
    text) where stored, else the one `answer_index`."""
    copies = row.get("answer_indices")
    if isinstance(copies, (list, tuple, np.ndarray)) and len(copies):
        return [int(a) for a in copies]
    ans = row.get("answer_index")
    return None if ans is None or (isinstance(ans, float) and np.isnan(ans)) else [int(ans)]


def _margin(row: Mapping, norm: bool) -> float:
    """The best correct option's log-likelihood minus the best wrong option's (per character with
    `norm`); a copy of the answer's text is a correct option, not a rival."""
    lp = row.get("option_logp")
    answers = _answer_set(row)
    if lp is None or answers is None or not isinstance(lp, (list, tuple, np.ndarray)):
        return float("nan")
    if len(lp) - len(set(answers)) < 1:
        return float("nan")
    values = np.asarray(lp, dtype=float)
    if norm:  # per character: without the options' lengths (an AccuracyMatrix stores none) there is no margin
        chars = row.get("option_n_chars")
        if not isinstance(chars, (list, tuple, np.ndarray)) or len(chars) != len(values):
            return float("nan")
        values = values / np.maximum(1.0, np.asarray(chars, dtype=float))
    wrong = np.ones(len(values), dtype=bool)
    wrong[answers] = False
    return float(values[answers].max() - values[wrong].max())


def _per_question_eval(items: pd.DataFrame, model: str, norm: bool) -> pd.DataFrame:
    g = cast(pd.DataFrame, items[items["model"] == model])
    twice = [str(i) for i in g.loc[g["item_id"].duplicated(), "item_id"]]
    if twice:
        raise ValueError(f"the evaluation has question {twice[0]!r} twice for model {model!r}")
    col = "correct_norm" if norm else "correct"
    if norm and (col not in g or bool(g[col].isna().any())):
        raise ValueError(f"norm=True needs each question's acc_norm outcome (correct_norm) of model {model!r}")
    out = pd.DataFrame({"item_id": g["item_id"], "correct": g[col].astype(float)})
    out["margin"] = [_margin(r, norm) for r in g.to_dict("records")]
    if "specialties" in g:
        seq = (list, tuple, np.ndarray)  # a table read with pandas holds arrays where a Result holds tuples
        out["specialties"] = g["specialties"].map(lambda s: tuple(s) if isinstance(s, seq) else ())
    return out.set_index("item_id")


def _per_question_delta(comp: Any, metric: str) -> pd.DataFrame:
    """Per text: number of term occurrences, mean term delta, mean control-word delta, its specialties."""
    comp = _load(comp, "comparison")
    frame = comp.scored() if isinstance(comp, Comparison) else comp
    if not isinstance(frame, pd.DataFrame) or metric not in frame or "text_id" not in frame:
        raise TypeError(f"comparison must be a Comparison (or its path, or its table with text_id and {metric})")
    frame = cast(pd.DataFrame, frame[np.isfinite(frame[metric].astype(float))])
    is_ctrl = frame["is_control"].astype(bool)
    terms, ctrl = cast(pd.DataFrame, frame[~is_ctrl]), cast(pd.DataFrame, frame[is_ctrl])
    by_text = terms.groupby("text_id", sort=False)  # the texts in the Comparison's order
    out = pd.DataFrame({"n_occurrences": by_text[metric].size(), "term_delta": by_text[metric].mean()})
    out["control_delta"] = cast(pd.Series, ctrl.groupby("text_id")[metric].mean()).reindex(out.index)
    if "text_specialties" in terms:
        out["text_specialties"] = by_text["text_specialties"].first().map(tuple)
    out.index = out.index.astype(str)
    return out


def _models(items: pd.DataFrame, comparison: Any, tuned: str | None, base: str) -> dict[str, Any]:
    """{tuned model label in the evaluation: its comparison}."""
    labels = list(dict.fromkeys(items["model"]))
    if base not in labels:
        raise ValueError(f"the evaluation has no base model {base!r} (models: {labels}); pass base=")
    if isinstance(comparison, Mapping):
        absent = [k for k in comparison if k not in labels]
        if absent:
            raise ValueError(f"comparison {absent[0]!r} has no model of that name in the evaluation (models: {labels})")
        return {str(k): v for k, v in comparison.items()}
    if tuned is None:
        others = [m for m in labels if m != base]
        if len(others) != 1:
            raise ValueError(f"the evaluation has models {labels}: pass tuned= (the adapter this comparison is of)")
        tuned = others[0]
    if tuned not in labels:
        raise ValueError(f"the evaluation has no model {tuned!r} (models: {labels})")
    return {str(tuned): comparison}


def _join(label: str, base_q: pd.DataFrame, tuned_q: pd.DataFrame, deltas: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of one adapter: questions in the evaluation (base and tuned) and in its comparison."""
    ids = [i for i in deltas.index if i in base_q.index and i in tuned_q.index]
    d, b, t = deltas.loc[ids], base_q.loc[ids], tuned_q.loc[ids]
    if "specialties" in t:
        specs = list(t["specialties"])
    elif "text_specialties" in d:
        specs = list(d["text_specialties"])
    else:
        specs = [()] * len(ids)
    return pd.DataFrame(
        {
            "adapter": name,
            "item_id": ids,
            "specialties": specs,
            "n_occurrences": d["n_occurrences"].to_numpy(dtype=int),
            "term_delta": d["term_delta"].to_numpy(dtype=float),
            "control_delta": d["control_delta"].to_numpy(dtype=float),
            "term_minus_control": (d["term_delta"] - d["control_delta"]).to_numpy(dtype=float),
            "correct_base": b["correct"].to_numpy(dtype=float),
            "correct_tuned": t["correct"].to_numpy(dtype=float),
            "acc_change": (t["correct"] - b["correct"]).to_numpy(dtype=float),
            "margin_base": b["margin"].to_numpy(dtype=float),
            "margin_tuned": t["margin"].to_numpy(dtype=float),
            "margin_change": (t["margin"] - b["margin"]).to_numpy(dtype=float),
        },
        columns=AccuracyLink.columns,
    )


def accuracy_link(
    evaluation: Any,
    comparison: Any,
    *,
    tuned: str | None = None,
    base: str = BASE,
    metric: str = "delta_per_token",
    norm: bool = False,
) -> AccuracyLink:
    """Join per-question accuracy changes with per-question term deltas (see the module doc).

    `evaluation`: an MCEvaluation of base and tuned (model labels "base" and "tuned"), an AccuracyMatrix
    (models "base" and the adapters' names), their `to_pandas()` table, or a saved file's path.
    `comparison`: that adapter's Comparison (or its path); or a mapping {evaluation model label:
    Comparison} for several adapters at once. `tuned`: the evaluation's label of the adapter (default:
    the one model besides `base`). `metric`: "delta_per_token" or "delta". `norm`: use acc_norm and
    per-character margins (refused without acc_norm outcomes; margins NaN without the options' lengths,
    as in an AccuracyMatrix). Questions are joined by id (the Comparison's text ids are the questions' ids
    when the texts are the evaluated questions); those in only one input are counted in `extras`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    evaluation = _load(evaluation, "evaluation")
    if isinstance(comparison, (str, os.PathLike)):  # read (and its kind checked) before the evaluation's columns
        comparison = _load(comparison, "comparison")
    items = evaluation_items(evaluation)
    named = {k: _load(v, "comparison") for k, v in _models(items, comparison, tuned, base).items()}
    base_q = _per_question_eval(items, base, norm)
    frames, unmatched = [], {}
    for label, comp in named.items():
        _check_same_models(evaluation, label, comp)
        deltas = _per_question_delta(comp, metric)
        tuned_q = _per_question_eval(items, label, norm)
        frame = _join(label, base_q, tuned_q, deltas, label)
        unmatched[label] = {
            "comparison_only": int(len(deltas) - len(frame)),
            "evaluation_only": int(len(tuned_q.index.difference(deltas.index))),
        }
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise ValueError(
            "no question is in both the evaluation and the comparison (are the comparison's texts the "
            "evaluated questions, with the same ids?)"
        )
    has_margin = bool(np.isfinite(frame["margin_change"]).any())
    meta = {"metric": metric, "norm": norm, "base_label": base, "adapters": list(named), "has_margins": has_margin}
    meta["evaluation"] = _provenance(evaluation, ("kind", "base", "base_weights_sha256", "data", "created"))
    meta["comparisons"] = {k: _provenance(c, ("tuned", "adapter_sha256", "created")) for k, c in named.items()}
    return AccuracyLink(frame, meta, {"unmatched": unmatched})


def _evaluated_weights(evaluation: Any, label: str) -> dict:
    """The base and adapter weights the evaluation recorded for its model `label` (what is unknown is left
    out): an MCEvaluation's are its tuned model's; an AccuracyMatrix records each adapter's under
    metadata["adapters"] (one saved before that: the first's only, the others read from their folders)."""
    meta = dict(getattr(evaluation, "metadata", {}) or {})
    out = {"base_weights_sha256": meta.get("base_weights_sha256")}
    if getattr(evaluation, "kind", None) == "mc_evaluation":
        out["adapter_sha256"] = meta.get("adapter_sha256")
    elif getattr(evaluation, "kind", None) == "accuracy_matrix":
        entry = (meta.get("adapters") or {}).get(label) or {}
        entry = entry if isinstance(entry, Mapping) else {}
        path = entry.get("path")
        first = path is not None and path == meta.get("tuned")  # a matrix saved before adapters had their own
        recorded = entry.get("adapter_sha256") or (meta.get("adapter_sha256") if first else None)
        out["adapter_sha256"] = recorded or adapter_weights_sha256(path)
    return out


def _check_same_models(evaluation: Any, label: str, comp: Any) -> None:
    """A comparison joined to the evaluation's model `label` must be of the same base and adapter weights."""
    compared = dict(getattr(comp, "metadata", {}) or {})
    check_same_weights(
        compared,
        _evaluated_weights(evaluation, label),
        f"the comparison given for {label!r}",
        f"the evaluation's {label!r}",
    )


def _provenance(obj: Any, keys: Sequence[str]) -> dict:
    """The identifying metadata of an input result (empty for a plain table)."""
    meta = dict(getattr(obj, "metadata", {}) or {})
    meta["kind"] = getattr(obj, "kind", "table")
    return {k: meta[k] for k in keys if k in meta}
