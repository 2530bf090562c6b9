"""`seen_unseen(comparison, adapter)`: did the adapter memorise its training terms, learn its specialty,
or shift the whole domain?

Every term occurrence of an existing `Comparison` is put in one of three groups by what the adapter
saw in training (`groups.assign_group`): "seen" (the term occurs in the part of a training question
that fit in its training window: a prompt cut to max_length lost its start),
"unseen_same" (not seen, of a specialty the adapter was trained on) and "unseen_other". Control words
form a fourth group. No model runs: the deltas are the Comparison's.

Reading: seen >> unseen is memorisation; unseen_same > unseen_other is specialty knowledge; all three
alike and above the control words is a shift towards the domain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import pandas as pd

from specprobe.core.results import Result
from specprobe.probe.analyses._adapter_info import AdapterInfo
from specprobe.probe.analyses.groups import (
    CONTROL,
    GROUPS,
    SEEN,
    UNSEEN_OTHER,
    UNSEEN_SAME,
    assign_groups,
    count_in_texts,
)
from specprobe.probe.comparison import METRICS, Comparison
from specprobe.probe.inputs import UNASSIGNED
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.stats import N_PERM, cluster_bootstrap_mean, estimate_fields, holm, texts_and_words_test
from specprobe.probe.training_data import TrainingData, training_data

log = logging.getLogger(__name__)

#: the contrasts `tests()` reports, (a, b): group a's words against group b's, texts and words random
CONTRASTS = (
    (SEEN, UNSEEN_SAME),
    (SEEN, UNSEEN_OTHER),
    (UNSEEN_SAME, UNSEEN_OTHER),
    (SEEN, CONTROL),
    (UNSEEN_SAME, CONTROL),
    (UNSEEN_OTHER, CONTROL),
)
_COMPARISON_META = ("base", "tuned", "adapter_sha256", "base_weights_sha256", "options")


class SeenUnseen(AdapterInfo, Result):
    """One row per scored occurrence of a term or control word, with its group (seen, unseen_same,
    unseen_other, control) and the number of times its term occurs in the adapter's training questions.

    `groups()`: mean delta per group with text-clustered CIs; `tests()`: contrasts between the groups with
    texts and words random (Holm-adjusted); `by_specialty()`: seen vs unseen per term specialty;
    `terms()`: one row per term."""

    kind: ClassVar[str] = "seen_unseen"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = [
        "text_id",
        "term",
        "specialties",
        "is_control",
        "group",
        "train_count",
        "n_tokens",
        "delta",
        "delta_per_token",
    ]

    def _metric(self, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        return metric

    def groups(self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per group (seen, unseen_same, unseen_other, control): n occurrences, n_terms, n_texts, the mean
        delta and a 95% bootstrap CI that resamples texts. A group without occurrences has NaN values."""
        df = self._frame
        rows = []
        for group in (*GROUPS, CONTROL):
            g = cast(pd.DataFrame, df[df["group"] == group])
            est = cluster_bootstrap_mean(g[self._metric(metric)], g["text_id"], n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "adapter": self.adapter,
                    "group": group,
                    **estimate_fields(est, g, metric),
                }
            )
        return pd.DataFrame(rows)

    def tests(
        self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0, n_perm: int = N_PERM
    ) -> pd.DataFrame:
        """Contrasts (`CONTRASTS`) with texts and words random (`stats.texts_and_words_test`): per text, the
        mean delta of group a minus that of group b over the texts holding both (n_pairs), mean difference
        with a bootstrap CI and p_text (Wilcoxon); group a's words against group b's there (n_words_a,
        n_words_b), p_word (permuted; p_word_min: the smallest it can be); p_value the larger, Holm-adjusted
        across the contrasts (p_holm). Which group a term is in is a property of the word, so the words are
        the unit the claim is about (docs/method.md section 11)."""
        frame, metric = self._frame, self._metric(metric)
        rows = []
        for a, b in CONTRASTS:
            rows_a, rows_b = (cast(pd.DataFrame, frame[frame["group"] == g]) for g in (a, b))
            test = texts_and_words_test(rows_a, rows_b, metric, n_boot=n_boot, seed=seed, n_perm=n_perm)
            rows.append({"adapter": self.adapter, "contrast": f"{a} - {b}", "a": a, "b": b, **test})
        out = pd.DataFrame(rows)
        out["p_holm"] = holm(out["p_value"])
        return out

    def by_specialty(self, metric: str = "delta_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per term specialty (a term of several counts in each) and seen / unseen: n, mean delta with a
        text-clustered CI; `trained` says whether the adapter was trained on that specialty."""
        terms = cast(pd.DataFrame, self._frame[~self._frame["is_control"]]).copy()
        terms["specialty"] = terms["specialties"].map(lambda s: list(s) or [UNASSIGNED])
        terms["seen"] = terms["group"] == SEEN
        trained = {t.lower() for t in self.trained_on} if self.trained_on is not None else None
        rows = []
        for key, g in terms.explode("specialty").groupby(["specialty", "seen"], sort=True):
            spec, seen = cast(tuple, key)
            est = cluster_bootstrap_mean(g[self._metric(metric)], g["text_id"], n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "adapter": self.adapter,
                    "specialty": spec,
                    "trained": spec != UNASSIGNED and (trained is None or str(spec).lower() in trained),
                    "seen": bool(seen),
                    **estimate_fields(est, g, metric),
                }
            )
        return pd.DataFrame(rows)

    def seen_terms(self) -> dict[str, tuple[str, ...]]:
        """The terms the adapter's training questions held (the "seen" group), with their specialties."""
        seen = cast(pd.DataFrame, self._frame[self._frame["group"] == SEEN]).drop_duplicates("term")
        return {str(t): tuple(s) for t, s in zip(seen["term"], seen["specialties"])}

    def terms(self, metric: str = "delta_per_token") -> pd.DataFrame:
        """One row per term (and control word): group, training count, n occurrences, mean delta."""
        df = self._frame
        out = df.groupby(["term", "is_control", "group"], sort=True).agg(
            train_count=("train_count", "first"), n=(self._metric(metric), "size"), mean=(metric, "mean")
        )
        out.columns = ["train_count", "n", f"mean_{metric}"]
        return out.reset_index()

    def summary(self, metric: str = "delta_per_token") -> str:
        """Plain-text tables (groups and contrasts) for terminals and logs."""
        fmt = {"float_format": lambda v: f"{v:.4f}", "index": False}
        groups = self.groups(metric).drop(columns=["adapter"])
        tests = self.tests(metric).drop(columns=["adapter", "a", "b"])
        head = f"adapter {self.adapter} (trained on {', '.join(self.trained_on or ['all'])})"
        return f"{head}\n{groups.to_string(**fmt)}\n\n{tests.to_string(**fmt)}"  # pyright: ignore[reportCallIssue, reportArgumentType]


def seen_unseen(
    comparison: Comparison | str | Any,
    adapter: Any,
    train_data: Any = None,
    *,
    specialty: str | Sequence[str] | None = None,
    name: str | None = None,
    mapping: dict | None = None,
) -> SeenUnseen:
    """Split a Comparison's term occurrences by what `adapter` saw in training (see the module doc).

    `comparison`: a `Comparison` of this adapter against its base, or the path of a saved one.
    `adapter`: its adapter directory (with the manifest.json `finetune.train` wrote), a manifest.json
    path, a manifest dict or a `TrainRun`. `train_data`: the training QA file or records, when the
    manifest's path is not valid here or the adapter has no manifest (see `training_data`); a file
    whose sha256 differs from the manifest's is refused, and so is a Comparison made with other
    adapter weights. `specialty`: what an adapter without a manifest was trained on (default: the
    specialties of `train_data`). `name`: the adapter's label (default: its training specialties).
    `mapping`: how to read a training QA file the loader cannot read alone (default: the manifest's).
    """
    comp = _as_comparison(comparison)
    train = training_data(adapter, train_data, specialty, mapping)
    _check_same_adapter(comp, train)
    _warn_training_texts(comp)
    scored = comp.scored()
    match = MatchOptions(**comp.metadata.get("options", {}).get("match", {}))
    term_specs = _term_specialties(comp, scored)
    counts = count_in_texts(term_specs, train.texts(), match)
    group_of = assign_groups(term_specs, counts, train.specialties)
    frame = pd.DataFrame(
        {
            "text_id": scored["text_id"],
            "term": scored["term"],
            "specialties": scored["specialties"].map(tuple),
            "is_control": scored["is_control"].astype(bool),
            "group": [CONTROL if c else group_of[t] for t, c in zip(scored["term"], scored["is_control"])],
            "train_count": [0 if c else counts[t] for t, c in zip(scored["term"], scored["is_control"])],
            "n_tokens": scored["n_tokens"],
            "delta": scored["delta"].astype(float),
            "delta_per_token": scored["delta_per_token"].astype(float),
        },
        columns=SeenUnseen.columns,
    )
    return SeenUnseen(frame, _metadata(comp, train), _extras(train, name, group_of, counts))


def _as_comparison(comparison: Any) -> Comparison:
    if isinstance(comparison, Comparison):
        return comparison
    if isinstance(comparison, str) or hasattr(comparison, "__fspath__"):
        loaded = Comparison.load(comparison)
        return cast(Comparison, loaded)
    raise TypeError(f"comparison must be a Comparison or the path of a saved one, got {type(comparison).__name__}")


def _check_same_adapter(comp: Comparison, train: TrainingData) -> None:
    """A Comparison records the sha256 of its adapter's weights: it must be this adapter's."""
    recorded = comp.metadata.get("adapter_sha256")
    if recorded and train.adapter_sha256 and recorded != train.adapter_sha256:
        raise ValueError(
            f"the comparison was made with adapter weights sha256 {recorded[:12]}..., but {train.adapter} "
            f"holds {train.adapter_sha256[:12]}...: not this adapter's comparison"
        )


def _term_specialties(comp: Comparison, scored: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each scored term's specialties (from the Comparison's term map, else its rows)."""
    recorded: Mapping[str, Sequence[str]] = comp.extras.get("term_specialties", {})
    terms = cast(pd.DataFrame, scored[~scored["is_control"].astype(bool)])
    out: dict[str, tuple[str, ...]] = {}
    for term, specs in zip(terms["term"], terms["specialties"]):
        out.setdefault(term, tuple(recorded.get(term, specs)))
    return out


def _warn_training_texts(comp: Comparison) -> None:
    """Scored texts that are training questions (compare counted them in its metadata) make every group's
    delta partly memorisation of whole questions: said again here, where the groups are read."""
    n = comp.metadata.get("texts_in_training_data")
    if n:
        log.warning(
            "%d of the comparison's texts are questions the adapter was trained on: every group's delta there "
            "mixes memorisation of the whole question with the term effects; compare held-out questions",
            n,
        )


def _metadata(comp: Comparison, train: TrainingData) -> dict:
    meta = {k: comp.metadata[k] for k in _COMPARISON_META if k in comp.metadata}
    meta["texts_in_training_data"] = comp.metadata.get("texts_in_training_data")
    meta["comparison_created"] = comp.metadata.get("created")
    meta["training_data"] = train.source
    meta["n_training_questions"] = len(train.records)
    meta["adapter_dir"] = train.adapter
    return meta


def _extras(train: TrainingData, name: str | None, group_of: Mapping[str, str], counts: Mapping[str, int]) -> dict:
    return {
        "adapter": name or train.name,
        "trained_on": list(train.specialties) if train.specialties is not None else None,
        "term_groups": dict(group_of),
        "train_counts": {t: int(c) for t, c in counts.items() if c},
        "group_sizes": {g: sum(1 for v in group_of.values() if v == g) for g in GROUPS},
    }


def seen_unseen_table(
    results: Sequence[SeenUnseen] | Mapping[str, SeenUnseen], table: str = "groups", **kwargs: Any
) -> pd.DataFrame:
    """One long table over several adapters: `table` ("groups", "tests" or "by_specialty") of each,
    stacked, with the adapter in the first column (a mapping's keys replace the adapters' names)."""
    if table not in ("groups", "tests", "by_specialty"):
        raise ValueError(f"table must be 'groups', 'tests' or 'by_specialty', got {table!r}")
    items = list(results.items()) if isinstance(results, Mapping) else [(None, r) for r in results]
    frames = []
    for label, res in items:
        frame = getattr(res, table)(**kwargs)
        if label is not None:
            frame["adapter"] = label
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
