"""`matrix(base, adapters, data)`: every adapter (and the base) on every specialty, one loaded model.

The study's question is whether a specialty's own adapter is the best one on that specialty. For
each evaluated specialty s that some adapter was trained on (alone), `AccuracyMatrix.contrast()`
compares the own adapter's accuracy on s with the other adapters' accuracies on s (same questions,
so question difficulty cancels), and a permutation test over the adapter-to-specialty assignment
gives a p-value for "own adapters are better than others" across all specialties.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from specprobe.core.models import (
    ModelLoadError,
    ModelPair,
    check_adapter_base,
    check_adapter_folder,
    context_length,
    is_adapter_dir,
)
from specprobe.core.results import Result
from specprobe.finetune.data import load_selected, read_manifest
from specprobe.finetune.evaluation import (
    ACCURACY_COLUMNS,
    OVERALL,
    accuracy_table,
    build_option_items,
    format_table,
    score_records,
    warn_flags,
)
from specprobe.finetune.prompts import PromptFormat, check_max_length, fit_max_length, resolve_format
from specprobe.terms.datasets import QARecord

log = logging.getLogger(__name__)

BASE = "base"


class AccuracyMatrix(Result):
    """Accuracy of each model (base and adapters) on each specialty: one row per (model, specialty)."""

    kind = "accuracy_matrix"
    columns = ["model", "trained_on", *ACCURACY_COLUMNS]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self._frame["model"]))

    def table(self, metric: str = "acc", overall: bool = True) -> pd.DataFrame:
        """Model x specialty pivot of `metric` (acc, acc_norm, acc_lo, ...)."""
        if metric not in self._frame:
            raise ValueError(
                f"unknown metric {metric!r}; choose from {[c for c in self.columns if c.startswith('acc')]}"
            )
        t = self._frame.pivot(index="model", columns="specialty", values=metric)
        specs = sorted(c for c in t.columns if c != OVERALL) + ([OVERALL] if overall and OVERALL in t.columns else [])
        return t.reindex(index=self.models, columns=specs)

    def trained_on(self) -> dict[str, str | None]:
        first = self._frame.drop_duplicates("model").set_index("model")["trained_on"]
        return cast(dict[str, str | None], {m: (v if isinstance(v, str) and v else None) for m, v in first.items()})

    def contrast(self, metric: str = "acc", *, n_perm: int = 10000, seed: int = 0) -> pd.DataFrame:
        """Own adapter vs the other adapters on each specialty some adapter was trained on.

        Columns: specialty, own (model), n (the own adapter's questions there), own_<metric>, n_adapters
        (adapters with an accuracy on the specialty, the own one included), others_mean, others_max, diff
        (own - others_mean), rank (1 = no adapter is better than the own one: a tie counts as best; among
        the n_adapters), is_best, base, gain (own - base). `.attrs` holds the summary: mean_diag,
        mean_offdiag, mean_diff, n_best, n_tied (of n_best, tied with another adapter), n_specialties,
        n_adapters (all adapters), p_value, n_perm.
        p_value: one-sided Monte Carlo permutation test of mean_diff over random adapter-to-specialty
        assignments, (1 + #{permuted >= observed}) / (1 + n_perm); it is never below 1 / (n_perm + 1), and
        with A adapters and S specialties the exact test cannot go below 1 / (A! / (A - S)!) (the observed
        assignment is one of them). An adapter without an accuracy on one of the own specialties leaves
        the test undone: mean_diff and p_value NaN, `untested` names the missing cells (a warning too).
        Where the missing cell is the own adapter's on its own specialty, that row is untested too: n 0,
        own_<metric>, diff, rank and gain missing, is_best False; where it is another adapter's, rank and
        is_best are among fewer than all adapters (n_adapters says how many).
        """
        t = self.table(metric, overall=False)
        own = {m: s for m, s in self.trained_on().items() if m != BASE and s is not None and s in t.columns}
        # adapters and owners by name: the permutations drawn, and so p, do not depend on the models' order
        adapters = sorted(m for m in self.models if m != BASE)
        rows = []
        n_col = self.table("n", overall=False)
        for m, s in own.items():
            col = t.loc[adapters, s]
            mine = float(col[m])
            others = col.drop(m).dropna()  # other adapters without an accuracy here: in `untested` below
            tested = math.isfinite(mine)  # no accuracy of the own adapter on its own specialty: no row values
            rank = int((others > mine).sum()) + 1 if tested else pd.NA
            base = float(t.loc[BASE, s]) if BASE in t.index else math.nan
            rows.append(
                {
                    "specialty": s,
                    "own": m,
                    "n": int(n_col.loc[m, s]) if tested else 0,
                    f"own_{metric}": mine,
                    "n_adapters": int(col.notna().sum()),
                    "others_mean": float(others.mean()) if len(others) else math.nan,
                    "others_max": float(others.max()) if len(others) else math.nan,
                    "diff": mine - float(others.mean()) if len(others) else math.nan,
                    "rank": rank,
                    "is_best": rank == 1 if tested else False,
                    "base": base,
                    "gain": mine - base,
                }
            )
        frame = pd.DataFrame(rows)
        if len(frame):
            frame["rank"] = frame["rank"].astype("Int64")
        summary: dict[str, Any] = {"metric": metric, "n_specialties": len(rows), "n_adapters": len(adapters)}
        owners = sorted(own)
        specs = [own[m] for m in owners]
        D = t.loc[adapters, specs].to_numpy(dtype=float)  # adapters x own-specialties
        untested = [f"{adapters[i]} on {specs[j]}" for i, j in zip(*np.nonzero(np.isnan(D)))]
        if rows and len(adapters) > 1:
            own_rows = np.array([adapters.index(m) for m in owners])
            cols = np.arange(len(specs))
            summary.update(
                {
                    "mean_diag": float(D[own_rows, cols].mean()),
                    "mean_offdiag": float(np.mean([np.delete(D[:, j], own_rows[j]).mean() for j in cols])),
                    "n_best": int(cast(pd.Series, frame["is_best"]).sum()),
                    # best only together with another adapter (the same accuracy): "best" counts ties
                    "n_tied": int((frame["is_best"] & (frame["others_max"] == frame[f"own_{metric}"])).sum()),
                }
            )
        if rows and len(adapters) > 1 and untested:
            # a missing cell makes the statistic NaN, and then every permuted one too: "NaN >= NaN" is never
            # true, so the p-value would be its smallest value, 1 / (1 + n_perm), for a difference that is NaN
            log.warning("own-specialty permutation test not run: no %s of %s", metric, ", ".join(untested))
            summary.update({"mean_diff": math.nan, "p_value": math.nan, "n_perm": 0, "untested": untested})
        elif rows and len(adapters) > 1:
            # centred: each cell minus the mean of the *other* adapters on that specialty
            A = len(adapters)
            C = (D * A - D.sum(axis=0, keepdims=True)) / (A - 1)
            observed = float(C[own_rows, cols].mean())
            rng = np.random.default_rng(seed)
            perm_stats = np.array([C[rng.permutation(A)[: len(specs)], cols].mean() for _ in range(n_perm)])
            summary.update(
                {
                    "mean_diff": observed,
                    "p_value": float((1 + np.sum(perm_stats >= observed - 1e-12)) / (1 + n_perm)),
                    "n_perm": n_perm,
                }
            )
        frame.attrs.update(summary)
        return frame

    def summary(self, metric: str = "acc") -> str:
        lines = [format_table(self._frame, by="model")]
        c = self.contrast(metric)
        a = c.attrs
        if a.get("n_specialties") and "mean_diff" in a:
            lines += ["", contrast_line(a, metric)]
        return "\n".join(lines)


def contrast_line(attrs: Mapping[Any, Any], metric: str = "acc") -> str:
    """The own-specialty test in one line, from `AccuracyMatrix.contrast(...).attrs` (for `summary` and
    the demo's printout): "not tested" where a cell it needs is missing."""
    a = attrs
    untested = a.get("untested")
    return (
        f"own specialty vs other adapters ({metric}): diagonal {a['mean_diag']:.3f}, off-diagonal "
        f"{a['mean_offdiag']:.3f}, difference {a['mean_diff']:+.3f}; own adapter best on "
        f"{a['n_best']}/{a['n_specialties']} specialties"
        + (f" ({a['n_tied']} of them tied with another adapter)" if a.get("n_tied") else "")
        + (" (among the adapters with a result there)" if untested else "")
        + "; "
        + (f"not tested (no {metric} of {', '.join(untested)})" if untested else f"permutation p = {a['p_value']:.3g}")
    )


def _normalize_adapters(adapters: Any) -> list[tuple[str, str, dict]]:
    """[(name, directory, manifest)]; names from a mapping, else the trained specialty, else the folder name."""
    if adapters is None:
        return []
    if isinstance(adapters, (str, os.PathLike)):
        adapters = [adapters]
    items = list(adapters.items()) if isinstance(adapters, Mapping) else [(None, a) for a in adapters]
    out, seen = [], set()
    for name, path in items:
        path = str(path)
        if not is_adapter_dir(path):
            raise ValueError(f"{path!r} is not a PEFT adapter directory (no adapter_config.json)")
        manifest = read_manifest(path)
        spec = manifest.get("specialty")
        if name is None:
            name = spec[0] if isinstance(spec, list) and len(spec) == 1 else Path(path).name
        name = str(name)
        base_name, i = name, 2
        while name in seen or name == BASE:
            name, i = f"{base_name}#{i}", i + 1
        seen.add(name)
        out.append((name, path, manifest))
    return out


def expand_adapter_dirs(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Adapter directories, where a folder that is not an adapter stands for its adapter subfolders."""
    found: list[str] = []
    for p in paths:
        if is_adapter_dir(p):
            found.append(str(p))
        elif Path(p).is_dir():
            subs = sorted(str(s) for s in Path(p).iterdir() if is_adapter_dir(s))
            if not subs:
                raise ValueError(f"{p!r} is neither an adapter directory nor a folder of adapter directories")
            found += subs
        else:
            check_adapter_folder(p)  # a file given for the folder is named as a file, not as missing
    return found


def matrix(
    base: Any,
    adapters: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    data: str | os.PathLike | Sequence[QARecord],
    *,
    specialty: str | Sequence[str] | None = None,
    include_base: bool = True,
    template: str | None = None,
    option_format: str | None = None,
    continuation: str | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
    mapping: dict | None = None,
) -> AccuracyMatrix:
    """Accuracy of the base and of every adapter on every specialty of `data` (one loaded base).

    `adapters`: adapter directories (names from their manifests' specialty) or a mapping name -> dir.
    Every adapter must have been trained on this base (manifest weights hash, and PEFT's own checks).
    `mapping`: how to read a QA file the loader cannot read alone (`load_qa`); recorded in metadata["data"].
    """
    check_max_length(max_length)
    named = _normalize_adapters(adapters)
    if not named and not include_base:
        raise ValueError("nothing to evaluate: no adapters and include_base=False")
    records, data_meta = load_selected(data, specialty, mapping=mapping)
    fmt = _shared_format(named, template, option_format, continuation)
    pair, pairs = _load_pairs(base, named, device, dtype)
    L = fit_max_length(max_length, context_length(pair))
    prepared = build_option_items(pair.tokenizer, records, fmt, L)
    items = _score_runs(pair, pairs, include_base, records, fmt, L, batch_size, progress, prepared)
    warn_flags(items, len(records), L)
    trained_on = _trained_on(named, set(accuracy_table(items, ("model",))["specialty"]))
    from specprobe.core.scoring import batch_rows

    meta = {k: v for k, v in pair.metadata.items() if k not in ONE_ADAPTER_KEYS}  # per adapter: "adapters"
    meta.update(
        {
            "data": data_meta,
            "specialty": specialty,
            "prompt": fmt.to_dict(),
            "max_length": L,
            "batch_size": batch_rows(pair.device, batch_size),
            "adapters": _adapters_meta(named, trained_on, pairs),
            "n_questions": len(records),
        }
    )
    return from_items(items, trained_on, meta)


#: the loaded pair's metadata of its one adapter: a matrix holds several, each under metadata["adapters"]
ONE_ADAPTER_KEYS = ("tuned", "adapter_base_model", "adapter_sha256", "adapter_mismatch_forced")


def from_items(items: pd.DataFrame, trained_on: Mapping[str, str | None], meta: dict) -> AccuracyMatrix:
    """The matrix of per-(model, question) rows (`MCEvaluation`'s columns): accuracies per model and
    specialty, each model's trained-on specialty (None: base, several or unknown), and the per-item
    outcomes (extras["items"]). `matrix` and `from_lm_eval` both build it here."""
    table = accuracy_table(items, ("model",))
    table.insert(1, "trained_on", table["model"].map(lambda m: trained_on.get(m) or ""))
    extras = {"items": _item_outcomes(items)}
    return AccuracyMatrix(cast(pd.DataFrame, table[AccuracyMatrix.columns]), meta, extras)


def _score_runs(
    pair: Any,
    pairs: Mapping[str, Any],
    include_base: bool,
    records: Sequence[QARecord],
    fmt: PromptFormat,
    L: int,
    batch_size: int | None,
    progress: bool,
    prepared: Any,
) -> pd.DataFrame:
    """Per-(model, item) rows of the base (if included) and then of every adapter, in that order."""
    runs: list[tuple[Any, dict[str, str]]] = [(pair, {BASE: "base"})] if include_base else []
    runs += [(adapter_pair, {name: "tuned"}) for name, adapter_pair in pairs.items()]
    frames = [
        score_records(
            run_pair,
            records,
            fmt,
            variants=variants,
            max_length=L,
            batch_size=batch_size,
            progress=progress,
            prepared=prepared,
        )
        for run_pair, variants in runs
    ]
    return pd.concat(frames, ignore_index=True)


def _adapters_meta(named: list[tuple[str, str, dict]], trained_on: Mapping[str, Any], pairs: Mapping[str, Any]) -> dict:
    """The metadata recorded per adapter: path, weights sha256, identity hash, specialty trained on, steps."""
    return {
        name: {
            "path": path,
            "adapter_sha256": pairs[name].metadata.get("adapter_sha256"),
            "identity_hash": m.get("identity_hash"),
            "trained_on": trained_on[name],
            "steps": m.get("steps"),
        }
        for name, path, m in named
    }


def _item_outcomes(items: pd.DataFrame) -> dict:
    """Per model, the scored items' ids and whether each was answered correctly (raw and normalised), and,
    where the items have them, each option's log-likelihood and the correct option's index (so that
    `analyses.accuracy_link` can compute answer margins; the accuracy table does not change)."""
    return {m: _model_outcomes(g) for m, g in items.groupby("model", sort=False)}


def _model_outcomes(g: pd.DataFrame) -> dict:
    """One model's per-item record of `_item_outcomes`."""
    out: dict[str, list] = {
        "ids": list(g["item_id"]),
        "correct": [bool(x) for x in g["correct"]],
        "correct_norm": [bool(x) for x in g["correct_norm"]],
    }
    if "option_logp" in g and "answer_index" in g:
        out["option_logp"] = [[float(v) for v in lp] for lp in g["option_logp"]]
        out["answer_index"] = [int(a) for a in g["answer_index"]]
        if "answer_indices" in g:  # every option with the answer's text (a question may list it twice)
            out["answer_indices"] = [[int(a) for a in ans] for ans in g["answer_indices"]]
    return out


def _shared_format(
    named: list[tuple[str, str, dict]], template: str | None, option_format: str | None, continuation: str | None
) -> PromptFormat:
    """The prompt format for every adapter: the parts given, else the first adapter's trained format."""
    formats = {json.dumps(m.get("prompt"), sort_keys=True) for _, _, m in named if m.get("prompt")}
    if len(formats) > 1 and not (template or option_format or continuation):
        log.warning("the adapters were trained with different prompt formats; using the first one's")
    trained = next((m["prompt"] for _, _, m in named if m.get("prompt")), None)
    return resolve_format(trained, template, option_format, continuation)


def _load_pairs(
    base: Any, named: list[tuple[str, str, dict]], device: str | None, dtype: str | None
) -> tuple[ModelPair, dict[str, ModelPair]]:
    """The base loaded once (with the first adapter) and one pair per adapter, all sharing that base;
    each adapter's recorded base fingerprint is checked against the base's."""
    first = named[0][1] if named else None
    pair = ModelPair.load(base, first, device=device, dtype=dtype)
    base_hash = pair.metadata.get("base_weights_sha256")
    pairs: dict[str, ModelPair] = {}
    for i, (name, path, manifest) in enumerate(named):
        check_adapter_base(path, manifest, base_hash, name)
        try:
            pairs[name] = pair if i == 0 else pair.with_adapter(path)  # one base in memory, adapters beside it
        except ModelLoadError as exc:
            raise ModelLoadError(f"{name}: {exc}") from exc
    return pair, pairs


def _trained_on(named: list[tuple[str, str, dict]], spec_names: set[str]) -> dict[str, str | None]:
    """The one specialty each adapter was trained on (None: several, all, or unknown)."""
    trained_on = {
        name: (m["specialty"][0] if isinstance(m.get("specialty"), list) and len(m["specialty"]) == 1 else None)
        for name, _, m in named
    }
    for name, _, m in named:  # a mapping key that names a specialty counts as "trained on" when the manifest is silent
        if trained_on[name] is None and "specialty" not in m and name in spec_names:
            trained_on[name] = name
    return trained_on
