"""`general_text_control(pair)`: does fine-tuning make general English *less* likely?

The control words of `compare` are ordinary words inside the clinical questions, so they share the
clinical context. A shift towards the clinical domain also shows outside it: medical text becomes
more likely and general text less likely, while specialty knowledge need not touch general text.
This scores whole general-English texts (by default the WordNet glosses shipped in
`specprobe/data/general/`, see its README) under base and tuned: every token after the first (all
real tokens where the model has a BOS), through the one forward path (`score_items`).

The summary is the delta per token, sum over texts of (logp_tuned - logp_base) over the sum of
their scored tokens, with a 95% bootstrap CI that resamples texts (`general_text_row`), in the same
columns as `Comparison.by_specialty`, so it can stand beside the control words
(`with_general_text`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd

from specprobe.core.encoding import encode
from specprobe.core.items import ScoreItem, check_max_length, fit_max_length
from specprobe.core.models import context_length
from specprobe.core.results import Result
from specprobe.core.scoring import score_items
from specprobe.probe.prepare import load_pair
from specprobe.probe.stats import cluster_bootstrap_mean, finite_rows
from specprobe.utils.io import iter_jsonl

GENERAL_TEXT = "general text"  # the row label beside the specialties and "control"
DEFAULT_TEXTS = "wordnet_heldout.jsonl"


class GeneralTextShift(Result):
    """One row per general-English text: its scored tokens' log-probability (sum) under base and tuned,
    their difference and the difference per token; `truncated` when the text was cut to the context."""

    kind: ClassVar[str] = "general_text_shift"
    columns: ClassVar[list[str]] = [
        "text_id",
        "n_tokens",
        "logp_base",
        "logp_tuned",
        "delta",
        "delta_per_token",
        "truncated",
    ]

    def row(self, *, n_boot: int = 2000, seed: int = 0) -> dict:
        """The summary in `Comparison.by_specialty`'s columns (see `general_text_row`)."""
        return general_text_row(self, n_boot=n_boot, seed=seed)

    def summary(self) -> str:
        r = self.row()
        return (
            f"general text ({self.metadata.get('texts', 'given texts')}): {r['n_texts']} texts, {r['n']} tokens; "
            f"Δ logp per token {r['mean_delta_per_token']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] "
            f"(base {r['mean_logp_base']:.4f}, tuned {r['mean_logp_tuned']:.4f} per token)"
        )


