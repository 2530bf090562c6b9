"""`trajectory(base, checkpoints, terms, texts)`: the dose-response of fine-tuning. How do the
per-specialty term deltas, and their gap over control words, move with training steps, and when (if
ever) does the adapter's own specialty pull ahead of the others?

Every checkpoint (the snapshots `specprobe finetune --save-steps` keeps, see `checkpoints.py`) is
compared with the one loaded base: the terms and control words are located once (`prepare`, as
`compare` does), the base is scored once, and each adapter is put beside it in turn
(`ModelPair.with_adapter`: LoRA weights only) and scored through the one forward path
(`score_items`). Each step's rows are exactly those `compare(base, checkpoint, ...)` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import pandas as pd

from specprobe.core.models import ModelPair, check_adapter_base
from specprobe.core.results import Result
from specprobe.core.scoring import batch_rows, score_items
from specprobe.probe.analyses._adapter_info import AdapterInfo
from specprobe.probe.analyses.checkpoints import Checkpoint, Checkpoints, read_checkpoints
from specprobe.probe.comparison import METRICS, Comparison, occurrence_rows
from specprobe.probe.options import ProbeOptions
from specprobe.probe.prepare import Prepared, options_meta, prepare
from specprobe.probe.stats import N_PERM, finite_rows, holm, named_word_counts, texts_and_words_test

NEVER = "never"
_KEEP = ("text_id", "term", "specialties", "text_specialties", "is_control", "n_tokens")
_VALUES = ("logp_base", "logp_tuned", "delta", "delta_per_token")
_TESTS = ("mean_diff", "ci_low", "ci_high", "n_pairs")
_P = ("p_text", "p_word", "p_word_min", "p_value")
GAP_COLUMNS = ["step", *_TESTS, "n_words", "n_control_words", *_P, "p_holm"]
OWN_COLUMNS = ["step", *_TESTS, "n_own_words", "n_other_words", *_P, "p_holm"]


class Trajectory(AdapterInfo, Result):
    """One row per (checkpoint step, occurrence of a term or control word): the Comparison rows of
    each checkpoint against the base, with a `step` column.

    `curves()`: per step and term specialty (and control words), the mean delta with a text-clustered
    CI and the paired gap over control words; `gap()`: all terms minus control words per step;
    `own_advantage()` / `onset()`: when the adapter's own specialty's delta first exceeds the other
    specialties' (Holm-adjusted across steps), or "never". Both tests take texts and words as random
    (`stats.texts_and_words_test`: p_value is the larger of p_text and p_word)."""

    kind: ClassVar[str] = "trajectory"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties", "text_specialties")
    columns: ClassVar[list[str]] = ["step", *_KEEP, *_VALUES]

    @property
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self._frame["step"].unique())

    def comparison(self, step: int) -> Comparison:
        """The rows of one step as a `Comparison` (its `by_specialty`, `by_term`, `summary`, report)."""
        if step not in self.steps:
            raise ValueError(f"no checkpoint at step {step}; steps: {self.steps}")
        rows = cast(pd.DataFrame, self._frame[self._frame["step"] == step]).drop(columns=["step"])
        return Comparison(rows, {**self.metadata, "step": step}, {"missing": self.extras.get("missing", [])})

    def curves(self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """`Comparison.by_specialty` of every step, stacked, with `step` first: per term specialty (and a
        `control` row), mean delta with a 95% CI resampling texts, and minus_control (texts and words random:
        p_text, p_word, p_value the larger, Holm-adjusted across the specialties of the step)."""
        frames = [self.comparison(s).by_specialty(metric, n_boot=n_boot, seed=seed).assign(step=s) for s in self.steps]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return cast(pd.DataFrame, out[["step", *[c for c in out.columns if c != "step"]]]) if len(out) else out

    def gap(
        self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0, n_perm: int = N_PERM
    ) -> pd.DataFrame:
        """All terms minus control words, per step, with texts and words random (`stats.texts_and_words_test`):
        per text the mean term delta minus the mean control delta (texts with both), mean difference with a
        bootstrap CI, p_text (Wilcoxon), p_word (the term words against the control words, permuted),
        p_value the larger, Holm across steps."""
        rows = []
        for step, df in self._scored_steps(metric):
            terms, ctrl = cast(pd.DataFrame, df[~df["is_control"]]), cast(pd.DataFrame, df[df["is_control"]])
            test = texts_and_words_test(terms, ctrl, metric, n_boot=n_boot, seed=seed, n_perm=n_perm)
            rows.append({"step": step, **named_word_counts(test, "n_words", "n_control_words")})
        return _with_holm(rows, GAP_COLUMNS)

    def own_advantage(
        self,
        metric: str = "delta_per_token",
        *,
        specialty: str | Sequence[str] | None = None,
        n_boot: int = 2000,
        seed: int = 0,
        alpha: float = 0.05,
        n_perm: int = N_PERM,
    ) -> pd.DataFrame:
        """Per step: the terms of the adapter's own specialty (`specialty`, default: what it was trained on)
        against the terms of other specialties, texts and words random (`stats.texts_and_words_test`): per
        text, own mean delta minus other mean delta (texts with both), mean difference with a bootstrap CI,
        p_text (Wilcoxon), p_word (own words against other words, permuted), p_value the larger, Holm across
        steps; `ahead` when the difference is positive with p_holm < alpha. Empty for an adapter trained on
        every specialty."""
        own = _own_names(specialty if specialty is not None else self.trained_on)
        if own is None:
            return pd.DataFrame(columns=OWN_COLUMNS)
        rows = []
        for step, df in self._scored_steps(metric):
            terms = cast(pd.DataFrame, df[~df["is_control"]])
            is_own = terms["specialties"].map(lambda s: bool({x.lower() for x in s} & own))
            is_other = terms["specialties"].map(lambda s: len(s) > 0) & ~is_own
            own_rows, other_rows = cast(pd.DataFrame, terms[is_own]), cast(pd.DataFrame, terms[is_other])
            test = texts_and_words_test(own_rows, other_rows, metric, n_boot=n_boot, seed=seed, n_perm=n_perm)
            rows.append({"step": step, **named_word_counts(test, "n_own_words", "n_other_words")})
        out = _with_holm(rows, OWN_COLUMNS)
        out["ahead"] = (out["mean_diff"] > 0) & (out["p_holm"] < alpha)
        return out

    def onset(
        self, metric: str = "delta_per_token", *, alpha: float = 0.05, table: pd.DataFrame | None = None, **kwargs: Any
    ) -> dict:
        """When the own-specialty advantage appears: `first` (the first step where it is significant)
        and `sustained` (the first step from which it stays significant at every later step), each a
        step or "never"; both "not applicable" for an adapter trained on every specialty. `table`: this
        trajectory's `own_advantage(metric, alpha=alpha, ...)` when already computed (its tests then run once)."""
        table = self.own_advantage(metric, alpha=alpha, **kwargs) if table is None else table
        if table.empty:
            return {"first": "not applicable", "sustained": "not applicable"}
        ahead = list(zip(table["step"].astype(int), table["ahead"].astype(bool)))
        first = next((s for s, a in ahead if a), NEVER)
        sustained: int | str = NEVER
        for s, a in reversed(ahead):
            if not a:
                break
            sustained = s
        return {"first": first, "sustained": sustained}

    def summary(self, metric: str = "delta_per_token") -> str:
        """Plain-text tables (per-specialty curves, gap over controls, own-specialty onset)."""
        fmt = {"float_format": lambda v: f"{v:.4f}", "index": False}
        cols = ["step", "specialty", "n", f"mean_{metric}", "ci_low", "ci_high", "minus_control", "p_holm"]
        curves = self.curves(metric)
        parts = [f"adapter {self.adapter} (trained on {', '.join(self.trained_on or ['all'])}); steps {self.steps}"]
        parts.append(curves[[c for c in cols if c in curves]].to_string(**fmt))  # pyright: ignore[reportCallIssue, reportArgumentType]
        parts.append("terms minus control words:\n" + self.gap(metric).to_string(**fmt))  # pyright: ignore[reportCallIssue, reportArgumentType]
        onset = self.onset(metric)
        parts.append(f"own specialty ahead: first at {onset['first']}, from {onset['sustained']} on")
        return "\n\n".join(parts)

    def _scored_steps(self, metric: str):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        df = finite_rows(self._frame)
        for step in self.steps:
            yield step, cast(pd.DataFrame, df[df["step"] == step])


