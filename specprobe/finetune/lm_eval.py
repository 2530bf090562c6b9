"""Reading lm-evaluation-harness `--log_samples` output into an `MCEvaluation` or `AccuracyMatrix`.

lm-eval scores each option of a multiple-choice question as a continuation of the prompt, exactly as
`evaluate` does, and with ``--log_samples`` writes one JSON line per question (`doc_id`, `doc`,
`target`, `arguments`, `resps`, `filtered_resps`: one ``[loglik, is_greedy]`` per option, `acc`, ...).
`from_lm_eval` turns such files (one per model) into specprobe's results, per specialty with Wilson
intervals and, for several models, the own-specialty test, without loading any model.

Matching a sample to a question of the QA file is checked, never guessed: the sample's `doc_id` is
taken as the question's index in the file when a `doc` field is that question's text, else a `doc`
field equal to the text of exactly one question matches it; when no `doc` field is a question's text,
the `doc_id` question's text must appear inside the sample (a field of `doc`, or the prompt
`arguments`). The number of options must agree, choices that are the options must be in the file's
order, a `target` given as an index, a letter or a choice's text must name the question's answer, and
the sample's own `acc` and `acc_norm` must agree with the ones computed from its log-likelihoods. Any
mismatch is a one-line `ValueError` naming the file, line and doc_id. Questions without a sample
(lm-eval's ``--limit``) are left out, with a warning and a count in the metadata.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from specprobe.finetune.accuracy_matrix import BASE, AccuracyMatrix, from_items
from specprobe.finetune.data import check_unique_ids, load_records, select, specialties_of
from specprobe.finetune.evaluation import MCEvaluation, question_row
from specprobe.finetune.prompts import LETTERS, answer_options
from specprobe.terms.datasets import QARecord
from specprobe.utils.io import iter_jsonl

log = logging.getLogger(__name__)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (dict values, list items), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _loglik(resp: Any, where: str) -> float:
    """One option's log-likelihood from `filtered_resps[i]`: [loglik, is_greedy] (strings since lm-eval 0.4.3)."""
    value: Any = resp[0] if isinstance(resp, (list, tuple)) and resp else resp
    try:
        loglik = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: filtered_resps entry {resp!r} is not [loglik, is_greedy]") from None
    if math.isnan(loglik):  # np.argmax would pick it: a prediction from nothing
        raise ValueError(f"{where}: filtered_resps entry {resp!r} is not a number (NaN log-likelihood)")
    return loglik


def _continuations(sample: dict, n: int) -> list[str] | None:
    """The continuation strings of the options (arguments' `arg_1`), or None when not logged."""
    args = sample.get("arguments")
    if isinstance(args, dict):
        args = [args.get(f"gen_args_{i}") for i in range(len(args))]
    if not isinstance(args, list) or len(args) != n:
        return None
    conts = [
        a.get("arg_1") if isinstance(a, dict) else (a[1] if isinstance(a, list) and len(a) > 1 else None) for a in args
    ]
    return [c for c in conts if isinstance(c, str)] if all(isinstance(c, str) for c in conts) else None


class _Matcher:
    """Finds the QA record of a sample (doc_id order plus a question-text check, else the question text)."""

    def __init__(self, records: Sequence[QARecord], source: str) -> None:
        self.records, self.source = records, source
        self.by_text: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            self.by_text.setdefault(_norm(r.question), []).append(i)

    def match(self, sample: dict, where: str) -> int:
        doc_id = sample.get("doc_id")
        if not isinstance(doc_id, int) or isinstance(doc_id, bool):
            raise ValueError(f"{where}: field 'doc_id' {doc_id!r} is not an integer")
        doc, args = sample.get("doc"), sample.get("arguments")
        texts = [_norm(s) for s in _strings(doc)]
        # a doc field equal to a question's text names it; record doc_id's question inside a longer text (the
        # prompt, with its few-shot examples) is the weaker sign: a short question is part of longer ones
        hits = {i for t in texts for i in self.by_text.get(t, [])}
        if doc_id in hits:
            return doc_id
        if len(hits) == 1:
            return hits.pop()
        if not hits and 0 <= doc_id < len(self.records):
            question = _norm(self.records[doc_id].question)
            if any(question in t for t in texts) or any(question in _norm(s) for s in _strings(args)):
                return doc_id
        shown = next((t for t in texts if len(t) > 20), texts[0] if texts else "")
        raise ValueError(
            f"{where}: the sample does not match {self.source}: "
            + (
                f"its question {shown[:70]!r} is in {len(hits)} records"
                if hits
                else f"record {doc_id} is {self.records[doc_id].question[:50]!r}, not in the sample ({shown[:50]!r})"
                if 0 <= doc_id < len(self.records)
                else f"no record {doc_id} (the file has {len(self.records)}) and no question text matches"
            )
        )


