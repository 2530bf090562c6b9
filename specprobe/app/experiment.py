"""The whole study in one call: data -> lexicon -> one LoRA adapter per specialty -> accuracy matrix ->
compare matrix -> report. Each stage is cached by a hash of its inputs (see `stages`).

Every stage is a plain function of its declared inputs (configuration values and the paths that
earlier stages returned) and returns its own output path, so stages can also run as independent
tasks. `plan_steps` declares which stage reads which outputs; `run_experiment` hands that plan to an
executor (`executors`: in order in this process, or as Ray tasks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd

from specprobe.app.config import ConfigError, ExperimentConfig, builtin_model, builtin_questions
from specprobe.app.executors_base import Executor, LocalExecutor, Step
from specprobe.app.experiment_result import ExperimentResult
from specprobe.app.stages import DONE, run_stage, stage_folder
from specprobe.core.models import weights_fingerprint
from specprobe.terms.datasets import QARecord, load_qa
from specprobe.utils.interrupts import SignalInterrupt
from specprobe.utils.io import atomic_write_text, read_json, sha256_file, sha256_text
from specprobe.utils.locks import output_lock

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "ConfigError",
    "run_experiment",
    "builtin_model",
    "builtin_questions",
    "split_stage",
    "lexicon_stage",
    "adapter_stage",
    "accuracy_stage",
    "probe_stage",
    "summary_stage",
    "accuracy_part_stage",
    "accuracy_merge_stage",
    "report_stage",
    "seen_unseen_stage",
    "accuracy_link_stage",
    "trajectory_stage",
    "general_text_stage",
    "plan_steps",
    "prepare_run",
    "RunInputs",
    "split_key",
    "adapter_key",
    "accuracy_key",
    "PairCache",
    "split_records",
    "interleave_by_specialty",
    "check_specialties",
    "probe_texts",
    "compare_matrix",
    "RunInterrupted",
    "adapter_hash",
    "slug",
]

Say = Callable[[str], None]
ALL_SPECIALTIES = "All specialties"  # the name of the adapter trained on every specialty
TRAIN_FILE, TEST_FILE = "train.json", "test.json"
LEXICON_FILE, ACCURACY_FILE, ADAPTER_DIR = "lexicon.json", "accuracy.json", "adapter"
PROBE_FILES = {"compare": "comparison.json.gz", "layers": "layers.json.gz"}  # probe kind -> its result file
#: analysis -> its result file (issue 12's analyses, one stage per adapter but accuracy_link: one in all)
ANALYSIS_FILES = {
    "seen_unseen": "seen_unseen.json.gz",
    "accuracy_link": "accuracy_link.json.gz",
    "trajectory": "trajectory.json.gz",
    "general_text": "general_text.json.gz",
}
#: the accuracy link's stage (an underscore: no adapter's `accuracy-<slug>` part can be named so)
ACCURACY_LINK = "accuracy_link"
#: the [compare] options the general-text control takes (it finds no terms, so no controls or template)
GENERAL_TEXT_OPTIONS = ("add_bos", "max_length", "batch_size", "device", "dtype")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what identifies an adapter in the keys below
SLUG_MAX = 60  # longer slugs are cut, and a short hash of the full name appended

# The source each stage runs, hashed into its key (see `stages.code_fingerprint`): an upgrade that changes
# what a stage computes reruns it and everything downstream.
SPLIT_CODE = ("app/experiment.py", "terms", "utils")
LEXICON_CODE = ("terms", "utils")
ADAPTER_CODE = ("finetune", "core", "terms", "utils")
ACCURACY_CODE = ADAPTER_CODE
PROBE_CODE = ("app/experiment.py", "probe", "core", "terms", "utils")
ANALYSIS_CODE = PROBE_CODE
ACCURACY_LINK_CODE = (*PROBE_CODE, "finetune")  # it reads an AccuracyMatrix


class RunInterrupted(SignalInterrupt):
    """`run_experiment` was stopped by SIGINT or SIGTERM outside training (training raises its own
    `TrainingInterrupted`). Finished stages are kept; running the same command again resumes.

    `signum` is the signal, `exit_code` 128 + signum (130 for SIGINT, 143 for SIGTERM).
    """

    @property
    def message(self) -> str:
        return f"stopped after {self.signal_name}; finished stages are kept; rerun the same command to resume"

    def __reduce__(self):
        return type(self), (self.signum,)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `RunInterrupted` while inside (main thread only; the old handlers come
    back on exit). Training installs its own handlers for its duration, to checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum)

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# -- helpers -------------------------------------------------------------------------------------------
def split_records(records: list[QARecord], test_fraction: float, seed: int) -> tuple[list[QARecord], list[QARecord]]:
    """A deterministic per-specialty train/test split (by a seeded hash of the record id)."""
    by_spec: dict[tuple, list[QARecord]] = {}
    for r in records:
        by_spec.setdefault(r.specialties, []).append(r)
    train, test = [], []
    for group in by_spec.values():
        group = sorted(group, key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())
        k = max(1, round(len(group) * test_fraction))
        test += group[:k]
        train += group[k:]
    return train, test


def interleave_by_specialty(records: list[QARecord]) -> list[QARecord]:
    """Round-robin over specialties, so that any prefix covers every specialty evenly."""
    groups: dict[tuple, list[QARecord]] = {}
    for r in records:
        groups.setdefault(r.specialties, []).append(r)
    out, queues = [], [list(g) for _, g in sorted(groups.items())]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def write_smedqa(path: Path, records: list[QARecord]) -> None:
    """Write records as an S-MedQA JSON file (one specialty as a string, several as a list)."""
    rows = [
        {
            "id": r.id,
            "Question": r.question,
            "Specialty": list(r.specialties) if len(r.specialties) != 1 else r.specialties[0],
            "Options": list(r.options),
            "Answer": r.answer,
        }
        for r in records
    ]
    atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1))


def slug(name: str) -> str:
    """A file-name-safe lower-case form of a name ("Infectious Diseases" -> "infectious-diseases").

    At most `SLUG_MAX` characters and ASCII only: a longer or non-ASCII name is cut and given a short hash
    of the full name, so that distinct names stay distinct and no file name is too long.
    """
    text = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in name.lower()).strip("-")
    if (
        text
        and len(text) <= SLUG_MAX
        and text == "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    ):
        return text
    short = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{text[:SLUG_MAX].rstrip('-')}-{short}".lstrip("-")


def adapter_hash(adapter: str | Path) -> str:
    """The content identity of an adapter directory: sha256 over its weights file and its config in a
    canonical form (peft writes `target_modules` from a set, in an order that changes with the
    process's hash seed, so the raw file bytes are not an identity)."""
    h = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = Path(adapter) / name
        if not path.is_file():
            digest = "-"
        elif name.endswith(".json"):
            digest = sha256_text(_canonical_config(path))
        else:
            digest = sha256_file(path)
        h.update(name.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def lexicon_identity(path: str | Path) -> str:
    """The content identity of a lexicon file: its terms and assignment metadata, without what changes
    from build to build of the same lexicon (creation time, timings, the paths of its sources)."""
    doc = read_json(path)
    meta = {
        k: v for k, v in doc.get("meta", {}).items() if k not in ("created", "timings_s", "sources", "specialty_map")
    }
    sources = [{k: v for k, v in src.items() if k != "path"} for src in doc.get("meta", {}).get("sources", [])]
    specialty_map = {k: v for k, v in (doc.get("meta", {}).get("specialty_map") or {}).items() if k != "path"}
    canonical = {**doc, "meta": {**meta, "sources": sources, "specialty_map": specialty_map}}
    return sha256_text(json.dumps(canonical, sort_keys=True))


def _canonical_config(path: Path) -> str:
    """An adapter config as sorted JSON, with set-valued fields (target_modules) sorted."""
    config = read_json(path)
    if isinstance(config, dict) and isinstance(config.get("target_modules"), list):
        config = {**config, "target_modules": sorted(config["target_modules"])}
    return json.dumps(config, sort_keys=True)


def probe_texts(test_path: str | Path, max_texts: int | None) -> list:
    """The texts the probe stages score: the test questions interleaved by specialty, capped at `max_texts`."""
    return [r.as_text_record() for r in interleave_by_specialty(load_qa(test_path))][:max_texts]


def texts_hash(texts: Sequence) -> str:
    """The identity of a list of texts in the stage keys (a hash of their ids, in order)."""
    return hashlib.sha256("\n".join(t.id for t in texts).encode()).hexdigest()


def check_specialties(train_path: str | Path, wanted: Sequence[str] | None, data: str) -> list[str]:
    """The specialties to fine-tune on: `wanted`, or all with training questions; an unknown one is an error."""
    available = sorted({s for r in load_qa(train_path) for s in r.specialties})
    specialties = list(wanted or available)
    unknown = [s for s in specialties if s not in available]
    if unknown:
        raise ValueError(f"specialties {unknown} have no questions in {data}; available: {available}")
    return specialties


def adapter_targets(specialties: Sequence[str], include_all: bool) -> list[tuple[str, str | None]]:
    """(adapter name, specialty filter) per adapter: one per specialty, plus one on all data (filter None)."""
    if include_all and ALL_SPECIALTIES in specialties:
        raise ValueError(
            f"a specialty is named {ALL_SPECIALTIES!r}, the name of the adapter trained on all the data; "
            "rename that specialty in the data, or set include_all = false"
        )
    targets: list[tuple[str, str | None]] = [(s, s) for s in specialties]
    return targets + ([(ALL_SPECIALTIES, None)] if include_all else [])


def compare_matrix(comparisons: Mapping[str, Any], metric: str = "delta_per_token") -> pd.DataFrame:
    """Fine-tuning specialty x term specialty: mean delta with CI, and its difference from control words."""
    frames = []
    for name, comp in comparisons.items():
        table = comp.by_specialty(metric)
        table.insert(0, "finetune_specialty", name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class PairCache:
    """Models loaded for the probe stages of one process: the base loads once, each adapter joins it."""

    def __init__(self, base: str):
        self.base = base
        self._pairs: dict[str, Any] = {}

    def get(self, adapter: str | Path) -> Any:
        """The `ModelPair` of the base and `adapter` (loading the base only the first time)."""
        from specprobe.core.models import ModelPair

        key = str(adapter)
        if key not in self._pairs:
            first = next(iter(self._pairs.values()), None)
            self._pairs[key] = first.with_adapter(key) if first is not None else ModelPair.load(self.base, key)
        return self._pairs[key]


# -- the stages: each a function of its declared inputs, returning its output path ------------------
def split_stage(root: Path, data: str, data_hash: str, test_fraction: float, seed: int, *, say: Say = print) -> Path:
    """Stage 1, the train/test split of `data`; returns the folder holding train.json and test.json."""

    def produce(folder: Path) -> None:
        train, test = split_records(load_qa(data), test_fraction, seed)
        write_smedqa(folder / TRAIN_FILE, train)
        write_smedqa(folder / TEST_FILE, test)

    return run_stage(root, "split", split_key(data_hash, test_fraction, seed), produce, code=SPLIT_CODE, say=say)


def split_key(data_hash: str, test_fraction: float, seed: int) -> dict:
    """The split stage's inputs; the stages downstream include it in their own keys."""
    return {"data": data_hash, "test_fraction": test_fraction, "seed": seed}


def lexicon_stage(root: Path, split: dict, test_path: Path, *, progress: bool = True, say: Say = print) -> Path:
    """Stage 2, the lexicon built from the test questions (the texts the probes score); returns lexicon.json."""
    from specprobe.terms.build import build_lexicon

    folder = run_stage(
        root,
        "lexicon",
        {"split": split, "test": sha256_file(test_path)},
        lambda f: build_lexicon(test_path, progress=progress).save(f / LEXICON_FILE),
        code=LEXICON_CODE,
        say=say,
    )
    return folder / LEXICON_FILE


def adapter_stage(
    root: Path,
    name: str,
    specialty: str | None,
    base: str,
    base_hash: str,
    split: dict,
    train_path: Path,
    train: dict,
    *,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """Stage 3, one LoRA adapter trained on `specialty` (None: all) of the training split; returns its directory."""
    from specprobe import finetune

    folder = run_stage(
        root,
        f"adapter-{slug(name)}",
        adapter_key(base_hash, split, train_path, specialty, train),
        lambda f: finetune.train(
            base, train_path, specialty=specialty, out=f / ADAPTER_DIR, progress=progress, overwrite=False, **train
        ),
        code=ADAPTER_CODE,
        say=say,
    )
    return folder / ADAPTER_DIR


def adapter_key(base_hash: str, split: dict, train_path: Path, specialty: str | None, train: dict) -> dict:
    """The adapter stage's inputs: the base, the split, the training data, the specialty, the training options."""
    return {
        "base": base_hash,
        "split": split,
        "train_data": sha256_file(train_path),
        "specialty": specialty,
        "train": train,
    }


def accuracy_key(base_hash: str, split: dict, adapters: Mapping[str, str], train: dict, test_path: Path) -> dict:
    """The accuracy stage's inputs: the base, the split, every adapter's content, the training options."""
    return {
        "base": base_hash,
        "split": split,
        "test": sha256_file(test_path),
        "adapters": {name: adapter_hash(path) for name, path in adapters.items()},
        "train": train,
    }


def accuracy_stage(
    root: Path,
    base: str,
    base_hash: str,
    split: dict,
    adapters: Mapping[str, str],
    train: dict,
    test_path: Path,
    *,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """Stage 4, the accuracy of the base and every adapter on every test specialty; returns accuracy.json."""
    from specprobe import finetune

    folder = run_stage(
        root,
        "accuracy",
        accuracy_key(base_hash, split, adapters, train, test_path),
        lambda f: finetune.matrix(base, dict(adapters), test_path, progress=progress).save(f / ACCURACY_FILE),
        code=ACCURACY_CODE,
        say=say,
    )
    return folder / ACCURACY_FILE


def accuracy_part_stage(
    root: Path,
    name: str,
    adapter: str,
    base: str,
    base_hash: str,
    split: dict,
    train: dict,
    test_path: Path,
    *,
    with_base: bool,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """Stage 4 in parts (remote executors): the accuracy of one adapter (and of the base, for the first
    adapter) on every test specialty; `accuracy_merge_stage` joins the parts. Returns its accuracy.json."""
    from specprobe import finetune

    key = {
        "base": base_hash,
        "split": split,
        "test": sha256_file(test_path),
        "name": name,
        "adapter": adapter_hash(adapter),
        "train": train,
        "with_base": with_base,
    }
    folder = run_stage(
        root,
        f"accuracy-{slug(name)}",
        key,
        lambda f: finetune.matrix(base, {name: adapter}, test_path, include_base=with_base, progress=progress).save(
            f / ACCURACY_FILE
        ),
        code=ACCURACY_CODE,
        say=say,
    )
    return folder / ACCURACY_FILE


def accuracy_merge_stage(
    root: Path,
    base_hash: str,
    split: dict,
    adapters: Mapping[str, str],
    train: dict,
    test_path: Path,
    parts: Mapping[str, str],
    *,
    say: Say = print,
) -> Path:
    """Stage 4's parts merged (`accuracy_parts.merge_matrices`) into the accuracy stage's own folder and
    file, the same that `accuracy_stage` writes; returns accuracy.json."""
    from specprobe.app.accuracy_parts import merge_matrices
    from specprobe.finetune import AccuracyMatrix

    def produce(folder: Path) -> None:
        merged = merge_matrices([AccuracyMatrix.load(parts[name]) for name in adapters])
        merged.save(folder / ACCURACY_FILE)

    key = accuracy_key(base_hash, split, adapters, train, test_path)
    return run_stage(root, "accuracy", key, produce, code=ACCURACY_CODE, say=say) / ACCURACY_FILE


def probe_stage(
    root: Path,
    kind: str,
    name: str,
    adapter: str,
    base: str,
    base_hash: str,
    train: dict,
    lexicon_path: Path,
    test_path: Path,
    max_texts: int | None,
    compare: dict,
    seed: int,
    *,
    pairs: PairCache | None = None,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """Stages 5 and 6, `compare` or `layers` (`kind`) of one adapter against the base on the test texts.

    Returns the result file. `pairs` shares loaded models between the probe stages of one process.
    """
    if pairs is None:
        pairs = PairCache(base)
    elif pairs.base != base:
        raise ValueError(f"the model cache holds base {pairs.base!r}, not {base!r}")
    texts = probe_texts(test_path, max_texts)
    key = {
        "base": base_hash,
        "adapter": adapter_hash(adapter),
        "train": train,
        "lexicon": lexicon_identity(lexicon_path),
        "compare": compare,
        "test": sha256_file(test_path),
        "texts": texts_hash(texts),
        "seed": seed,
    }
    filename = PROBE_FILES[kind]

    def produce(folder: Path) -> None:
        from specprobe.terms.lexicon import Lexicon

        probe = _probe_function(kind)
        result = probe(
            pairs.get(adapter), terms=Lexicon.load(lexicon_path), texts=texts, progress=progress, seed=seed, **compare
        )
        result.save(folder / filename)

    return run_stage(root, f"{kind}-{slug(name)}", key, produce, code=PROBE_CODE, say=say) / filename


def _probe_function(kind: str) -> Callable:
    """The probe a probe stage runs: `compare` or `layers`."""
    if kind == "compare":
        from specprobe.probe import compare

        return compare
    from specprobe.probe.layers import layers

    return layers


# -- issue 12's analyses: each a stage of its own, beside the probe stages ----------------------------
def seen_unseen_stage(
    root: Path, name: str, adapter: str, train_path: Path, comparison: str | Path, *, say: Say = print
) -> Path:
    """Seen vs unseen terms of one adapter (no forward pass): its compare stage's Comparison, grouped by
    what the adapter saw in the training split (`train_path`, checked against the adapter's manifest)."""
    from specprobe.probe.analyses import seen_unseen_files

    key = {
        "comparison": stage_of(comparison),
        "adapter": adapter_hash(adapter),
        "train_data": sha256_file(train_path),
    }
    filename = ANALYSIS_FILES["seen_unseen"]

    def produce(folder: Path) -> None:
        seen_unseen_files(comparison, adapter, folder / filename, train_data=train_path, name=name)

    return (
        run_stage(root, f"seen-unseen-{slug(name)}", key | {"name": name}, produce, code=ANALYSIS_CODE, say=say)
        / filename
    )


def accuracy_link_stage(
    root: Path, accuracy: str | Path, comparisons: Mapping[str, str | Path], *, say: Say = print
) -> Path:
    """The accuracy link over every adapter: per question, its term delta (the compare stages) against
    its accuracy and answer-margin change (the accuracy stage's per-question records)."""
    import specprobe.finetune  # noqa: F401  (registers the accuracy_matrix result kind for Result.load)
    from specprobe.probe.analyses import accuracy_link_files

    key = {"accuracy": stage_of(accuracy), "comparisons": {n: stage_of(p) for n, p in comparisons.items()}}
    filename = ANALYSIS_FILES["accuracy_link"]

    def produce(folder: Path) -> None:
        accuracy_link_files(accuracy, dict(comparisons), folder / filename)

    return run_stage(root, ACCURACY_LINK, key, produce, code=ACCURACY_LINK_CODE, say=say) / filename


def trajectory_stage(
    root: Path,
    name: str,
    specialty: str | None,
    adapter: str,
    base: str,
    base_hash: str,
    train: dict,
    lexicon_path: Path,
    test_path: Path,
    max_texts: int | None,
    compare: dict,
    seed: int,
    *,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """The trajectory of one adapter: its snapshots (train.save_steps) and final adapter against the base,
    on the lexicon and test texts of its compare stage, with the same options."""
    texts = probe_texts(test_path, max_texts)
    key = {
        "base": base_hash,
        "adapter": adapter_hash(adapter),
        "snapshots": _snapshot_hashes(adapter),
        "train": train,
        "specialty": specialty,
        "lexicon": lexicon_identity(lexicon_path),
        "compare": compare,
        "test": sha256_file(test_path),
        "texts": texts_hash(texts),
        "seed": seed,
    }
    filename = ANALYSIS_FILES["trajectory"]

    def produce(folder: Path) -> None:
        from specprobe.probe.analyses import trajectory
        from specprobe.probe.options import ProbeOptions
        from specprobe.terms.lexicon import Lexicon

        options = ProbeOptions(**compare, seed=seed, progress=progress)
        result = trajectory(
            base, Path(adapter), Lexicon.load(lexicon_path), texts, specialty=specialty, name=name, options=options
        )
        result.save(folder / filename)

    return run_stage(root, f"trajectory-{slug(name)}", key, produce, code=ANALYSIS_CODE, say=say) / filename


def stage_of(path: str | Path) -> str:
    """The identity of a stage's result file in a later stage's key: the folder name of the stage that
    wrote it, a hash of that stage's inputs and code (`stages.stage_key`). Not the file's bytes: those
    hold time stamps, and differ between runs and executors of the same stage."""
    return Path(path).parent.name


def _snapshot_hashes(adapter: str | Path) -> list:
    """(step, weights sha256) of the snapshots an adapter's manifest lists (the trajectory's inputs)."""
    from specprobe.probe.analyses import read_checkpoints

    return [[c.step, c.sha256] for c in read_checkpoints(Path(adapter)).points]


def general_text_stage(
    root: Path,
    name: str,
    adapter: str,
    base: str,
    base_hash: str,
    compare: dict,
    *,
    pairs: PairCache | None = None,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """The general-text control of one adapter: the shift it gives the shipped general-English texts,
    scored with the [compare] options that apply (`GENERAL_TEXT_OPTIONS`)."""
    from specprobe.probe.analyses.general_text import DEFAULT_TEXTS, default_texts, general_text_control

    options = {k: v for k, v in compare.items() if k in GENERAL_TEXT_OPTIONS}
    texts = default_texts()
    ids = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()
    key = {"base": base_hash, "adapter": adapter_hash(adapter), "options": options, "texts": [DEFAULT_TEXTS, ids]}
    filename = ANALYSIS_FILES["general_text"]

    def produce(folder: Path) -> None:
        run = {k: v for k, v in options.items() if k not in ("device", "dtype")}
        if pairs is not None:
            result = general_text_control(pairs.get(adapter), None, progress=progress, **run)
        else:
            load = {k: v for k, v in options.items() if k in ("device", "dtype")}
            result = general_text_control(base, None, tuned=adapter, progress=progress, **run, **load)
        result.save(folder / filename)

    return run_stage(root, f"general-text-{slug(name)}", key, produce, code=ANALYSIS_CODE, say=say) / filename


def summary_stage(root: Path, config: dict, paths: dict) -> ExperimentResult:
    """The last step (not cached): compare_matrix.csv, accuracy_matrix.csv and experiment.json from the stages' files."""
    from specprobe.finetune import AccuracyMatrix
    from specprobe.probe.comparison import Comparison

    comparisons = {n: Comparison.load(p) for n, p in paths["comparisons"].items()}
    accuracy = AccuracyMatrix.load(paths["accuracy"])
    matrix = compare_matrix(comparisons)
    atomic_write_text(root / "compare_matrix.csv", matrix.to_csv(index=False))
    atomic_write_text(root / "accuracy_matrix.csv", accuracy.to_pandas().to_csv(index=False))
    result = ExperimentResult(matrix, {"config": config, "root": str(root)}, {"paths": paths})
    result._cache.update({"accuracy": accuracy, "comparisons": comparisons})
    result.save(root / "experiment.json")
    return result


def report_stage(
    root: Path,
    config: dict,
    lexicon: str | Path,
    accuracy: str | Path,
    adapters: Mapping[str, str | Path],
    comparisons: Mapping[str, str | Path],
    layers: Mapping[str, str | Path],
    seen_unseen: Mapping[str, str | Path] | None = None,
    accuracy_link: str | Path | None = None,
    trajectory: Mapping[str, str | Path] | None = None,
    general_text: Mapping[str, str | Path] | None = None,
) -> Path:
    """The last step, from the stages' files: `summary_stage`'s CSVs and experiment.json; returns experiment.json.

    The analyses' files (those run) are recorded beside the others, under the names the report reads
    (`report.OPTIONAL`): per adapter for seen_unseen, trajectory and general_text, one accuracy_link."""
    paths: dict[str, Any] = {
        "lexicon": str(lexicon),
        "accuracy": str(accuracy),
        "adapters": {name: str(p) for name, p in adapters.items()},
        "comparisons": {name: str(p) for name, p in comparisons.items()},
        "layers": {name: str(p) for name, p in layers.items()},
    }
    for key, named in (("seen_unseen", seen_unseen), ("trajectory", trajectory), ("general_text", general_text)):
        if named:
            paths[key] = {name: str(p) for name, p in named.items()}
    if accuracy_link is not None:
        paths["accuracy_link"] = str(accuracy_link)
    summary_stage(root, config, paths)
    return root / "experiment.json"


# -- the stage graph -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInputs:
    """What the stages after the split share: the resolved config, the output folder, the base's and the
    split's identities, the split's files and the adapters to train ((name, specialty filter) pairs)."""

    cfg: ExperimentConfig
    root: Path
    base_hash: str
    split: dict
    train_path: Path
    test_path: Path
    targets: list[tuple[str, str | None]]
    base: str = ""  # the base as the stages get it ("": cfg.base); an absolute path for remote executors

    @property
    def stage_base(self) -> str:
        """The base model the stages load."""
        return self.base or self.cfg.base


def plan_steps(run: RunInputs, *, in_process: bool, progress: bool = True, say: Say = print) -> list[Step]:
    """Every stage after the split, as `Step`s in dependency order, each naming the stages it reads.

    The one declaration of the stage graph, for every executor. `in_process` (the local executor): the
    probe stages share loaded models and one accuracy stage measures every adapter; otherwise each
    adapter's accuracy is its own step and a merge step joins them into the same accuracy stage.
    """
    cfg, root = run.cfg, run.root
    common = {"progress": progress, **({"say": say} if in_process else {})}
    steps = [
        Step(
            "lexicon",
            "lexicon",
            lexicon_stage,
            {"root": root, "split": run.split, "test_path": run.test_path, **common},
        )
    ]
    adapters = {name: f"adapter-{slug(name)}" for name, _ in run.targets}
    for name, spec in run.targets:
        fixed = {
            "name": name,
            "specialty": spec,
            "base": run.stage_base,
            "base_hash": run.base_hash,
            "split": run.split,
        }
        fixed |= {"train_path": run.train_path, "train": cfg.train}
        steps.append(Step(adapters[name], "train", adapter_stage, {"root": root, **fixed, **common}))
    steps += _accuracy_steps(run, adapters, in_process, common)
    pairs = {"pairs": PairCache(run.stage_base)} if in_process else {}  # the base loads once, by the first probe stage
    probes: dict[str, dict[str, str]] = {"compare": {}, "layers": {}}
    for kind in ("compare", "layers")[: 2 if cfg.layers else 1]:
        for name in adapters:
            fixed = {"kind": kind, "name": name, "base": run.stage_base, "base_hash": run.base_hash, "train": cfg.train}
            fixed |= {"test_path": run.test_path, "max_texts": cfg.max_texts, "compare": cfg.compare, "seed": cfg.seed}
            needs = {"adapter": adapters[name], "lexicon_path": "lexicon"}
            probes[kind][name] = f"{kind}-{slug(name)}"
            steps.append(Step(probes[kind][name], kind, probe_stage, {"root": root, **fixed, **pairs, **common}, needs))
    analyses, analysis_needs = _analysis_steps(run, adapters, probes["compare"], pairs, common)
    needs = {"lexicon": "lexicon", "accuracy": "accuracy", "adapters": adapters}
    needs |= {"comparisons": probes["compare"], "layers": probes["layers"], **analysis_needs}
    steps += analyses
    steps.append(Step("report", "report", report_stage, {"root": root, "config": cfg.recorded()}, needs))
    return steps


def _analysis_steps(
    run: RunInputs, adapters: dict[str, str], compares: dict[str, str], pairs: dict, common: dict
) -> tuple[list[Step], dict[str, Any]]:
    """The steps of the analyses the config asks for (`ExperimentConfig.chosen_analyses`), and what the
    report step reads of them: seen_unseen after each compare stage, trajectory after each adapter's
    training (those of `trajectory_adapters`), general_text beside compare, and one accuracy_link after
    the accuracy and every compare stage."""
    cfg, root, chosen = run.cfg, run.root, run.cfg.chosen_analyses()
    model = {"base": run.stage_base, "base_hash": run.base_hash}
    specialty = dict(run.targets)
    steps: list[Step] = []
    named: dict[str, dict[str, str]] = {key: {} for key in ("seen_unseen", "trajectory", "general_text")}
    for name in adapters:
        if "seen_unseen" in chosen:
            kwargs = {"root": root, "name": name, "train_path": run.train_path, **_say(common)}
            needs = {"adapter": adapters[name], "comparison": compares[name]}
            named["seen_unseen"][name] = f"seen-unseen-{slug(name)}"
            steps.append(Step(named["seen_unseen"][name], "report", seen_unseen_stage, kwargs, needs))
        if "trajectory" in chosen and name in (cfg.trajectory_adapters or adapters):
            kwargs = {"root": root, "name": name, "specialty": specialty[name], **model, "train": cfg.train}
            kwargs |= {"test_path": run.test_path, "max_texts": cfg.max_texts, "compare": cfg.compare, "seed": cfg.seed}
            needs = {"adapter": adapters[name], "lexicon_path": "lexicon"}
            named["trajectory"][name] = f"trajectory-{slug(name)}"
            steps.append(Step(named["trajectory"][name], "compare", trajectory_stage, {**kwargs, **common}, needs))
        if "general_text" in chosen:
            kwargs = {"root": root, "name": name, **model, "compare": cfg.compare, **pairs, **common}
            named["general_text"][name] = f"general-text-{slug(name)}"
            steps.append(
                Step(named["general_text"][name], "compare", general_text_stage, kwargs, {"adapter": adapters[name]})
            )
    needs_of_report: dict[str, Any] = {key: value for key, value in named.items() if value}
    if "accuracy_link" in chosen:
        needs = {"accuracy": "accuracy", "comparisons": compares}
        steps.append(Step(ACCURACY_LINK, "report", accuracy_link_stage, {"root": root, **_say(common)}, needs))
        needs_of_report["accuracy_link"] = ACCURACY_LINK
    return steps, needs_of_report


def _say(common: dict) -> dict:
    """The `say` of the shared step options (in process only): for the stages that take no `progress`."""
    return {"say": common["say"]} if "say" in common else {}


def _accuracy_steps(run: RunInputs, adapters: dict[str, str], in_process: bool, common: dict) -> list[Step]:
    """The accuracy stage as one step (in process), or one step per adapter and a merge step."""
    fixed = {"root": run.root, "base_hash": run.base_hash, "split": run.split, "train": run.cfg.train}
    fixed |= {"test_path": run.test_path}
    if in_process or accuracy_done(run):  # one step; after a local run, a remote executor finds it done
        return [
            Step(
                "accuracy",
                "accuracy" if in_process else "report",  # done: it only checks its files
                accuracy_stage,
                {**fixed, "base": run.stage_base, **common},
                {"adapters": adapters},
            )
        ]
    steps, parts = [], {}
    for i, (name, step) in enumerate(adapters.items()):
        parts[name] = f"accuracy-{slug(name)}"
        kwargs = {**fixed, "name": name, "base": run.stage_base, "with_base": i == 0, **common}
        steps.append(Step(parts[name], "accuracy", accuracy_part_stage, kwargs, {"adapter": step}))
    steps.append(Step("accuracy", "report", accuracy_merge_stage, fixed, {"adapters": adapters, "parts": parts}))
    return steps


def accuracy_done(run: RunInputs) -> bool:
    """Whether every adapter and the accuracy stage over them are already finished on disk (so a remote
    executor need not measure each adapter's accuracy again; `run_stage` still checks the files)."""
    adapters = {}
    for name, spec in run.targets:
        key = adapter_key(run.base_hash, run.split, run.train_path, spec, run.cfg.train)
        folder = stage_folder(run.root, f"adapter-{slug(name)}", key, ADAPTER_CODE)
        if not (folder / DONE).exists():
            return False
        adapters[name] = str(folder / ADAPTER_DIR)
    key = accuracy_key(run.base_hash, run.split, adapters, run.cfg.train, run.test_path)
    return (stage_folder(run.root, "accuracy", key, ACCURACY_CODE) / DONE).exists()


# -- the runner ------------------------------------------------------------------------------------------
def run_experiment(
    config: ExperimentConfig, *, progress: bool = True, say: Say = print, executor: Executor | None = None
) -> ExperimentResult:
    """Run (or resume) every stage; returns an `ExperimentResult` (also saved as experiment.json).

    `executor` runs the stages (`executors.LocalExecutor`, the default: in order, in this process; or
    `executors.make_executor("ray", ...)`: Ray tasks). The split runs here first, since the plan needs
    its specialties. Holds the lock of the output folder throughout (a second run into it gets
    `OutputLockedError` naming this process). SIGINT and SIGTERM stop the run (`TrainingInterrupted`
    during training, after a checkpoint; `RunInterrupted` elsewhere); finished stages are kept, and the
    same call resumes.
    """
    executor = executor or LocalExecutor()
    cfg = config.resolved()
    root = Path(cfg.out).expanduser().resolve()
    with stop_on_signals(), output_lock(root):
        run = prepare_run(cfg, root, say=say, remote=not executor.in_process)
        outputs = executor.run(plan_steps(run, in_process=executor.in_process, progress=progress, say=say))
        return cast(ExperimentResult, ExperimentResult.load(outputs["report"]))


def prepare_run(cfg: ExperimentConfig, root: Path, *, say: Say = print, remote: bool = False) -> RunInputs:
    """The base's identity, the split stage and the adapters to train (checked before any long stage).

    `remote`: the stages run in other processes, maybe on other machines: a base given as a relative
    local path is passed on as an absolute one."""
    base_hash = weights_fingerprint(cfg.base) or cfg.base
    data_hash = sha256_file(cfg.data)
    split_dir = split_stage(root, cfg.data, data_hash, cfg.test_fraction, cfg.seed, say=say)
    split = split_key(data_hash, cfg.test_fraction, cfg.seed)
    train_path, test_path = split_dir / TRAIN_FILE, split_dir / TEST_FILE
    specialties = check_specialties(train_path, cfg.specialties, cfg.data)
    targets = adapter_targets(specialties, cfg.include_all)
    check_trajectory_adapters(cfg.trajectory_adapters, [name for name, _ in targets])
    base = str(Path(cfg.base).resolve()) if remote and Path(cfg.base).exists() else cfg.base
    return RunInputs(cfg, root, base_hash, split, train_path, test_path, targets, base)


def check_trajectory_adapters(wanted: Sequence[str] | None, names: Sequence[str]) -> None:
    """`trajectory_adapters` must name adapters of the run; raises `ConfigError` naming the key."""
    unknown = [n for n in wanted or [] if n not in names]
    if unknown:
        raise ConfigError(f"trajectory_adapters: {unknown[0]!r} is not an adapter of this run; adapters: {list(names)}")