def _own_names(specialty: str | Sequence[str] | None) -> set[str] | None:
    if specialty is None:
        return None
    names = [specialty] if isinstance(specialty, str) else list(specialty)
    own = {str(n).strip().lower() for n in names if str(n).strip()}
    return None if not own or "all" in own else own


def _with_holm(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The steps' rows as a table of `columns`, with p_holm: Holm across the steps."""
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["p_holm"] = holm(out["p_value"]) if len(out) else []
    return out


# -- running the models ------------------------------------------------------------------------------------
def trajectory(
    base: Any,
    checkpoints: Any,
    terms: Any,
    texts: Any = None,
    *,
    specialty: str | Sequence[str] | None = None,
    name: str | None = None,
    force_adapter: bool = False,
    options: ProbeOptions | None = None,
    **probe_options: Any,
) -> Trajectory:
    """Compare every checkpoint with `base` on the same terms and texts (see the module doc).

    `base`: a hub id, local folder or loaded model (or a `ModelPair` with an adapter, whose base is
    used). `checkpoints`: an adapter folder whose manifest.json lists snapshots (`finetune
    --save-steps`; they and the final adapter, in step order), a mapping {step: adapter folder} or a
    list of (step, folder). `terms`, `texts`: as for `compare`. `specialty`: the adapter's own
    specialty (default: the manifest's training filter). `options` or keyword arguments: the
    `ProbeOptions` fields (controls, batch_size, device, dtype, ...)."""
    if options is not None and probe_options:
        raise ValueError(f"trajectory: pass options= or keyword arguments ({', '.join(probe_options)}), not both")
    opts = options if options is not None else ProbeOptions(**probe_options)
    if terms is None:
        raise ValueError("terms is required (a Lexicon, a mapping term -> specialties, or a list)")
    points = read_checkpoints(checkpoints)
    first = points.points[0]
    if isinstance(base, ModelPair):
        pair = base
    else:
        pair = ModelPair.load(
            base,
            first.path,
            tokenizer=opts.tokenizer,
            device=opts.device,
            dtype=opts.dtype,
            force_adapter=force_adapter,
        )
    if points.adapter is not None and not force_adapter:  # the run's snapshots have no manifest: check here
        check_adapter_base(
            points.adapter,
            {"base_weights_sha256": points.base_weights_sha256},
            pair.metadata.get("base_weights_sha256"),
        )
    prep = prepare(pair, terms, texts, opts)
    frames = _score_points(
        pair, points.points, prep, opts, reuse_first=not isinstance(base, ModelPair), force=force_adapter
    )
    meta = {k: pair.metadata[k] for k in ("base", "base_weights_sha256", "device", "dtype") if k in pair.metadata}
    meta.update(options_meta(prep, batch_rows(pair.device, opts.batch_size)))
    meta["checkpoints"] = [{"step": p.step, "path": str(p.path), "sha256": p.sha256} for p in points.points]
    return Trajectory(pd.concat(frames, ignore_index=True), meta, _extras(points, prep, specialty, name))


def _score_points(
    pair: ModelPair, points: Sequence[Checkpoint], prep: Prepared, opts: ProbeOptions, *, reuse_first: bool, force: bool
) -> list[pd.DataFrame]:
    """The base scored once, then each checkpoint's adapter beside it; one frame of rows per step."""

    def score(split: Any, desc: str) -> list:
        return score_items(
            split, prep.items, batch_size=opts.batch_size, progress=opts.progress, desc=desc, distribute=True
        )

    with pair.view("base") as split:
        base_scored = score(split, "scoring base")
    frames = []
    for i, point in enumerate(points):
        step_pair = pair if (i == 0 and reuse_first) else pair.with_adapter(point.path, force=force)
        with step_pair.view("tuned") as split:
            tuned = score(split, f"scoring step {point.step}")
        rows = pd.DataFrame(occurrence_rows(prep, {"base": base_scored, "tuned": tuned}))
        frames.append(rows[list(_KEEP) + list(_VALUES)].assign(step=point.step)[Trajectory.columns])
        if step_pair is not pair:
            _drop_adapter(pair, step_pair)
    return frames


def _drop_adapter(pair: ModelPair, done: ModelPair) -> None:
    """Unload a checkpoint's LoRA weights once scored (one base, one adapter at a time in memory)."""
    model = pair.base_model
    if done.adapter_name and pair.adapter_name and done.adapter_name != pair.adapter_name:
        model.set_adapter(pair.adapter_name)
        model.delete_adapter(done.adapter_name)


def _extras(points: Checkpoints, prep: Prepared, specialty: str | Sequence[str] | None, name: str | None) -> dict:
    own = [specialty] if isinstance(specialty, str) else list(specialty) if specialty is not None else None
    trained = own if own is not None else (list(points.trained_on) if points.trained_on else None)
    found = {o.term for o in prep.occs if not o.is_control}
    return {
        "adapter": name or points.adapter or str(points.points[-1].path),
        "trained_on": trained,
        "steps": [p.step for p in points.points],
        "total_steps": points.total_steps,
        "missing": sorted(t for t in prep.term_map if t not in found),
        "term_specialties": {t: list(s) for t, s in prep.term_map.items()},
    }
