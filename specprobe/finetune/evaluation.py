"""`evaluate(model, data, adapter=None)`: multiple-choice accuracy by option log-likelihood.

As lm-evaluation-harness does for multiple-choice tasks, every option is scored as a continuation
of the prompt (see `specprobe.finetune.prompts`), through the shared scoring core
(`specprobe.core.scoring.score_items`, the same forward path `compare` uses). Two predictions are
reported per question:

* ``acc``: the option with the largest summed log-likelihood log p(continuation | prompt);
* ``acc_norm``: the largest log-likelihood per character of the continuation (lm-eval's acc_norm,
  which divides by the continuation's length in characters, without the leading delimiter).

A tie goes to the first of the tied options (``np.argmax``, as lm-eval). A pick is correct when its
option has the answer's text (`specprobe.finetune.prompts.answer_options`: a question that lists
the answer twice has two correct options).

Accuracies come per specialty with Wilson 95% intervals. With an adapter, the base (adapter
disabled) and the tuned model are scored from one loaded model. Under an initialised
torch.distributed process group the ranks share the scoring (data-parallel, see
`specprobe.core.distributed`) and each returns the same result.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from specprobe.core.models import ModelPair, context_length
from specprobe.core.results import Result
from specprobe.finetune.data import explode_specialties, load_selected, read_manifest
from specprobe.finetune.prompts import (
    LETTERS,
    PromptFormat,
    answer_options,
    check_max_length,
    encode_continuation,
    fit_max_length,
    resolve_format,
)
from specprobe.terms.datasets import QARecord

log = logging.getLogger(__name__)

Z95 = 1.959963984540054
OVERALL = "ALL"
#: the columns `accuracy_table` gives per group (after the grouping columns): counts, rates and Wilson CIs
ACCURACY_COLUMNS = (
    "specialty",
    "n",
    "n_correct",
    "acc",
    "acc_lo",
    "acc_hi",
    "n_correct_norm",
    "acc_norm",
    "acc_norm_lo",
    "acc_norm_hi",
)


def wilson_interval(k: int | float, n: int | float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (NaNs when n == 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k <= 0 else min(p, max(0.0, centre - half))  # exact at the ends (no rounding residue)
    hi = 1.0 if k >= n else max(p, min(1.0, centre + half))
    return lo, hi


def accuracy_table(items: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Per model and specialty (and overall, specialty "ALL"): n, acc and acc_norm with Wilson 95% CIs.

    An item with several specialties counts towards each of them (and once towards ALL).
    """
    rows = []
    exploded = explode_specialties(items)
    groups = [
        (k if isinstance(k, tuple) else (k,), g) for k, g in exploded.groupby(list(by) + ["specialty"], sort=False)
    ]
    groups += [((k if isinstance(k, tuple) else (k,)) + (OVERALL,), g) for k, g in items.groupby(list(by), sort=False)]
    for keys, g in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = dict(zip(list(by) + ["specialty"], keys))
        n = len(g)
        for metric, col in (("acc", "correct"), ("acc_norm", "correct_norm")):
            k = int(cast(pd.Series, g[col]).sum())
            lo, hi = wilson_interval(k, n)
            row.update(
                {
                    f"{metric}": k / n if n else math.nan,
                    f"{metric}_lo": lo,
                    f"{metric}_hi": hi,
                    f"n_correct{'' if metric == 'acc' else '_norm'}": k,
                }
            )
        row["n"] = n
        rows.append(row)
    cols = [*by, *ACCURACY_COLUMNS]
    table = pd.DataFrame(rows, columns=cols)
    if table.empty:
        return table
    order = {k: i for i, k in enumerate(dict.fromkeys(items[by[0]]))}
    table["_m"] = cast(pd.Series, table[by[0]]).map(order)
    table["_all"] = table["specialty"] == OVERALL
    return table.sort_values(["_m", "_all", "specialty"]).drop(columns=["_m", "_all"]).reset_index(drop=True)


