"""Assemble the experiment report from the runner's results (the only place that knows every result type).

The page a clinician reads in two minutes: the findings box first (each question of the study, its answer
in one sentence, the number and test behind it), then one section per question with a plain-language
reading written from the numbers, each chart once, significant heatmap cells marked, the method text in
one "How to read this" section, and the metadata last.

Optional analyses (`SeenUnseen`, `AccuracyLink`, `Trajectory`, `GeneralTextShift`) add a finding and a
section when given, as keyword arguments of `write_experiment_report` or as paths in the result's
`extras["paths"]` under the same names (see `OPTIONAL`); when absent, nothing of them is shown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from specprobe.app import findings as F
from specprobe.app import findings_extra as FX
from specprobe.app.report_stats import accuracy_vs_base, own_vs_other
from specprobe.reports import analyses as A
from specprobe.reports import sections as S
from specprobe.reports.page import Finding, Section, anchor

if TYPE_CHECKING:
    from specprobe.finetune import AccuracyMatrix


def accuracy_frame(accuracy: AccuracyMatrix) -> pd.DataFrame:
    """Long (fine-tuned on, test specialty, accuracy, CI, n) rows; the base model is the row 'base'; each
    fine-tuned cell against the base model's on the same questions (vs_base, p_value, p_holm:
    `report_stats.accuracy_vs_base`).

    The pooled row of each model (specialty "ALL") is left out: the heatmap is per test specialty.
    """
    from specprobe.finetune.evaluation import OVERALL

    df = accuracy.to_pandas()
    df = df.loc[df["specialty"] != OVERALL]
    out = pd.DataFrame(
        {
            "train_specialty": S.accuracy_rows(list(df["model"]), list(df["trained_on"])),  # else the model's name
            "test_specialty": df["specialty"],
            "accuracy": df["acc"],
            "acc_lo": df["acc_lo"],
            "acc_hi": df["acc_hi"],
            "n": df["n"],
            "acc_norm": df["acc_norm"],
        }
    )
    out.loc[df["model"] == "base", "train_specialty"] = "base"
    return accuracy_vs_base(out)


def layer_frame(views: dict[str, Any], n_boot: int = 1000) -> pd.DataFrame:
    """Per adapter and layer: mean lens delta log-prob per token of clinical terms and of control words, with CIs."""
    import numpy as np

    from specprobe.probe.stats import cluster_bootstrap_mean

    rows = []
    for name, view in views.items():
        w = view.wide()
        w = w[np.isfinite(w["delta_per_token"].astype(float))]
        for (is_control, layer), g in w.groupby(["is_control", "layer"], sort=True):
            est = cluster_bootstrap_mean(g["delta_per_token"], g["text_id"], n_boot=n_boot)
            rows.append(
                {
                    "group": name,
                    "model": "control words" if is_control else "clinical terms",
                    "layer": int(layer),
                    "mean_logp": est.mean,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "n": est.n,
                }
            )
    return pd.DataFrame(rows)


#: the optional analyses: keyword / extras["paths"] name -> (what it holds, a mapping per adapter?)
OPTIONAL: dict[str, tuple[str, bool]] = {
    "seen_unseen": ("SeenUnseen per adapter", True),
    "accuracy_link": ("one AccuracyLink over every adapter", False),
    "trajectory": ("Trajectory per adapter", True),
    "general_text": ("GeneralTextShift per adapter", True),
}


def _load(value: Any) -> Any:
    """A result, or the result saved at a path."""
    from specprobe.core.results import Result

    if isinstance(value, (str, os.PathLike)):
        import specprobe.probe.analyses  # noqa: F401  (registers trajectory and general_text_shift)

        return Result.load(value)
    return value


def optional_analyses(result: Any, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The optional analyses to show: from `given` (keyword arguments) or else the result's extras["paths"];
    a per-adapter one as {adapter: result}, loaded from paths. Absent or None ones are left out."""
    paths = dict(getattr(result, "extras", {}).get("paths", {}) or {})
    out: dict[str, Any] = {}
    for key, (_, per_adapter) in OPTIONAL.items():
        value = (given or {}).get(key)
        value = paths.get(key) if value is None else value
        if value is None or (isinstance(value, Mapping) and not value):
            continue
        if per_adapter:
            named = value if isinstance(value, Mapping) else {getattr(value, "adapter", "") or key: value}
            out[key] = {str(k): _load(v) for k, v in named.items()}
        else:
            out[key] = _load(value)
    return out


