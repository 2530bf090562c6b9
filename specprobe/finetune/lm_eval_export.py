"""Writing a multiple-choice evaluation in lm-evaluation-harness's file formats.

Two files, as `lm_eval --output_path DIR --log_samples` writes them:

* ``results.json``: ``results`` ({task: {"acc,none", "acc_stderr,none", "acc_norm,none", ...}}), with
  one subtask per specialty grouped under the overall task (``groups``, ``group_subtasks``),
  ``configs``, ``versions``, ``n-shot``, ``higher_is_better`` and ``n-samples``, so that tools that
  read lm-eval's results (leaderboards, its own table printer) read specprobe's;
* ``samples_<task>.jsonl``: one line per question with lm-eval's fields (``doc_id``, ``doc``,
  ``target``, ``arguments`` as ``{"gen_args_i": {"arg_0": context, "arg_1": continuation}}``,
  ``resps``, ``filtered_resps`` as ``[loglik, is_greedy]`` strings, ``filter``, ``metrics``, the
  hashes, ``acc``, ``acc_norm``). `specprobe evaluate --from-lm-eval` reads such a file back.

These functions take the evaluation's table and metadata (not the class), so that `evaluation.py`
can call them without an import cycle. The overall task is specprobe's "ALL": each question once,
whatever its number of specialties (a question of two specialties is in both subtasks).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd

from specprobe.finetune.data import check_unique_ids, explode_specialties, load_records
from specprobe.finetune.prompts import LETTERS, PromptFormat
from specprobe.terms.datasets import QARecord
from specprobe.utils.io import atomic_write_text, sha256_text, write_json
from specprobe.utils.provenance import now_iso

TASK = "specprobe_mc"
FILTER = "none"
METRICS = ("acc", "acc_norm")
_COLUMN = {"acc": "correct", "acc_norm": "correct_norm"}


def subtask_name(specialty: str, task: str = TASK) -> str:
    """The lm-eval task name of one specialty: `<task>_<specialty in lower snake case>`."""
    slug = re.sub(r"[^0-9a-z]+", "_", specialty.lower()).strip("_") or "none"
    return f"{task}_{slug}"


def subtask_names(specialties: Sequence[str], task: str = TASK) -> dict[str, str]:
    """{specialty: its lm-eval task name}, one name per specialty: specialties whose `subtask_name` is
    the same ("Ob/Gyn" and "Ob-Gyn"; "内科" and "外科", both "none") get a hash of their name appended,
    else one subtask's results would replace the other's."""
    plain = {s: subtask_name(s, task) for s in specialties}
    taken = list(plain.values())
    return {s: name if taken.count(name) == 1 else f"{name}_{sha256_text(s)[:8]}" for s, name in plain.items()}


def pick_model(frame: pd.DataFrame, model: str | None) -> pd.DataFrame:
    """The rows of `model`; None is allowed when the evaluation holds one model only."""
    models = list(dict.fromkeys(frame["model"]))
    if model is None:
        if len(models) != 1:
            raise ValueError(f"the evaluation holds several models {models}; pass model= to choose one")
        model = models[0]
    if model not in models:
        raise ValueError(f"model {model!r} is not in the evaluation; it holds {models}")
    return cast(pd.DataFrame, frame[frame["model"] == model])


def stderr_of_mean(values: Sequence[float]) -> float | str:
    """lm-eval's `mean_stderr`: the sample standard deviation (n - 1) over sqrt(n); "N/A" below 2 values."""
    n = len(values)
    if n < 2:
        return "N/A"
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def _metrics(rows: pd.DataFrame, alias: str) -> dict[str, Any]:
    out: dict[str, Any] = {"alias": alias}
    for metric in METRICS:
        values = [float(v) for v in rows[_COLUMN[metric]]]
        out[f"{metric},{FILTER}"] = sum(values) / len(values) if values else "N/A"
        out[f"{metric}_stderr,{FILTER}"] = stderr_of_mean(values)
    return out


def _config(task: str, meta: dict, group: str | None) -> dict[str, Any]:
    prompt = meta.get("prompt") or {}
    cfg: dict[str, Any] = {
        "task": task,
        "output_type": "multiple_choice",
        "num_fewshot": 0,
        "target_delimiter": prompt.get("delimiter", " "),
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS],
        "metadata": {"version": 1.0, "source": "specprobe", "prompt": prompt},
    }
    if group:
        cfg["tag"] = group
    return cfg


def results_payload(frame: pd.DataFrame, meta: dict, model: str | None = None, task: str = TASK) -> dict:
    """lm-eval's results.json content for one model of an evaluation (see the module docstring)."""
    rows = pick_model(frame, model)
    label = str(rows["model"].iloc[0]) if len(rows) else str(model)
    by_spec = {str(s): g for s, g in explode_specialties(rows).groupby("specialty", sort=True)}
    names = subtask_names(list(by_spec), task)
    subtasks = {names[s]: g for s, g in by_spec.items()}
    results = {task: _metrics(rows, task)}
    results.update({name: _metrics(g, f" - {name}") for name, g in subtasks.items()})
    every = [task, *subtasks]
    return {
        "results": results,
        "groups": {task: results[task]},
        "group_subtasks": {task: list(subtasks)},
        "configs": {name: _config(name, meta, task if name != task else None) for name in every},
        "versions": {name: 1.0 for name in every},
        "n-shot": {name: 0 for name in every},
        "higher_is_better": {name: {m: True for m in METRICS} for name in every},
        "n-samples": {name: {"original": len(g), "effective": len(g)} for name, g in [(task, rows), *subtasks.items()]},
        "config": {"model": "specprobe", "model_args": label, "batch_size": meta.get("batch_size")},
        "model_name": label,
        "specialties": {name: s for s, name in names.items()},
        "date": now_iso(),
        "specprobe": {"kind": "mc_evaluation", "data": meta.get("data"), "max_length": meta.get("max_length")},
    }