def format_table(acc: pd.DataFrame, by: str = "model") -> str:
    """A plain-text per-specialty table: one row per specialty, acc [CI] and acc_norm per model."""
    lines = []
    models = list(dict.fromkeys(acc[by]))
    specs = [s for s in dict.fromkeys(acc["specialty"]) if s != OVERALL] + [OVERALL]
    width = max([len(s) for s in specs] + [9])
    header = f"{'specialty':<{width}} {'n':>5}" + "".join(f"  {m[:24]:>24} {'(norm)':>7}" for m in models)
    lines.append(header)
    lines.append("-" * len(header))
    for s in specs:
        sub = acc[acc["specialty"] == s].set_index(by)
        if sub.empty:
            continue
        n = int(sub["n"].iloc[0])
        cells = ""
        for m in models:
            if m in sub.index:
                r = sub.loc[m]
                cells += f"  {r['acc']:>6.3f} [{r['acc_lo']:.3f},{r['acc_hi']:.3f}] {r['acc_norm']:>7.3f}"
            else:
                cells += f"  {'':>24} {'':>7}"
        lines.append(f"{s:<{width}} {n:>5}{cells}")
    return "\n".join(lines)


class MCEvaluation(Result):
    """Per-item multiple-choice scores, one row per (model, question); `.accuracy()` aggregates."""

    kind = "mc_evaluation"
    tuple_columns = ("specialties", "answer_indices", "option_logp", "option_n_tokens", "option_n_chars")
    columns = [
        "model",
        "item_id",
        "specialties",
        "n_options",
        "answer_index",
        "answer_indices",
        "option_logp",
        "option_n_tokens",
        "option_n_chars",
        "pred",
        "pred_norm",
        "correct",
        "correct_norm",
        "truncated",
        "straddles",
    ]

    def accuracy(self) -> pd.DataFrame:
        """Per model and specialty (plus "ALL"): n, acc, acc_norm with Wilson 95% intervals."""
        return accuracy_table(self._frame, ("model",))

    def table(self) -> str:
        return format_table(self.accuracy())

    def to_lm_eval(self, path: str | os.PathLike, model: str | None = None) -> Path:
        """Write lm-evaluation-harness's results.json for `model` (None: the only one): acc and
        acc_norm with their standard errors, overall and per specialty (subtasks of one group)."""
        from specprobe.finetune.lm_eval_export import write_results

        return write_results(self._frame, self.metadata, path, model)

    def to_lm_eval_samples(
        self,
        path: str | os.PathLike,
        model: str | None = None,
        data: str | os.PathLike | Sequence[QARecord] | None = None,
        mapping: dict | None = None,
    ) -> Path:
        """Write lm-eval's `--log_samples` jsonl for `model` (None: the only one), one line per
        question; `data`: the QA file evaluated (default: the one recorded in the metadata), read with
        `mapping` (default: the one recorded with it)."""
        from specprobe.finetune.lm_eval_export import write_samples

        return write_samples(self._frame, self.metadata, path, model, data, mapping)

    def summary(self) -> str:
        return self.table()


# -- scoring -----------------------------------------------------------------------------------------------
def build_option_items(tokenizer, records: Sequence[QARecord], fmt: PromptFormat, max_length: int):
    """ScoreItems for every option of every record, plus per-option (n_tokens, n_chars, truncated, straddles)."""
    from specprobe.core.scoring import ScoreItem

    items, info = [], []
    for rec in records:
        prompt = fmt.prompt(rec)
        per = []
        for j, cont in enumerate(fmt.continuations(rec)):
            where = f"question {rec.id!r}, option {LETTERS[j]}"
            enc = encode_continuation(tokenizer, prompt, cont, max_length=max_length, where=where)
            items.append(ScoreItem(enc.ids, enc.positions))
            per.append(
                (
                    len(enc.positions),
                    len(cont[len(fmt.delimiter) :]) if cont.startswith(fmt.delimiter) else len(cont),
                    enc.n_dropped > 0,
                    enc.straddles,
                )
            )
        info.append(per)
    return items, info