def general_text_row(shift: GeneralTextShift, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """specialty "general text", n (scored tokens), n_texts, mean_delta_per_token (token-weighted: sum
    of deltas over sum of tokens) with a 95% bootstrap CI resampling texts, and the per-token means
    of logp under base and tuned. minus_control and p values are NaN (no pairing with texts)."""
    df = shift.to_pandas()
    df = finite_rows(cast(pd.DataFrame, df[df["n_tokens"] > 0]), "general text")
    counts = df["n_tokens"].astype(int).to_numpy()
    est = cluster_bootstrap_mean(
        np.repeat(df["delta_per_token"].to_numpy(float), counts),
        np.repeat(df["text_id"].astype(str).to_numpy(), counts),
        n_boot=n_boot,
        seed=seed,
    )
    tokens = int(counts.sum())  # no scored token (no text, or one-token texts only): NaN means, not 0/1
    return {
        "specialty": GENERAL_TEXT,
        "n": est.n,
        "n_terms": 0,
        "n_texts": est.n_clusters,
        "mean_delta_per_token": est.mean,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "minus_control": math.nan,
        "minus_control_ci_low": math.nan,
        "minus_control_ci_high": math.nan,
        "n_pairs": 0,
        "p_value": math.nan,
        "p_holm": math.nan,
        "mean_logp_base": float(df["logp_base"].to_numpy(float).sum()) / tokens if tokens else math.nan,
        "mean_logp_tuned": float(df["logp_tuned"].to_numpy(float).sum()) / tokens if tokens else math.nan,
    }


def with_general_text(table: pd.DataFrame, shift: GeneralTextShift, **kwargs: Any) -> pd.DataFrame:
    """A `Comparison.by_specialty(...)` table with the general-text row appended after "control"
    (its delta per token beside the control words'; the column set is the table's)."""
    row = general_text_row(shift, **kwargs)
    extra = pd.DataFrame([{c: row.get(c, math.nan) for c in table.columns}])
    return pd.concat([table, extra], ignore_index=True) if len(table) else extra


def default_texts() -> list[dict]:
    """The general-English texts shipped with specprobe ({"id", "text"}; see data/general/README.md)."""
    with resources.as_file(resources.files("specprobe") / "data" / "general" / DEFAULT_TEXTS) as path:
        return [text for _, text in iter_jsonl(path)]


def _records(texts: Any) -> list[tuple[str, str]]:
    """(id, text) pairs from strings, {"id", "text"} mappings or objects with `.id` and `.text`."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings or records, got {type(texts).__name__}")
    out = []
    for i, t in enumerate(texts):
        get = t.get if isinstance(t, Mapping) else lambda key, default=None, t=t: getattr(t, key, default)
        text = t if isinstance(t, str) else get("text")
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}]: expected a string or a record with a 'text' string, got {t!r:.80}")
        out.append((f"g{i}" if isinstance(t, str) else str(get("id", f"g{i}")), text))
    if not out:
        raise ValueError("texts: no text given")
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"texts: id {next(i for i in ids if ids.count(i) > 1)!r} is given twice")
    return out


def general_text_control(
    pair: Any,
    texts: Any = None,
    *,
    tuned: Any = None,
    add_bos: bool | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    tokenizer: Any = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> GeneralTextShift:
    """Score whole general-English texts under base and tuned (see the module doc).

    `pair`: a `ModelPair` with a tuned view, or the base (hub id, folder, model) with `tuned=`.
    `texts`: strings or records (default: the WordNet glosses in `specprobe/data/general/`). A text
    longer than the context (`max_length`, default the model's) is cut to it and flagged. Under an
    initialised torch.distributed process group the ranks share the scoring (`specprobe.core.distributed`)
    and each returns the same result."""
    check_max_length(max_length)  # before any model loads
    records = _records(default_texts() if texts is None else texts)
    pair = load_pair(pair, tuned, tokenizer, device, dtype, purpose="general_text_control")
    length = fit_max_length(max_length, context_length(pair))
    items: list[ScoreItem | None] = []
    cut: list[bool] = []
    for tid, text in records:
        ids = encode(pair.tokenizer, text, add_bos, label=f"text {tid!r}").ids
        cut.append(len(ids) > length)
        ids = ids[:length]
        items.append(ScoreItem(tuple(ids), tuple(range(1, len(ids)))) if len(ids) > 1 else None)
    ready = [it for it in items if it is not None]
    scored = {}
    for variant in pair.variants:
        with pair.view(variant) as split:
            scored[variant] = iter(
                score_items(
                    split,
                    ready,
                    batch_size=batch_size,
                    progress=progress,
                    desc=f"general text, {variant}",
                    distribute=True,
                )
            )
    frame = pd.DataFrame(_rows(records, items, cut, scored), columns=GeneralTextShift.columns)
    meta = {
        k: pair.metadata[k]
        for k in ("base", "tuned", "adapter_sha256", "base_weights_sha256", "device", "dtype", "lora_forward")
        if k in pair.metadata
    }
    meta.update(
        texts=f"specprobe/data/general/{DEFAULT_TEXTS}" if texts is None else "given",
        max_length=length,
        add_bos=add_bos,
    )
    return GeneralTextShift(frame, meta, {"n_truncated": int(sum(cut))})


def _rows(records: list[tuple[str, str]], items: list, cut: list[bool], scored: dict) -> list[dict]:
    rows = []
    for (tid, _), item, truncated in zip(records, items, cut):
        if item is None:  # a text of one token: nothing conditioned to score
            lb = lt = math.nan
            n = 0
        else:
            lb, lt = float(next(scored["base"]).logps.sum()), float(next(scored["tuned"]).logps.sum())
            n = len(item.positions)
        rows.append(
            {
                "text_id": tid,
                "n_tokens": n,
                "logp_base": lb,
                "logp_tuned": lt,
                "delta": lt - lb,
                "delta_per_token": (lt - lb) / n if n else math.nan,
                "truncated": truncated,
            }
        )
    return rows