def write_results(frame: pd.DataFrame, meta: dict, path: str | os.PathLike, model: str | None = None) -> Path:
    """Write lm-eval's results.json for one model of the evaluation (atomically)."""
    return write_json(path, results_payload(frame, meta, model))


def _records_for(
    meta: dict, data: str | os.PathLike | Sequence[QARecord] | None, mapping: dict | None = None
) -> list[QARecord]:
    """The evaluated questions: `data`, else the QA file the evaluation recorded in its metadata; a file
    read with `mapping`, else with the mapping recorded beside it (the file evaluated was read so)."""
    recorded = meta.get("data") or {}
    if data is None:
        data = recorded.get("path")
        if not data:
            raise ValueError("the evaluation records no QA file path; pass data= (the QA file or records)")
    if isinstance(data, (str, os.PathLike)) and mapping is None:
        mapping = recorded.get("mapping")
    records, data_meta = load_records(data, mapping)
    # both files (a file's sha256 is not its records' digest): an edited question would sit beside the old scores
    files = bool(recorded.get("path")) and bool(data_meta.get("path"))
    want, have = recorded.get("sha256"), data_meta.get("sha256")
    if files and want and have and want != have:
        raise ValueError(
            f"{data_meta.get('path') or 'the QA data'} changed since the evaluation (sha256 {have[:12]}..., the "
            f"evaluation read {want[:12]}...); pass the QA file that was evaluated"
        )
    check_unique_ids(records, str(data_meta.get("path") or "the QA data"))  # a doc_id is found by the row's id
    return records


def sample_line(doc_id: int, rec: QARecord, row: Any, fmt: PromptFormat) -> dict[str, Any]:
    """One lm-eval sample (as `--log_samples` writes it) for the question `rec` and its scored `row`."""
    context, conts = fmt.prompt(rec), fmt.continuations(rec)
    logps = [float(x) for x in row["option_logp"]]
    _check_row(doc_id, rec, row, fmt, conts)
    greedy = [False] * len(logps)  # specprobe does not record whether an option is the greedy decoding
    doc = {
        "id": rec.id,
        "question": rec.question,
        "options": list(rec.options),
        "answer": rec.answer,
        "specialties": list(rec.specialties),
    }
    target = str(rec.answer_index)
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": target,
        "arguments": {f"gen_args_{i}": {"arg_0": context, "arg_1": c} for i, c in enumerate(conts)},
        "resps": [[[repr(lp), str(g)]] for lp, g in zip(logps, greedy)],
        "filtered_resps": [[repr(lp), str(g)] for lp, g in zip(logps, greedy)],
        "filter": FILTER,
        "metrics": list(METRICS),
        "doc_hash": sha256_text(json.dumps(doc, indent=2, ensure_ascii=False)),
        "prompt_hash": sha256_text(context),
        "target_hash": sha256_text(target),
        "acc": float(bool(row["correct"])),
        "acc_norm": float(bool(row["correct_norm"])),
    }


def _check_row(doc_id: int, rec: QARecord, row: Any, fmt: PromptFormat, conts: list[str]) -> None:
    """The scored row must be this question's, scored with these continuations: the same options and
    answer, and the option lengths acc_norm divided by (an evaluation read from lm-eval files records no
    prompt format, and the default one's letters may not be what lm-eval scored)."""
    where = f"question {rec.id!r} (doc_id {doc_id})"
    if len(row["option_logp"]) != len(rec.options) or int(row["answer_index"]) != rec.answer_index:
        raise ValueError(
            f"{where}: the evaluation scored {len(row['option_logp'])} options with answer "
            f"{LETTERS[int(row['answer_index'])]}, the QA data has {len(rec.options)} with answer "
            f"{LETTERS[rec.answer_index]}; pass the QA file that was evaluated"
        )
    chars = tuple(max(1, len(c[len(fmt.delimiter) :] if c.startswith(fmt.delimiter) else c)) for c in conts)
    scored = row.get("option_n_chars")
    if scored is not None and tuple(int(c) for c in scored) != chars:
        raise ValueError(
            f"{where}: the evaluation's option lengths {list(scored)} are not those of the continuations "
            f"{conts!r} of its prompt format ({chars}): it was scored with others (read from lm-eval files?)"
        )


def write_samples(
    frame: pd.DataFrame,
    meta: dict,
    path: str | os.PathLike,
    model: str | None = None,
    data: str | os.PathLike | Sequence[QARecord] | None = None,
    mapping: dict | None = None,
) -> Path:
    """Write lm-eval's samples jsonl for one model; `doc_id` is the question's index in `data` (the
    QA file evaluated, by default the one recorded in the metadata, read with `mapping`, by default the
    one recorded with it)."""
    rows = pick_model(frame, model)
    records = _records_for(meta, data, mapping)
    index = {r.id: i for i, r in enumerate(records)}
    fmt = PromptFormat.from_dict(meta.get("prompt"))
    lines = []
    for _, row in rows.iterrows():
        item = str(row["item_id"])
        if item not in index:
            raise ValueError(f"question {item!r} of the evaluation is not in the QA data given")
        lines.append(json.dumps(sample_line(index[item], records[index[item]], row, fmt), ensure_ascii=False))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