def prompt_sharing_works(split, items) -> bool:
    """Whether scoring the first items that share a prompt in one shared-prompt row reproduces scoring
    them one by one on this model (an architecture that ignored the custom attention mask would not).
    The probe is the first group that shares, not the first question, whose options may share nothing
    (each cut differently from the left); with no group that shares, there is nothing to trust."""
    from specprobe.core.rows import context_groups
    from specprobe.core.scoring import score_items

    first = next(([it for _, it in g] for g in context_groups(items).values() if len(g) > 1), None)
    if first is None:
        return False
    alone = score_items(split, first, batch_size=len(first))
    shared = score_items(split, first, batch_size=len(first), share_prefixes=True)
    dtype = next(split.causal_lm.parameters()).dtype
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    diff = max(float(np.max(np.abs(a.logps - s.logps))) for a, s in zip(alone, shared))
    if diff > tol:
        log.warning(
            "%s: shared-prompt scoring differs from per-option scoring by %.3g; scoring each option separately",
            type(split.causal_lm).__name__,
            diff,
        )
    return diff <= tol


def _option_rows(label: str, records: Sequence[QARecord], info: Sequence, scored: Sequence) -> list[dict]:
    """One row per question for model `label`: option log-probs, the predictions (raw and per character)
    and whether they are correct; `scored` holds each question's options in order."""
    rows = []
    k = 0
    for rec, per in zip(records, info):
        n_opt = len(rec.options)
        sums = np.array([float(scored[k + j].logps.sum()) for j in range(n_opt)])
        chars = np.array([max(1, c) for _, c, _, _ in per], dtype=float)
        flags = {"truncated": any(tr for _, _, tr, _ in per), "straddles": any(st for _, _, _, st in per)}
        rows.append(question_row(label, rec, sums, tuple(t for t, _, _, _ in per), chars, **flags))
        k += n_opt
    return rows


def question_row(
    label: str,
    rec: QARecord,
    sums: np.ndarray,
    n_tokens: tuple[int, ...],
    chars: np.ndarray,
    *,
    truncated: bool = False,
    straddles: bool = False,
) -> dict:
    """The `MCEvaluation` row of one question from its options' summed log-likelihoods and lengths in
    characters (at least 1): the predictions (summed, per character; ties: the first option) and
    whether they are correct (any option with the answer's text, `answer_options`)."""
    pred, pred_norm = int(np.argmax(sums)), int(np.argmax(sums / chars))
    answers = answer_options(rec)
    return {
        "model": label,
        "item_id": rec.id,
        "specialties": tuple(rec.specialties),
        "n_options": len(rec.options),
        "answer_index": rec.answer_index,
        "answer_indices": tuple(sorted(answers)),
        "option_logp": tuple(float(x) for x in sums),
        "option_n_tokens": n_tokens,
        "option_n_chars": tuple(int(c) for c in chars),
        "pred": pred,
        "pred_norm": pred_norm,
        "correct": pred in answers,
        "correct_norm": pred_norm in answers,
        "truncated": truncated,
        "straddles": straddles,
    }


def warn_flags(frame: pd.DataFrame, n_questions: int, max_length: int) -> None:
    """Warn about the questions (counted once over the models of `frame`) whose prompt was cut to fit
    `max_length`, or whose first option token also covers the prompt's last characters (that token is
    scored with the option, conditioned on a prompt without those characters)."""
    n_models = max(1, int(cast(pd.Series, frame["model"]).nunique()))
    n_trunc = int(cast(pd.Series, frame["truncated"]).sum()) // n_models
    if n_trunc:
        log.warning(
            "%d of %d scored questions were longer than %d tokens; their prompts lost tokens from the left",
            n_trunc,
            n_questions,
            max_length,
        )
    n_straddle = int(cast(pd.Series, frame["straddles"]).sum()) // n_models
    if n_straddle:
        log.warning(
            "%d of %d scored questions have an option whose first token also covers the end of the prompt "
            "(column 'straddles'); that token is scored as the option's: end the template so that the "
            "option starts a new token (e.g. after 'Answer:')",
            n_straddle,
            n_questions,
        )


