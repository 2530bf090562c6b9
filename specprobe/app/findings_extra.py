"""Findings and readings of the optional analyses, when the runner passes their results to the report:
seen vs unseen training terms (`SeenUnseen`), the accuracy link (`AccuracyLink`), the course over training
(`Trajectory`) and the general-text control (`GeneralTextShift`). Each returns a (`Finding`, reading) pair
written from the result's own tables; absent results give nothing (see `app/report.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.app.findings import ALPHA, _num, _verdict, mean_of, p_text, too_few_words
from specprobe.reports.analyses import onset_words
from specprobe.reports.page import Finding
from specprobe.utils.pvalues import holm

Q_SEEN = "Do terms seen in the training questions rise more than unseen terms of the same specialty (memorisation)?"
Q_LINK = "Does the change in the terms' probability go with the change in accuracy?"
Q_TRAJECTORY = "When during training does the own specialty pull ahead of the others?"
Q_GENERAL = "Does general English text become less likely (away from general language)?"


def seen_unseen_finding(
    results: Mapping[str, Any],
    n_boot: int = 2000,
    link: str = "",
    *,
    tests: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[Finding, str]:
    """The seen − unseen_same contrast of each model (`SeenUnseen.tests`), Holm across the models (the finding
    counts models, as the own-vs-other one does; each model's own p_holm corrects within its contrasts only).
    `tests`: each model's `tests(n_boot=n_boot)` when already computed (its permutation tests then run once)."""
    rows = []
    for name, r in results.items():
        t = r.tests(n_boot=n_boot) if tests is None else tests[name]
        rows.append(t[t["contrast"] == "seen - unseen_same"].assign(model=str(name)))
    tab = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    tested = tab[tab["p_value"].notna()].copy() if len(tab) else tab
    if tested.empty:
        why = "no text holds both seen and unseen terms of a model's specialty."
        return Finding(Q_SEEN, f"Not tested: {why}", "", "not tested", link), why.capitalize()
    tested["p_holm"] = holm(tested["p_value"])  # across the models the verdict counts
    untested = sorted(set(tab["model"]) - set(tested["model"]))
    up = tested[(tested["p_holm"] < ALPHA) & (tested["mean_diff"] > 0)]
    down = tested[(tested["p_holm"] < ALPHA) & (tested["mean_diff"] < 0)]
    mean, n = mean_of(tested, "mean_diff"), len(tested)
    verdict = _verdict(len(up), n)
    if untested and verdict == "yes":
        verdict = "partly"  # every tested model is not every model
    if verdict in ("yes", "partly"):
        answer = (
            f"{'Yes' if verdict == 'yes' else 'Partly'}: in {len(up)} of {n} models, terms seen in training rose "
            "more than unseen terms of the same specialty, significant after Holm correction across the models"
            + (f"; {len(untested)} more could not be tested." if untested else ".")
        )
    elif len(down):
        answer = (
            "Not shown: in no model did terms seen in training rise significantly more than unseen terms of the "
            f"same specialty after Holm correction; in {len(down)} of {n} they rose significantly less "
            f"(mean {_num(mean, True)} logp/token)."
        )
    else:
        answer = (
            f"Not shown: seen terms moved {_num(mean, True)} logp/token against unseen terms of the same "
            "specialty, not significant after Holm correction."
        )
    evidence = (
        f"Mean seen − unseen (same specialty) {_num(mean, True)} logp/token; tested with texts and words both "
        "random: a paired Wilcoxon signed-rank test per text and a permutation test of the seen words against "
        "the unseen words, p the larger of the two; Holm across the models; smallest "
        f"{p_text(tested['p_holm'].min(), 'p_holm')}."
    )
    evidence += too_few_words(tested, "model(s)", "difference")
    if untested:
        evidence += f" {len(untested)} model(s) could not be tested (no text holds both groups): {', '.join(untested)}."
    evidence += _seen_elsewhere(results)
    reading = (
        "A term 'seen' in a model's training questions that rises far more than unseen terms of the same "
        "specialty points to memorised questions rather than learned knowledge. "
        + "; ".join(
            f"{r['model']}: {_num(r['mean_diff'], True)} ({p_text(r['p_holm'], 'p_holm')})"
            for r in cast(pd.DataFrame, tested).to_dict(orient="records")
        )
        + "."
    )
    return Finding(Q_SEEN, answer, evidence, verdict, link), reading


def _why_no_correlation(result: Any, n: int) -> str:
    """Why Spearman's rho is undefined: too few questions (`n`: the questions, the independent unit, not
    the question × model rows), no right/wrong change, or one term Δ for all."""
    if n < 3:
        return f"only {n} question(s) have both a term change and an accuracy outcome; a correlation needs 3."
    frame = result.to_pandas()
    both = frame[np.isfinite(frame["term_delta"].astype(float)) & np.isfinite(frame["acc_change"].astype(float))]
    if both["acc_change"].nunique() < 2:
        return "no question changed between right and wrong, so there is no correlation to test."
    return "every question has the same term change, so there is no correlation to test."


def accuracy_link_finding(result: Any, n_boot: int = 2000, link: str = "", *, table: Any = None) -> tuple[Finding, str]:
    """Spearman's rho of the question's term Δ with its accuracy change, all questions (`AccuracyLink`).
    `table`: the result's `correlations(n_boot=n_boot, n_perm=n_boot)` when already computed (each outcome's
    rows are the same alone or beside the other's: its tests then run once)."""
    if table is not None and (table["outcome"] == "acc_change").any():
        table = table[table["outcome"] == "acc_change"]
    else:
        table = result.correlations(["acc_change"], n_boot=n_boot, n_perm=n_boot)
    row = table[table["specialty"] == "ALL"]
    if row.empty or pd.isna(row["rho"].iloc[0]):
        why = _why_no_correlation(result, 0 if row.empty else int(row["n_questions"].iloc[0]))
        return Finding(Q_LINK, f"Not tested: {why}", "", "not tested", link), why[0].upper() + why[1:]
    r = row.iloc[0]
    rho, p = float(r["rho"]), float(r["p_perm"])
    stats = (
        f"rho = {_num(rho, True)} [{_num(r['ci_low'], True)}, {_num(r['ci_high'], True)}], {p_text(p, 'permutation p')}"
    )
    if pd.isna(p):  # rho, but within every specialty nothing to shuffle: no test, not "p = 1"
        why = (
            "within every specialty the questions' term changes, or their accuracy changes, are all alike, so "
            "the permutation test (which moves questions among those of their specialty) has nothing to shuffle"
        )
        answer = f"Not tested: {why} (pooled rho = {_num(rho, True)} [{_num(r['ci_low'], True)}, {_num(r['ci_high'], True)}])."
        reading = (
            f"The pooled rank correlation is {_num(rho, True)}, but {why}: what association there is lies between "
            "models or specialties, not between questions."
        )
        return Finding(Q_LINK, answer, "", "not tested", link), reading
    if p < ALPHA:
        way = "more" if rho > 0 else "less"
        answer = f"{'Yes' if rho > 0 else 'Opposite'}: questions whose terms rose more were {way} often newly answered correctly ({stats})."
        verdict = "yes" if rho > 0 else "not shown"
    else:
        answer = f"Not shown: the term change and the accuracy change are not significantly correlated ({stats})."
        verdict = "not shown"
    evidence = (
        f"Spearman's rank correlation over {int(r['n_questions'])} questions, 95% CI resampling questions; "
        "permutation test moving each question, with all its models' rows, among the questions of its specialty "
        "(each model's row takes that model's term change of the question it lands on)."
    )
    reading = (
        "If the probability change is what improves answers, questions whose terms rose more should be the ones "
        f"that turned from wrong to right: a correlation near +1. Here {stats}."
    )
    return Finding(Q_SEEN, answer, evidence, verdict, link), reading


def _seen_elsewhere(results: Mapping[str, Any]) -> str:
    """How many seen terms are only other specialties' (the seen group holds every specialty's, so seen −
    unseen_same also sets other specialties' terms against the own one's), as a caveat; "" when none is."""
    seen = other = 0
    for r in results.values():
        trained = {str(t).lower() for t in (getattr(r, "trained_on", None) or [])}
        if not trained or "all" in trained or not hasattr(r, "seen_terms"):
            continue
        terms = r.seen_terms()
        seen += len(terms)
        other += sum(not ({str(x).lower() for x in s} & trained) for s in terms.values())
    if not other:
        return ""
    return (
        f" {other} of the {seen} seen terms are only other specialties' (the seen group holds every specialty's "
        "terms the training questions held), so the contrast also sets other specialties' terms against the own."
    )


def trajectory_finding(
    results: Mapping[str, Any],
    n_boot: int = 2000,
    link: str = "",
    *,
    advantage: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[Finding, str]:
    """The onset of the own-specialty advantage over checkpoints (`Trajectory.onset`) of each model.
    `advantage`: each model's `own_advantage(n_boot=n_boot)` when already computed (its tests then run once)."""
    onsets = {
        str(k): r.onset(n_boot=n_boot, table=None if advantage is None else advantage[k]) for k, r in results.items()
    }
    applicable = {k: o for k, o in onsets.items() if o["first"] != "not applicable"}
    if not applicable:
        unknown = [k for k, r in results.items() if not getattr(r, "trained_on", None)]
        why = (
            "the models' training specialties are unknown (checkpoints given without their run's manifest: pass "
            "specialty=), so no specialty is known to be their own."
            if unknown
            else "every model was trained on all specialties, so no specialty is its own."
        )
        return Finding(Q_TRAJECTORY, f"Not tested: {why}", "", "not tested", link), why.capitalize()
    last = {str(k): max(r.steps) for k, r in results.items() if getattr(r, "steps", None)}
    # "stays ahead" needs two checkpoints or more: ahead at the last one alone is not a course
    sustained = {
        k: o for k, o in applicable.items() if isinstance(o["sustained"], int) and o["sustained"] < last.get(k, -1)
    }
    at_end = [k for k, o in applicable.items() if k not in sustained and isinstance(o["sustained"], int)]
    verdict = _verdict(len(sustained), len(applicable))
    if at_end and verdict == "not shown":
        verdict = "partly"
    per = "; ".join(f"{k}: {onset_words(o)}" for k, o in applicable.items())
    if sustained:
        lead = "Yes" if verdict == "yes" else "Partly"
        answer = (
            f"{lead}: in {len(sustained)} of {len(applicable)} models the own specialty pulls ahead and stays ahead "
            f"to the last checkpoint, significant after Holm correction ({per})."
        )
    elif at_end:
        answer = (
            f"Partly: in {len(at_end)} of {len(applicable)} models the own specialty is ahead at the last checkpoint "
            f"only, significant after Holm correction ({per})."
        )
    else:
        answer = (
            "Not shown: in no model does the own specialty stay ahead to the last checkpoint, significant after "
            f"Holm correction ({per})."
        )
    evidence = (
        "Own − other specialties' terms per checkpoint, texts and words both random: a paired Wilcoxon "
        "signed-rank test per text and a permutation test of the own specialty's term words against the other "
        "specialties' term words, p the larger of the two; Holm across checkpoints (p_holm < 0.05)."
    )
    reading = (
        "Each checkpoint of training is compared with the base model. Specialty knowledge that builds up with "
        f"training shows as the own specialty's line rising away from the others. {per}."
    )
    return Finding(Q_TRAJECTORY, answer, evidence, verdict, link), reading


def general_text_finding(shifts: Mapping[str, Any], n_boot: int = 2000, link: str = "") -> tuple[Finding, str]:
    """One finding over every adapter's general-text Δ per token and its 95% CI (`GeneralTextShift.row`); a
    CI below (above) 0 is the test of "less (more) likely"."""
    rows = {str(k): s.row(n_boot=n_boot) for k, s in shifts.items()}
    # the models with a value: min/max over a NaN would depend on the order of the models
    means = [m for m in (float(r["mean_delta_per_token"]) for r in rows.values()) if np.isfinite(m)]
    lower = [k for k, r in rows.items() if pd.notna(r["ci_high"]) and r["ci_high"] < 0]
    higher = [k for k, r in rows.items() if pd.notna(r["ci_low"]) and r["ci_low"] > 0]
    n, n_texts = len(rows), max((r["n_texts"] for r in rows.values()), default=0)
    span = (
        _num(means[0], True)
        if len(means) == 1
        else f"{_num(min(means, default=np.nan), True)} to {_num(max(means, default=np.nan), True)}"
    )
    stats = f"{span} logp/token over {n_texts} texts"
    if lower and len(lower) == n:
        answer, verdict = f"Yes: general English text became less likely under all {n} models ({stats}).", "yes"
    elif lower:
        more = f", more likely under {len(higher)}" if higher else ""  # a significant rise is not left unsaid
        answer, verdict = f"Partly: less likely under {len(lower)} of {n} models{more} ({stats}).", "partly"
    elif higher:
        answer, verdict = (
            f"No: general English text became more likely under {len(higher)} of {n} models ({stats}).",
            "not shown",
        )
    else:
        answer, verdict = f"Not shown: the change of general English text is within chance ({stats}).", "not shown"
    evidence = (
        "Mean Δ logp per token of whole general-English texts per model; 95% CI resampling texts (a CI below 0 is "
        "the test; each model's alone, not corrected across models). A fall is what a shift towards the clinical "
        "domain predicts, and also what forgetting after any fine-tuning would give: no non-clinical fine-tune "
        "here tells the two apart."
    )
    per = "; ".join(
        f"{k}: {_num(r['mean_delta_per_token'], True)} [{_num(r['ci_low'], True)}, {_num(r['ci_high'], True)}]"
        for k, r in rows.items()
    )
    reading = (
        "Fine-tuning on clinical questions can make a model expect clinical language everywhere; then ordinary "
        "English loses probability (so can forgetting after fine-tuning on any data). The general texts changed "
        f"by {per} logp/token (95% CIs)."
    )
    return Finding(Q_GENERAL, answer, evidence, verdict, link), reading