def _choices(conts: list[str] | None) -> list[str] | None:
    """lm-eval's choices: the continuations without the target delimiter that lm-eval put before each of
    them (its `target_delimiter`, " " by default, "\\n" in some tasks): the whitespace they all start with."""
    if not conts:
        return None
    common = os.path.commonprefix(conts)
    delimiter = common[: len(common) - len(common.lstrip())]
    return [c[len(delimiter) :] for c in conts]


def _check_order(choices: list[str] | None, rec: QARecord, where: str) -> None:
    """Choices that are the question's options in another order would pair each log-likelihood with
    another option (and the prediction with another answer)."""
    if not choices:
        return
    mine, theirs = [_norm(o) for o in rec.options], [_norm(c) for c in choices]
    if theirs != mine and sorted(theirs) == sorted(mine):
        k = next(i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b)
        raise ValueError(
            f"{where}: lm-eval's choices are the options of question {rec.id!r} in another order "
            f"(choice {k} is {choices[k][:40]!r}, option {LETTERS[k]} is {rec.options[k][:40]!r})"
        )


def _check_target(target: Any, rec: QARecord, where: str, choices: list[str] | None = None) -> None:
    """A target that names an option (index, letter or text) must name the answer; other forms are not
    checked. A text is looked up as lm-eval does, in its own choices when the sample logs them."""
    if target is None:
        return
    t = str(target).strip()
    named = set()
    if re.fullmatch(r"\d+", t):
        named.add(int(t))
    if len(t) == 1 and t in LETTERS[: len(rec.options)]:
        named.add(LETTERS.index(t))
    named |= {i for i, o in enumerate(choices or rec.options) if o == t}
    if named and not named & answer_options(rec):
        raise ValueError(
            f"{where}: target {t!r} is not the answer of question {rec.id!r} "
            f"(option {LETTERS[rec.answer_index]}: {rec.answer!r})"
        )


def _row(label: str, rec: QARecord, sample: dict, where: str) -> dict[str, Any]:
    """The `MCEvaluation` row of one sample: option log-likelihoods, predictions (summed and per
    character, as lm-eval's acc and acc_norm) and whether they are correct."""
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list):
        raise ValueError(f"{where}: field 'filtered_resps' is missing or not a list")
    if len(resps) != len(rec.options):
        raise ValueError(
            f"{where}: {len(resps)} option log-likelihoods, but question {rec.id!r} has {len(rec.options)} options"
        )
    sums = np.array([_loglik(r, where) for r in resps])
    choices = _choices(_continuations(sample, len(resps)))
    _check_order(choices, rec, where)
    _check_target(sample.get("target"), rec, where, choices)
    # lm-eval's acc_norm divides by the length of the choice text, without the target delimiter
    lengths = [len(c) for c in choices] if choices else [len(o) for o in rec.options]
    chars = np.array([max(1, c) for c in lengths], dtype=float)
    row = question_row(label, rec, sums, tuple(0 for _ in sums), chars)  # lm-eval logs no token counts
    _check_logged_metrics(sample, row, rec, where)
    return row