@dataclass
class ReportParts:
    """What the page is assembled from: the sections in order and the findings for the box."""

    sections: list[Section] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, section: Section | None, reading: str = "", finding: Callable[[str], Finding] | None = None):
        """Append `section` with its `reading`; `finding(link)` gets the section's anchor."""
        if section is None:
            return
        section.reading = section.reading or reading
        section.anchor = anchor(section.anchor or section.title)  # known now, for the findings' links
        self.sections.append(section)
        if finding is not None:
            self.findings.append(finding(section.anchor))


def seen_terms(seen_unseen: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per adapter, the terms its training questions held (the seen/unseen analysis's "seen" group)."""
    return {str(name): set(result.seen_terms()) for name, result in seen_unseen.items()}


def _study_sections(
    parts: ReportParts,
    result: Any,
    n_boot: int,
    by_spec: Mapping[str, pd.DataFrame],
    seen: Mapping[str, set[str]] | None = None,
) -> None:
    """The three questions of the study: accuracy, the shift above control words (from `by_spec`, each
    comparison's `by_specialty`), own vs other terms (without the terms each model saw in training, where
    `seen` knows them)."""
    comps, accuracy = result.comparisons, result.accuracy
    acc, contrast = accuracy_frame(accuracy), accuracy.contrast()
    n_models = sum(m != "base" for m in accuracy.models)
    acc_sec = S.accuracy_heatmap_section(
        acc, ci_low="acc_lo", ci_high="acc_hi", accuracy_test=FISHER, title="Accuracy: is the own specialty best?"
    )
    acc_sec.blocks.append(S.TableBlock.from_frame(contrast, title="Is the own specialty best? (accuracy)"))
    parts.add(acc_sec, F.accuracy_reading(acc, contrast), lambda link: F.accuracy_finding(contrast, link, n_models))
    matrix = S.specialty_delta_matrix(comps, n_boot=n_boot, relative_to_control=True, tables=by_spec)
    shift = S.terms_vs_control_section(
        comps, table=matrix, title="Fine-tuning specialty × term specialty, minus control words"
    )
    parts.add(shift, F.shift_reading(matrix), lambda link: F.shift_finding(matrix, link))
    own = own_vs_other(comps, accuracy.trained_on(), n_boot=n_boot, seen=seen)
    parts.add(S.own_vs_other_section(own), F.own_reading(own), lambda link: F.own_finding(own, link))


def _optional_sections(
    parts: ReportParts, result: Any, extra: dict[str, Any], n_boot: int, by_spec: Mapping[str, pd.DataFrame]
) -> None:
    """A section and a finding per optional analysis given (the tables each computes, once for both; the
    general-text control beside `by_spec`, each comparison's `by_specialty`); section builders another
    module may lack are skipped."""
    if "seen_unseen" in extra:  # each model's contrasts once, for the finding and the section
        tests = {k: r.tests(n_boot=n_boot) for k, r in extra["seen_unseen"].items()}
        found, reading = FX.seen_unseen_finding(extra["seen_unseen"], n_boot, tests=tests)
        sec = A.seen_unseen_section(extra["seen_unseen"], n_boot=n_boot, tests=tests)
        parts.add(sec, reading, _linked(found))
    if "accuracy_link" in extra:  # the correlations once, for the finding and the section
        table = extra["accuracy_link"].correlations(n_boot=n_boot, n_perm=n_boot)
        found, reading = FX.accuracy_link_finding(extra["accuracy_link"], n_boot, table=table)
        parts.add(A.accuracy_link_section(extra["accuracy_link"], n_boot=n_boot, table=table), reading, _linked(found))
    build = getattr(A, "trajectory_section", None)
    if "trajectory" in extra and build is not None:  # each model's own_advantage once, for both
        advantage = {k: t.own_advantage(n_boot=n_boot) for k, t in extra["trajectory"].items()}
        found, reading = FX.trajectory_finding(extra["trajectory"], n_boot, advantage=advantage)
        for i, (name, traj) in enumerate(extra["trajectory"].items()):
            sec = build(traj, title=f"Over training: {name}", n_boot=n_boot, advantage=advantage[name])
            parts.add(sec, reading if i == 0 else "", _linked(found) if i == 0 else None)
    build = getattr(A, "general_text_section", None)
    if "general_text" in extra and build is not None:
        found, reading = FX.general_text_finding(extra["general_text"], n_boot)
        for i, (name, shift) in enumerate(extra["general_text"].items()):
            comp = result.comparisons.get(name)
            sec = build(
                shift, comp, title=f"General-text control: {name}", n_boot=n_boot, by_specialty=by_spec.get(name)
            )
            parts.add(sec, reading if i == 0 else "", _linked(found) if i == 0 else None)


def _linked(found: Finding) -> Callable[[str], Finding]:
    """`found` with the link of the section it is shown beside."""

    def at(link: str) -> Finding:
        found.link = link
        return found

    return at


def _detail_sections(parts: ReportParts, result: Any, n_boot: int) -> None:
    """The descriptive sections: distributions, top movers, layer curves."""
    comps, trained_on = result.comparisons, result.accuracy.trained_on()
    parts.add(S.distributions_section(comps, trained_on=trained_on), F.distributions_reading(comps, trained_on))
    movers = pd.concat(
        [c.by_term(n_boot=n_boot).assign(finetune_specialty=str(k)) for k, c in comps.items()], ignore_index=True
    )
    parts.add(S.top_movers_section(comps, table=movers), F.top_movers_reading(movers))
    if result.layer_views:
        layers = layer_frame(result.layer_views)
        sec = S.layer_curves_section(
            layers,
            value_title="mean Δ logp/token through the lens",
            title="Layer curves (logit lens): where the change appears",
            notes=[S.NOTES["layers_delta"]],  # the curves are tuned − base of terms and controls, not base and tuned
            series_title="scored words",  # the series are clinical terms and control words, not models
        )
        parts.add(sec, F.layers_reading(layers))


FISHER = (
    "each fine-tuned model against the base model on the same questions, two-sided Fisher's exact test "
    "(conservative: it ignores that the questions are the same), Holm across all cells."
)


def _metadata(result: Any) -> Section:
    comps = result.comparisons
    return S.metadata_section(
        {
            "config": result.config,
            "adapters": result.adapters,
            "lexicon": {
                "terms": len(result.lexicon),
                **{k: v for k, v in result.lexicon.meta.items() if k in ("backend", "sources")},
            },
            "compare": next(iter(comps.values())).metadata if comps else {},
            **_reused(result),
        }
    )


def _reuse_findings(result: Any) -> list[Finding]:
    """A caveat in the findings box when stages were reused from another specprobe version or code."""
    reused = result.extras.get("reused_older") or {}
    if not reused:
        return []
    versions = ", ".join(sorted(set(map(str, reused.values()))))
    names = ", ".join(sorted(reused))
    return [
        Finding(
            "Was every stage computed by this specprobe version and code?",
            f"No: {len(reused)} stage(s) were reused from specprobe {versions} (reuse_older): {names}.",
            "the folders and versions are under Metadata",
            "partly",
            anchor("Metadata"),
        )
    ]


def _reused(result: Any) -> dict[str, Any]:
    """The stages reused from another specprobe version or code (`reuse_older`), when there are any."""
    reused = result.extras.get("reused_older") or {}
    return {"stages reused from other specprobe code (reuse_older)": reused} if reused else {}


def build_experiment_page(result: Any, *, n_boot: int = 2000, **optional: Any) -> Any:
    """The experiment `Page`: findings box, the study's sections, the optional analyses given (`OPTIONAL`
    names as keyword arguments, else the result's extras["paths"]), the descriptive sections, "How to read
    this" (every method note once), metadata."""
    from specprobe.reports import experiment_page

    unknown = set(optional) - set(OPTIONAL)
    if unknown:
        raise TypeError(f"unknown optional analyses {sorted(unknown)}; known: {sorted(OPTIONAL)}")
    parts = ReportParts()
    # each comparison's by_specialty once: the heatmap and finding of the shift, and the general-text control
    by_spec = {k: c.by_specialty(n_boot=n_boot) for k, c in result.comparisons.items()}
    extra = optional_analyses(result, optional)
    _study_sections(parts, result, n_boot, by_spec, seen_terms(extra.get("seen_unseen", {})))
    _optional_sections(parts, result, extra, n_boot, by_spec)
    _detail_sections(parts, result, n_boot)
    how = S.how_to_read_section(parts.sections, lead=[S.NOTES[k] for k in ("delta", "heatmap", "ci", "significance")])
    findings = [*parts.findings, *_reuse_findings(result)]
    sections = [S.findings_section(findings), *parts.sections, how, _metadata(result)]
    return experiment_page(
        sections,
        title="specprobe: what did specialty fine-tuning change?",
        subtitle=f"base {result.config['base']} · data {result.config['data']}",
    )


def write_experiment_report(
    result: Any, path: str | os.PathLike | None = None, *, n_boot: int = 2000, **optional: Any
) -> Path:
    """One self-contained HTML page (`build_experiment_page`), by default report.html in the run's folder.

    `optional`: seen_unseen={adapter: SeenUnseen or path}, accuracy_link=AccuracyLink or path,
    trajectory={adapter: Trajectory or path}, general_text={adapter: GeneralTextShift or path}."""
    from specprobe.reports import write_page

    page = build_experiment_page(result, n_boot=n_boot, **optional)
    return write_page(page, Path(path) if path else result.root / "report.html")