def score_records(
    pair,
    records: Sequence[QARecord],
    fmt: PromptFormat,
    *,
    variants: Sequence[str] | dict,
    max_length: int,
    batch_size: int | None = None,
    progress: bool = False,
    prepared=None,
    share_prompt: bool = True,
) -> pd.DataFrame:
    """Per-(model, item) rows for each variant of `pair` ({label: variant} or variant names).

    `share_prompt`: the options of a question go through the model as one row that encodes the
    prompt once (checked against per-option scoring on the first options that share one; see core/rows.py)."""
    from specprobe.core.distributed import agree
    from specprobe.core.scoring import score_items

    items, info = prepared if prepared is not None else build_option_items(pair.tokenizer, records, fmt, max_length)
    labels = dict(variants) if isinstance(variants, dict) else {v: v for v in variants}
    rows = []
    for label, variant in labels.items():
        with pair.view(variant) as split:
            share = share_prompt and prompt_sharing_works(split, items)
            # data-parallel ranks must plan the same rows: rank 0's check decides for all
            share = agree(share)
            scored = score_items(
                split,
                items,
                batch_size=batch_size,
                share_prefixes=share,
                progress=progress,
                desc=f"options {label}",
                distribute=True,
            )
        rows += _option_rows(label, records, info, scored)
    return pd.DataFrame(rows, columns=MCEvaluation.columns)


def pair_manifest(pair: ModelPair) -> dict:
    """The training manifest beside a ready pair's tuned side (its adapter directory; {} without one), so
    that a pair is evaluated with the prompt format its adapter was trained with, as a path would be."""
    tuned = pair.metadata.get("tuned")
    return read_manifest(tuned) if isinstance(tuned, str) and Path(tuned).is_dir() else {}


def evaluate(
    model: Any,
    data: str | os.PathLike | Sequence[QARecord],
    adapter: str | os.PathLike | None = None,
    *,
    specialty: str | Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    template: str | None = None,
    option_format: str | None = None,
    continuation: str | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    mapping: dict | None = None,
) -> MCEvaluation:
    """Multiple-choice accuracy of `model` (and `model` + `adapter`) on `data`, per specialty.

    `model`: a hub id, local directory, loaded model, or a ready `ModelPair` (then adapter=None).
    `adapter`: a PEFT adapter directory (or a full fine-tuned model); base and tuned are then both
    scored (pick with `variants=("tuned",)`). The prompt format defaults to the one the adapter
    was trained with (its manifest, also for a `ModelPair` loaded with it), else `PromptFormat()`.
    `mapping`: how to read a QA file the loader cannot read alone (`load_qa`); recorded in metadata["data"].
    """
    check_max_length(max_length)
    records, data_meta = load_selected(data, specialty, mapping=mapping)
    ready = isinstance(model, ModelPair)
    if ready and adapter is not None:
        raise ValueError("pass either a ModelPair or model + adapter, not both")
    manifest = pair_manifest(model) if ready else read_manifest(adapter)
    fmt = resolve_format(manifest.get("prompt"), template, option_format, continuation)
    pair = model if ready else ModelPair.load(model, adapter, tokenizer=tokenizer, device=device, dtype=dtype)
    chosen = tuple(variants) if variants else pair.variants
    L = fit_max_length(max_length, context_length(pair))
    frame = score_records(pair, records, fmt, variants=chosen, max_length=L, batch_size=batch_size, progress=progress)
    warn_flags(frame, len(records), L)
    from specprobe.core.scoring import batch_rows

    meta = dict(pair.metadata)
    meta.update(
        {
            "data": data_meta,
            "specialty": specialty,
            "prompt": fmt.to_dict(),
            "max_length": L,
            "batch_size": batch_rows(pair.device, batch_size),
            "variants": list(chosen),
            "adapter_manifest_identity": manifest.get("identity_hash"),
            "adapter_trained_on": manifest.get("specialty"),
        }
    )
    return MCEvaluation(frame, meta)