def _check_logged_metrics(sample: dict, row: dict[str, Any], rec: QARecord, where: str) -> None:
    """lm-eval's own verdicts (the sample's `acc` and `acc_norm`, 0 or 1) must be specprobe's: a difference
    means that lm-eval scored another gold option, or divided by other lengths (a target delimiter other than
    " ", or no `arguments` to take the choices from). Only a second copy of the answer's text may differ:
    specprobe counts every copy as correct, lm-eval its gold one."""
    for metric, column, pred in (("acc", "correct", "pred"), ("acc_norm", "correct_norm", "pred_norm")):
        logged = sample.get(metric)
        if isinstance(logged, bool) or not isinstance(logged, (int, float)) or logged not in (0, 1):
            continue
        if bool(logged) == row[column] or (row[column] and len(row["answer_indices"]) > 1):
            continue
        raise ValueError(
            f"{where}: lm-eval logged {metric}={logged:g} but its log-likelihoods pick option "
            f"{LETTERS[row[pred]]}, which is {'' if row[column] else 'not '}the answer {rec.answer[:40]!r} of "
            f"question {rec.id!r}"
            + (" (lm-eval divided by other choice lengths)" if metric == "acc_norm" else " (lm-eval's gold differs)")
        )


def read_samples(
    path: str | os.PathLike, records: Sequence[QARecord], label: str, source: str = "the QA data"
) -> tuple[list[dict], dict]:
    """The `MCEvaluation` rows (model `label`) of one lm-eval samples jsonl, matched to `records`,
    and what was read ({"path", "n_samples", "filter", "task_hashes"})."""
    path = Path(path)
    matcher, rows, seen = _Matcher(records, source), [], {}
    chosen_filter = None
    for n, sample in iter_jsonl(path):
        filt = sample.get("filter", "none")
        chosen_filter = filt if chosen_filter is None else chosen_filter
        if filt != chosen_filter:  # lm-eval repeats every doc per filter; the first filter is read
            continue
        where = f"{path}: line {n} (doc_id {sample.get('doc_id')!r})"
        i = matcher.match(sample, where)
        if i in seen:
            raise ValueError(f"{where}: question {records[i].id!r} was already given on line {seen[i]}")
        seen[i] = n
        rows.append(_row(label, records[i], sample, where))
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows, {"path": str(path), "n_samples": len(rows), "filter": chosen_filter}


#: lm-eval's `--log_samples` files: `EvaluationTracker.save_results_samples` writes
#: `<output_path>/<sanitised model name>/samples_<task>_<date>.jsonl` (the date `2024-05-01T12-30-45.123456`);
#: `specprobe evaluate --lm-eval-out` writes `<DIR>/<model>/samples_specprobe_mc.jsonl`
SAMPLES_PATTERN = "samples_*.jsonl"
_LISTED = 10  # files named in an error; more are counted


