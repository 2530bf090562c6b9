"""The whole study in one call: data -> lexicon -> one LoRA adapter per specialty -> accuracy matrix ->
compare matrix -> report. Each stage is cached by a hash of its inputs (see `stages`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from specprobe.app.stages import run_stage
from specprobe.core.models import weights_fingerprint
from specprobe.core.results import Result
from specprobe.terms.datasets import QARecord, load_qa
from specprobe.utils.io import atomic_write_text, sha256_file

log = logging.getLogger(__name__)


def builtin_model() -> Path:
    return Path(str(resources.files("specprobe").joinpath("data/demo/model")))


def builtin_questions() -> Path:
    return Path(str(resources.files("specprobe").joinpath("data/demo/questions.json")))


@dataclass
class ExperimentConfig:
    """Everything that defines a run; every field goes into the stage hashes that depend on it."""

    base: str = ""  # empty: the built-in demo model
    data: str = ""  # empty: the built-in demo questions
    out: str = "specprobe-demo"
    specialties: list[str] | None = None  # None: every specialty in the data
    include_all: bool = True  # also one adapter trained on all specialties
    test_fraction: float = 0.3
    seed: int = 0
    train: dict = field(default_factory=lambda: {"max_steps": 60, "batch_size": 8, "learning_rate": 2e-3,
                                                 "rank": 8, "continuation": "text"})
    compare: dict = field(default_factory=lambda: {"batch_size": 16})
    max_texts: int | None = None  # cap on test texts used by compare (None: all)
    layers: bool = True  # logit-lens layer views for every adapter

    def resolved(self) -> "ExperimentConfig":
        c = ExperimentConfig(**asdict(self))
        c.base = c.base or str(builtin_model())
        c.data = c.data or str(builtin_questions())
        return c

    @classmethod
    def from_toml(cls, path: str | Path) -> "ExperimentConfig":
        import tomllib

        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**raw)


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
    rows = [{"id": r.id, "Question": r.question, "Specialty": list(r.specialties) if len(r.specialties) != 1 else r.specialties[0],
             "Options": list(r.options), "Answer": r.answer} for r in records]
    atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1))


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def run_experiment(config: ExperimentConfig, *, progress: bool = True, say: Callable[[str], None] = print) -> "ExperimentResult":
    """Run (or resume) every stage; returns an `ExperimentResult` (also saved as experiment.json)."""
    from specprobe import finetune
    from specprobe.probe import ModelPair, compare
    from specprobe.probe.comparison import Comparison
    from specprobe.terms.build import build_lexicon
    from specprobe.terms.lexicon import Lexicon

    cfg = config.resolved()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    data_hash = sha256_file(cfg.data)
    base_hash = weights_fingerprint(cfg.base) or cfg.base

    # 1. data split
    split_in = {"data": data_hash, "test_fraction": cfg.test_fraction, "seed": cfg.seed}

    def do_split(folder: Path) -> None:
        train, test = split_records(load_qa(cfg.data), cfg.test_fraction, cfg.seed)
        write_smedqa(folder / "train.json", train)
        write_smedqa(folder / "test.json", test)

    split_dir = run_stage(root, "split", split_in, do_split, say=say)
    train_path, test_path = split_dir / "train.json", split_dir / "test.json"
    test_records = load_qa(test_path)
    available = sorted({s for r in load_qa(train_path) for s in r.specialties})
    specialties = cfg.specialties or available
    unknown = [s for s in specialties if s not in available]
    if unknown:
        raise ValueError(f"specialties {unknown} have no questions in {cfg.data}; available: {available}")

    # 2. lexicon from the test questions (the texts that will be probed)
    lex_dir = run_stage(root, "lexicon", {"split": split_in}, lambda f: build_lexicon(test_path, progress=progress).save(f / "lexicon.json"), say=say)
    lexicon = Lexicon.load(lex_dir / "lexicon.json")

    # 3. one adapter per specialty (+ all)
    targets = [(s, s) for s in specialties] + ([("All specialties", None)] if cfg.include_all else [])
    adapters: dict[str, Path] = {}
    for name, spec in targets:
        key = {"base": base_hash, "split": split_in, "specialty": spec, "train": cfg.train}
        folder = run_stage(root, f"adapter-{slug(name)}", key,
                           lambda f, spec=spec: finetune.train(cfg.base, train_path, specialty=spec, out=f / "adapter",
                                                               progress=progress, overwrite=False, **cfg.train), say=say)
        adapters[name] = folder / "adapter"

    # 4. accuracy matrix
    acc_key = {"base": base_hash, "split": split_in, "adapters": {n: str(p) for n, p in adapters.items()}, "train": cfg.train}
    acc_dir = run_stage(root, "accuracy", acc_key,
                        lambda f: finetune.matrix(cfg.base, {n: str(p) for n, p in adapters.items()}, test_path,
                                                  progress=progress).save(f / "accuracy.json"), say=say)
    accuracy = finetune.AccuracyMatrix.load(acc_dir / "accuracy.json")

    # 5. compare: every adapter against the base on the test questions
    texts = [r.as_text_record() for r in interleave_by_specialty(test_records)][: cfg.max_texts]
    lexicon_hash = sha256_file(lex_dir / "lexicon.json")
    texts_hash = hashlib.sha256("\n".join(t.id for t in texts).encode()).hexdigest()

    def probe_key(name: str) -> dict:
        """Inputs of the compare and layer stages of one adapter (both probe the same texts and terms)."""
        return {"base": base_hash, "adapter": acc_key["adapters"][name], "train": cfg.train, "lexicon": lexicon_hash,
                "compare": cfg.compare, "texts": texts_hash, "seed": cfg.seed}

    pairs: dict[str, ModelPair] = {}

    def pair_for(adapter) -> ModelPair:
        """The base is loaded once, by the first probe stage that runs; later adapters are added to it."""
        key = str(adapter)
        if key not in pairs:
            pairs[key] = next(iter(pairs.values())).with_adapter(key) if pairs else ModelPair.load(cfg.base, key)
        return pairs[key]

    def probe_stages(kind: str, run: Callable, filename: str, result_type) -> tuple[dict[str, Any], dict[str, str]]:
        """One cached stage per adapter running `run` (compare or layers) on the same texts and terms."""
        results, paths = {}, {}
        for name, adapter in adapters.items():
            folder = run_stage(root, f"{kind}-{slug(name)}", probe_key(name),
                               lambda f, adapter=adapter: run(pair_for(adapter), terms=lexicon, texts=texts, progress=progress,
                                                              seed=cfg.seed, **cfg.compare).save(f / filename),
                               say=say)
            paths[name] = str(folder / filename)
            results[name] = result_type.load(paths[name])
        return results, paths

    comparisons, compare_paths = probe_stages("compare", compare, "comparison.json.gz", Comparison)
    files: dict[str, dict[str, str]] = {"comparisons": compare_paths, "layers": {}}

    # 6. layer views (logit lens): where in depth the change appears
    layer_views: dict[str, Any] = {}
    if cfg.layers:
        from specprobe.probe.layers import LayerView, layers

        layer_views, files["layers"] = probe_stages("layers", layers, "layers.json.gz", LayerView)

    matrix = compare_matrix(comparisons)
    atomic_write_text(root / "compare_matrix.csv", matrix.to_csv(index=False))
    atomic_write_text(root / "accuracy_matrix.csv", accuracy.to_pandas().to_csv(index=False))
    paths = {"lexicon": str(lex_dir / "lexicon.json"), "accuracy": str(acc_dir / "accuracy.json"),
             "adapters": {n: str(p) for n, p in adapters.items()}, **files}
    result = ExperimentResult(matrix, {"config": asdict(cfg), "root": str(root)}, {"paths": paths})
    result._cache.update({"accuracy": accuracy, "comparisons": comparisons, "layers": layer_views, "lexicon": lexicon})
    result.save(root / "experiment.json")
    return result


class ExperimentResult(Result):
    """The runner's output: the compare matrix as the table, and paths to every stage's result.

    Sub-results load lazily from their files, so a saved experiment reopens on a machine without
    the models: `ExperimentResult.load("specprobe-demo/experiment.json").report("report.html")`.
    """

    kind = "experiment"

    def __init__(self, frame: pd.DataFrame, metadata: dict | None = None, extras: dict | None = None):
        super().__init__(frame, metadata, extras)
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        if not hasattr(self, "_cache"):
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    @property
    def paths(self) -> dict:
        return self.extras["paths"]

    @property
    def config(self) -> dict:
        return self.metadata["config"]

    @property
    def root(self) -> Path:
        return Path(self.metadata["root"])

    @property
    def adapters(self) -> dict[str, str]:
        return dict(self.paths["adapters"])

    @property
    def compare_matrix(self) -> pd.DataFrame:
        return self.to_pandas()

    @property
    def accuracy(self):
        from specprobe.finetune import AccuracyMatrix

        return self._cached("accuracy", lambda: AccuracyMatrix.load(self.paths["accuracy"]))

    @property
    def comparisons(self) -> dict:
        from specprobe.probe.comparison import Comparison

        return self._cached("comparisons", lambda: {n: Comparison.load(p) for n, p in self.paths["comparisons"].items()})

    @property
    def layer_views(self) -> dict:
        from specprobe.probe.layers import LayerView

        return self._cached("layers", lambda: {n: LayerView.load(p) for n, p in self.paths["layers"].items()})

    @property
    def lexicon(self):
        from specprobe.terms.lexicon import Lexicon

        return self._cached("lexicon", lambda: Lexicon.load(self.paths["lexicon"]))

    def report(self, path: str | os.PathLike | None = None) -> Path:
        """The experiment page (default: report.html in the run's folder)."""
        from specprobe.app.report import write_experiment_report

        return write_experiment_report(self, path)


def compare_matrix(comparisons: dict[str, Any], metric: str = "delta_per_token") -> pd.DataFrame:
    """Fine-tuning specialty x term specialty: mean delta with CI, and its difference from control words."""
    frames = []
    for name, comp in comparisons.items():
        table = comp.by_specialty(metric)
        table.insert(0, "finetune_specialty", name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
