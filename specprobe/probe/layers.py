"""`layers(base, tuned, terms)`: the logit lens, per layer, for every occurrence compare() scores.

Occurrences are found by the same pieces as `compare` (`locate`, `build_items`), and the forward
pass is the same scoring core with its layer hooks (`score_items(capture_layers=True)`): one pass
per batch of texts and model, whatever the number of layers. Each layer's residual stream at the
positions that predict the term's tokens goes through the final norm (fresh statistics) and head.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from specprobe.probe.prepare import OCCURRENCE_COLUMNS, Prepared, load_pair, prepare  # noqa: F401
from specprobe.probe.inputs import DEFAULT_TEMPLATE, UNASSIGNED
from specprobe.probe.occurrences import MatchOptions
from specprobe.core.results import Result
from specprobe.core.scoring import batch_token_budget, plan_batches, score_items
from specprobe.probe.stats import cluster_bootstrap_mean



class LayerView(Result):
    """Logit lens: one row per occurrence x layer x model ("base"/"tuned").

    `logp` is the term's log-probability (summed over its tokens) when that layer's residual stream
    is read through the final norm and unembedding; at the last layer it is compare()'s logp.
    """

    kind: ClassVar[str] = "layers"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = OCCURRENCE_COLUMNS + ["layer", "model", "logp", "logp_per_token", "token_logp"]

    @property
    def n_layers(self) -> int:
        return int(self.metadata.get("n_layers", 0))

    def wide(self) -> pd.DataFrame:
        """One row per occurrence x layer with logp_base, logp_tuned and delta columns."""
        df = self.to_pandas()
        keys = ["text_id", "term", "start", "is_control", "layer"]
        cols = ["logp", "logp_per_token"]
        base = df[df["model"] == "base"].drop(columns=["model", "token_logp"])
        tuned = df[df["model"] == "tuned"][keys + cols]
        out = base.merge(tuned, on=keys, how="outer", suffixes=("_base", "_tuned"), validate="one_to_one")
        out["delta"] = out["logp_tuned"] - out["logp_base"]
        out["delta_per_token"] = out["logp_per_token_tuned"] - out["logp_per_token_base"]
        return out.reset_index(drop=True)

    def by_specialty(self, metric: str = "logp_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per specialty (controls pooled as "control"), layer and model ("base", "tuned", "delta"):
        mean with a 95% bootstrap CI that resamples texts."""
        if metric not in ("logp", "logp_per_token"):
            raise ValueError(f"metric must be 'logp' or 'logp_per_token', got {metric!r}")
        w = self.wide()
        w = w[np.isfinite(w[f"{metric}_base"].astype(float))]
        w["specialty"] = [("control",) if c else (tuple(s) or (UNASSIGNED,)) for s, c in zip(w["specialties"], w["is_control"])]
        w = w.explode("specialty")
        delta_col = "delta" if metric == "logp" else "delta_per_token"
        rows = []
        for (spec, layer), g in w.groupby(["specialty", "layer"], sort=True):
            for model, col in (("base", f"{metric}_base"), ("tuned", f"{metric}_tuned"), ("delta", delta_col)):
                est = cluster_bootstrap_mean(g[col], g["text_id"], n_boot=n_boot, seed=seed)
                rows.append({"specialty": spec, "layer": int(layer), "model": model, "n": est.n,
                             "n_texts": est.n_clusters, "mean": est.mean, "ci_low": est.ci_low, "ci_high": est.ci_high})
        return pd.DataFrame(rows, columns=["specialty", "layer", "model", "n", "n_texts", "mean", "ci_low", "ci_high"])

    def summary(self, metric: str = "logp_per_token") -> str:
        t = self.by_specialty(metric, n_boot=500)
        if t.empty:
            return "no scored occurrences"
        piv = t.pivot_table(index=["specialty", "layer"], columns="model", values="mean").reset_index()
        return piv.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def layers(
    base: Any,
    tuned: Any = None,
    terms: Any = None,
    texts: Any = None,
    *,
    layer_ids: Sequence[int] | int | None = None,
    controls: str | Sequence[str] | None = "auto",
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    remote: bool | str = False,
) -> LayerView:
    """Logit lens of every occurrence of every term (and control word), at every layer, base and tuned.

    Arguments as `compare`. `layer_ids`: which decoder layers (default all; negative counts from the
    end; out of range is an error). `remote`: run the lens through nnsight instead of local hooks
    (True: NDIF's servers, "local": nnsight's serverless dry run); see `specprobe.probe.remote`.
    """
    from specprobe.probe.hooks import layer_modules, resolve_layers
    from specprobe.probe.lens import lens_logprobs

    if remote:
        from specprobe.probe.remote import remote_layers

        return remote_layers(base, tuned, terms, texts, layer_ids=layer_ids, controls=controls, n_controls=n_controls,
                             template=template, match=match, add_bos=add_bos, max_length=max_length,
                             long_texts=long_texts, tokenizer=tokenizer, seed=seed, remote=remote)
    pair = load_pair(base, tuned, tokenizer, device, dtype)
    with pair.view("base") as split:
        n_layers = len(layer_modules(split))  # refuses architectures it cannot hook
    chosen = resolve_layers(layer_ids, n_layers)
    prep = prepare(pair, terms, texts, controls=controls, n_controls=n_controls, template=template, match=match,
                   add_bos=add_bos, max_length=max_length, long_texts=long_texts, seed=seed)
    import torch

    lens: dict[str, list[np.ndarray]] = {}
    timings = {}
    for variant in pair.variants:
        t0 = time.perf_counter()
        with pair.view(variant) as split:
            scored = score_items(split, prep.items, batch_size=batch_size, capture_layers=True, progress=progress,
                                 desc=f"lens {variant}")
            # every item's rows in one lens call: the head's weight is read per chunk of rows, not per item
            targets = torch.tensor([item.ids[p] for item in prep.items for p in item.positions])
            states = torch.cat([s.layer_states[chosen] for s in scored], dim=1) if scored else torch.zeros(len(chosen), 0, 1)
            all_rows = lens_logprobs(split, states, targets).numpy()  # (n_chosen, total positions)
            bounds = np.cumsum([0] + [len(item.positions) for item in prep.items])
            lens[variant] = [all_rows[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        timings[variant] = round(time.perf_counter() - t0, 4)
    frame = lens_frame(prep, chosen, lens)
    meta = dict(pair.metadata)
    meta.update(options_meta(prep, batch_size))
    meta["n_layers"] = n_layers
    meta["layers"] = chosen
    meta["engine"] = "torch hooks on the Hugging Face modules (scoring core)"
    meta["cost"] = {"forward_passes_per_model": len(plan_batches(prep.items, batch_size, batch_token_budget(pair.device))),
                    "items": len(prep.items), "seconds": timings}
    return LayerView(frame, meta, {"term_specialties": {t: list(s) for t, s in prep.term_map.items()}})


def options_meta(prep: Prepared, batch_size: int | None = None) -> dict:
    opts = dict(prep.options)
    if batch_size is not None:
        opts["batch_size"] = batch_size
    return {"options": opts, "n_texts": len(prep.records), "n_terms": len(prep.term_map),
            "control_words": prep.control_words}


def lens_frame(prep: Prepared, chosen: list[int], lens: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """Rows occurrence x layer x model from per-item (n_layers, n_positions) lens log-probabilities."""
    rows = []
    for oi, occ in enumerate(prep.occs):
        base_row = prep.occurrence_row(oi)
        item_i, slots = prep.where[oi]
        for variant in ("base", "tuned"):
            for k, layer in enumerate(chosen):
                if item_i >= 0:
                    tok = lens[variant][item_i][k, slots]
                    lp = float(tok.sum())
                    per = lp / occ.n_tokens
                    toks = [float(x) for x in tok]
                else:
                    lp = per = math.nan
                    toks = []
                rows.append({**base_row, "layer": layer, "model": variant, "logp": lp, "logp_per_token": per,
                             "token_logp": toks})
    return pd.DataFrame(rows, columns=LayerView.columns)
