"""Assemble the experiment report from the runner's results (the only place that knows every result type)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from specprobe.finetune import AccuracyMatrix


def accuracy_frame(accuracy: AccuracyMatrix) -> pd.DataFrame:
    """Long (fine-tuned on, test specialty, accuracy, CI, n) rows; the base model is the row 'base'.

    The pooled row of each model (specialty "ALL") is left out: the heatmap is per test specialty.
    """
    from specprobe.finetune.evaluation import OVERALL

    df = accuracy.to_pandas()
    df = df.loc[df["specialty"] != OVERALL]
    trained = df["trained_on"]
    out = pd.DataFrame(
        {
            "train_specialty": trained.where(
                trained.notna() & trained.astype(bool), df["model"]
            ),  # else the model's name
            "test_specialty": df["specialty"],
            "accuracy": df["acc"],
            "acc_lo": df["acc_lo"],
            "acc_hi": df["acc_hi"],
            "n": df["n"],
            "acc_norm": df["acc_norm"],
        }
    )
    out.loc[df["model"] == "base", "train_specialty"] = "base"
    return out


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


def write_experiment_report(result: Any, path: str | os.PathLike | None = None) -> Path:
    """One self-contained HTML page with the study's two findings, controls, distributions, top movers."""
    from specprobe.reports import experiment_page, write_page
    from specprobe.reports import sections as S

    comps = result.comparisons
    accuracy = result.accuracy
    contrast = accuracy.contrast()
    a = contrast.attrs
    findings = []
    if a.get("n_specialties") and "mean_diff" in a:
        findings.append(
            f"Accuracy: own-specialty adapter vs other adapters, diagonal {a['mean_diag']:.3f} vs "
            f"off-diagonal {a['mean_offdiag']:.3f} (difference {a['mean_diff']:+.3f}); the own adapter is "
            f"best on {a['n_best']} of {a['n_specialties']} specialties; permutation p = {a['p_value']:.3g}."
        )
    sections = [
        S.accuracy_heatmap_section(accuracy_frame(accuracy), ci_low="acc_lo", ci_high="acc_hi"),
        S.table_section(contrast, title="Is the own specialty best? (accuracy)", notes=findings),
        S.delta_heatmap_section(S.specialty_delta_matrix(comps)),
        S.delta_heatmap_section(
            S.specialty_delta_matrix(comps, relative_to_control=True),
            title="Fine-tuning specialty × term specialty, minus control words",
        ),
        S.terms_vs_control_section(comps),
        S.distributions_section(comps),
        S.top_movers_section(comps),
        S.layer_curves_section(
            layer_frame(result.layer_views),
            value_title="mean Δ logp/token through the lens",
            title="Layer curves (logit lens): where the change appears",
        )
        if result.layer_views
        else None,
        S.metadata_section(
            {
                "config": result.config,
                "adapters": result.adapters,
                "lexicon": {
                    "terms": len(result.lexicon),
                    **{k: v for k, v in result.lexicon.meta.items() if k in ("backend", "sources")},
                },
                "compare": next(iter(comps.values())).metadata if comps else {},
            }
        ),
        S.method_notes_section(),
    ]
    page = experiment_page(
        sections,
        title="specprobe: what did specialty fine-tuning change?",
        subtitle=f"base {result.config['base']} · data {result.config['data']}",
    )
    return write_page(page, Path(path) if path else result.root / "report.html")