def samples_file(path: str | os.PathLike) -> Path:
    """`path` itself, or for a folder (lm-eval's `--output_path`, or a model's folder in it) the one
    lm-eval samples file in it or below (`SAMPLES_PATTERN`). A folder with none, or with several (other
    tasks, other runs, other models), is an error naming the folder and listing what it found."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(p for p in path.rglob(SAMPLES_PATTERN) if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        results = sorted(p.relative_to(path).as_posix() for p in path.rglob("results*.json") if p.is_file())
        held = (
            f"it holds {', '.join(results[:_LISTED])}: lm-eval's scores without its samples (run lm_eval with "
            "--log_samples)"
            if results
            else "lm-eval writes <output_path>/<model>/samples_<task>_<date>.jsonl when run with --log_samples"
        )
        raise FileNotFoundError(f"lm-eval samples folder {path}: no samples_*.jsonl file in it or below; {held}")
    names = [p.relative_to(path).as_posix() for p in found]
    listed = ", ".join(names[:_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")
    raise ValueError(
        f"lm-eval samples folder {path}: {len(found)} samples files ({listed}); give the one to read "
        "(one file per model: [NAME=]PATH)"
    )


def parse_source(spec: str | os.PathLike) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH`, a PATH being a samples file or a folder holding one (`samples_file`); the
    default name is the folder lm-eval writes a model's samples to (its sanitised model name) for a
    `samples_*.jsonl` file, else the file's stem."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name.strip():
            return name.strip(), samples_file(path)
    path = samples_file(text)
    name = path.parent.name if path.name.startswith("samples_") and path.parent.name else path.stem
    return name or "lm-eval", path


def _sources(samples: Any) -> list[tuple[str, Path]]:
    if isinstance(samples, dict):
        items = [(str(k), samples_file(v)) for k, v in samples.items()]
    else:
        items = [parse_source(s) for s in ([samples] if isinstance(samples, (str, os.PathLike)) else samples)]
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two lm-eval sample files have the same model name {dup[0]!r}; name them NAME=PATH")
    for _, p in items:
        if not p.is_file():
            raise FileNotFoundError(f"lm-eval samples file not found: {p}")
    return items


def from_lm_eval(
    samples: str | os.PathLike | Sequence[str | os.PathLike] | dict[str, str | os.PathLike],
    data: str | os.PathLike | Sequence[QARecord],
    *,
    specialty: str | Sequence[str] | None = None,
    matrix: bool = False,
    mapping: dict | None = None,
) -> MCEvaluation | AccuracyMatrix:
    """Accuracy per specialty from lm-eval `--log_samples` files, matched to the questions of `data`.

    `samples`: one file, several, or {model name: file} (a file may be given as "NAME=PATH"; see
    `parse_source` for the default name); a folder stands for the one samples file in it or below
    (`samples_file`: lm-eval's `--output_path`). `matrix=True`: an `AccuracyMatrix` (a model named "base" is
    the base; a model named after a specialty of `data` counts as trained on it, for `contrast()`).
    `mapping`: how to read a QA file the loader cannot read alone (`load_qa`); recorded in metadata["data"].
    """
    records, data_meta = load_records(data, mapping)
    source = data_meta.get("path") or "the QA data"
    check_unique_ids(records, str(source))  # rows are kept by id below
    rows: list[dict] = []
    read: dict[str, dict] = {}
    for name, path in _sources(samples):
        got, info = read_samples(path, records, name, source)
        rows += got
        read[name] = info
    kept = {r.id for r in select(records, specialty, str(source))}
    frame = pd.DataFrame([r for r in rows if r["item_id"] in kept], columns=MCEvaluation.columns)
    for name, info in read.items():
        info["n_unmatched_questions"] = len(kept) - int((frame["model"] == name).sum())
        if info["n_unmatched_questions"]:
            log.warning("%s: %d of %d questions have no sample", info["path"], info["n_unmatched_questions"], len(kept))
    meta = {"data": data_meta, "specialty": specialty, "lm_eval": read, "variants": list(read)}
    if not matrix:
        return MCEvaluation(frame, meta)
    trained_on = _trained_on(
        [m for m in read if m != BASE], {s for r in records for s in specialties_of(r.specialties)}
    )
    meta["adapters"] = {m: {"path": read[m]["path"], "trained_on": t} for m, t in trained_on.items()}
    return from_items(frame, trained_on, meta)


def _trained_on(models: Sequence[str], spec_names: set[str]) -> dict[str, str | None]:
    """The specialty each model is named after (exactly, else the one specialty equal to it case-insensitively:
    a folder "cardiology" for "Cardiology"), else None, with a warning: that model is then no specialty's
    own adapter in `contrast()`, and the own-specialty test leaves its specialty out."""
    folded: dict[str, list[str]] = {}
    for s in spec_names:
        folded.setdefault(s.casefold(), []).append(s)
    out: dict[str, str | None] = {}
    for m in models:
        same = folded.get(m.casefold(), [])
        out[m] = m if m in spec_names else same[0] if len(same) == 1 else None
        if out[m] is None:
            shown = ", ".join(sorted(spec_names)[:8]) + (", ..." if len(spec_names) > 8 else "")
            log.warning(
                "lm-eval model %r is named after no specialty of the QA data (%s): it counts as trained on none; "
                "name it NAME=PATH after the specialty it was trained on",
                m,
                shown,
            )
    return out
