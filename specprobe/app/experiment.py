"""The whole study in one call: data -> lexicon -> one LoRA adapter per specialty -> accuracy matrix ->
compare matrix -> report. Each stage is cached by a hash of its inputs (see `stages`).

The stages themselves are plain functions in `experiment_stages`. Here: `plan_steps` declares which
stage reads which outputs, and `run_experiment` hands that plan to an executor (`executors`: in order
in this process, or as Ray tasks). The stage functions and helpers are re-exported from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from specprobe.app.base_identity import base_identity
from specprobe.app.config import ConfigError, ExperimentConfig, builtin_model, builtin_questions
from specprobe.app.executors_base import Executor, LocalExecutor, Step
from specprobe.app.experiment_result import ExperimentResult
from specprobe.app.experiment_stages import (
    ACCURACY_CODE,
    ACCURACY_LINK,
    ADAPTER_CODE,
    ADAPTER_DIR,
    ALL_SPECIALTIES,
    SLUG_MAX,
    SPLIT_CODE,
    TEST_FILE,
    TRAIN_FILE,
    PairCache,
    ProbeInputs,
    accuracy_key,
    accuracy_link_stage,
    accuracy_merge_stage,
    accuracy_part_stage,
    accuracy_stage,
    adapter_hash,
    adapter_key,
    adapter_stage,
    compare_matrix,
    data_identity,
    general_text_stage,
    interleave_by_specialty,
    lexicon_stage,
    probe_stage,
    probe_texts,
    report_stage,
    seen_unseen_stage,
    slug,
    split_key,
    split_records,
    split_stage,
    summary_stage,
    trajectory_stage,
)
from specprobe.app.stages import finished_folder, verify_outputs
from specprobe.terms.datasets import load_qa
from specprobe.utils.interrupts import SignalInterrupt
from specprobe.utils.io import sha256_file
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
    "data_identity",
    "adapter_key",
    "accuracy_key",
    "PairCache",
    "ProbeInputs",
    "split_records",
    "interleave_by_specialty",
    "check_specialties",
    "probe_texts",
    "compare_matrix",
    "RunInterrupted",
    "adapter_hash",
    "slug",
    "ALL_SPECIALTIES",
    "SLUG_MAX",
    "SPLIT_CODE",
    "adapter_targets",
    "check_trajectory_adapters",
    "stop_on_signals",
]

Say = Callable[[str], None]


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


def check_specialties(train_path: str | Path, wanted: Sequence[str] | None, data: str) -> list[str]:
    """The specialties to fine-tune on: `wanted`, or all with training questions; an unknown one is an error."""
    available = sorted({s for r in load_qa(train_path) for s in r.specialties})
    specialties = list(wanted or available)
    unknown = [s for s in specialties if s not in available]
    if unknown:
        raise ValueError(
            f"specialties {unknown} have no questions in the training split of {data}; available: {available}"
        )
    return specialties


def adapter_targets(specialties: Sequence[str], include_all: bool) -> list[tuple[str, str | None]]:
    """(adapter name, specialty filter) per adapter: one per specialty, plus one on all data (filter None)."""
    if include_all and ALL_SPECIALTIES in specialties:
        raise ValueError(
            f"a specialty is named {ALL_SPECIALTIES!r}, the name of the adapter trained on all the data; "
            "rename that specialty in the data, or set include_all = false"
        )
    targets: list[tuple[str, str | None]] = [(s, s) for s in specialties]
    targets += [(ALL_SPECIALTIES, None)] if include_all else []
    folders: dict[str, str] = {}
    for name, _ in targets:
        if (other := folders.setdefault(slug(name), name)) != name:
            raise ValueError(
                f"specialties: {other!r} and {name!r} would share the stage folders '*-{slug(name)}'; "
                "name one specialty once, or rename one in the data"
            )
    return targets


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

    def probe_inputs(self) -> ProbeInputs:
        """What the stages that score the test texts share (`experiment_stages.ProbeInputs`)."""
        cfg = self.cfg
        return ProbeInputs(
            self.stage_base, self.base_hash, cfg.train, self.test_path, cfg.max_texts, cfg.compare, cfg.seed
        )


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
    # the base loads once, by the first probe stage, on the [compare] device and in its dtype
    pairs = {"pairs": PairCache.for_options(run.stage_base, cfg.compare)} if in_process else {}
    probes: dict[str, dict[str, str]] = {"compare": {}, "layers": {}}
    for kind in ("compare", "layers")[: 2 if cfg.layers else 1]:
        for name in adapters:
            fixed = {"root": root, "kind": kind, "name": name, "inputs": run.probe_inputs(), **pairs, **common}
            needs = {"adapter": adapters[name], "lexicon_path": "lexicon"}
            probes[kind][name] = f"{kind}-{slug(name)}"
            steps.append(Step(probes[kind][name], kind, probe_stage, fixed, needs))
    analyses, analysis_needs = _analysis_steps(run, adapters, probes["compare"], pairs, common)
    needs = {"lexicon": "lexicon", "accuracy": "accuracy", "adapters": adapters}
    needs |= {"comparisons": probes["compare"], "layers": probes["layers"], **analysis_needs}
    steps += analyses
    report = {"root": root, "config": cfg.recorded(), "base_identity": run.base_hash, "split": run.split}
    steps.append(Step("report", "report", report_stage, report, needs))
    return [dataclasses.replace(step, reuse_older=tuple(cfg.reuse_older or ())) for step in steps]


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
            kwargs = {"root": root, "name": name, "specialty": specialty[name], "inputs": run.probe_inputs()}
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
    """Whether every adapter and the accuracy stage over them are already finished on disk, with their
    files intact, by this code or, for the kinds `reuse_older` names, by another (so a remote executor
    need not measure each adapter's accuracy again). A damaged folder is redone by `run_stage`: then the
    accuracy is measured in parts, each asking for the `accuracy` resources, not in one `report` task."""
    adapters, reuse = {}, run.cfg.reuse_older or ()
    for name, spec in run.targets:
        key = adapter_key(run.base_hash, run.split, run.train_path, spec, run.cfg.train)
        folder = finished_folder(run.root, f"adapter-{slug(name)}", key, ADAPTER_CODE, reuse)
        if folder is None or verify_outputs(folder):
            return False
        adapters[name] = str(folder / ADAPTER_DIR)
    key = accuracy_key(run.base_hash, run.split, adapters, run.cfg.train, run.test_path)
    folder = finished_folder(run.root, "accuracy", key, ACCURACY_CODE, reuse)
    return folder is not None and not verify_outputs(folder)


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
    """The base's identity (`base_identity`: its files' content, or its hub commit), the split stage and
    the adapters to train (checked before any long stage).

    `remote`: the stages run in other processes, maybe on other machines: a base given as a relative
    local path is passed on as an absolute one. A hub base is passed on pinned to the commit it resolves
    to now ("id@commit"), so that a new upstream commit during the run does not reach its later stages."""
    if not Path(cfg.data).is_file():
        problem = "a folder, not a QA file" if Path(cfg.data).is_dir() else "no such file"
        raise ConfigError(f"data: {cfg.data}: {problem}")
    # the data first: a wrong specialty is told before the base is hashed
    data_hash = data_identity(sha256_file(cfg.data), cfg.mapping)
    split_dir = split_stage(root, cfg.data, data_hash, cfg.test_fraction, cfg.seed, mapping=cfg.mapping, say=say)
    split = split_key(data_hash, cfg.test_fraction, cfg.seed)
    train_path, test_path = split_dir / TRAIN_FILE, split_dir / TEST_FILE
    specialties = check_specialties(train_path, cfg.specialties, cfg.data)
    targets = adapter_targets(specialties, cfg.include_all)
    check_trajectory_adapters(cfg.trajectory_adapters, [name for name, _ in targets])
    say_text_cap(test_path, cfg.max_texts, say)
    base_hash = base_identity(cfg.base, cfg.train.get("revision"), root)
    if not Path(cfg.base).exists():
        base = base_hash  # a hub id as "id@commit" (`core.models.model_ref`): every stage loads the commit resolved now
    else:
        base = str(Path(cfg.base).resolve()) if remote else cfg.base
    return RunInputs(cfg, root, base_hash, split, train_path, test_path, targets, base)


def say_text_cap(test_path: Path, max_texts: int | None, say: Say) -> None:
    """Say when `max_texts` leaves test questions out of the probe stages, and which ones it keeps."""
    if max_texts is None:  # no cap: nothing to say, and no need to read the test file
        return
    n = len(probe_texts(test_path, None))
    if max_texts < n:
        say(
            f"[note] max_texts = {max_texts}: compare, layers and trajectory score {max_texts} of the {n} test "
            "questions (the first of each specialty in turn, in the split's seeded order); accuracy scores all"
        )


def check_trajectory_adapters(wanted: Sequence[str] | None, names: Sequence[str]) -> None:
    """`trajectory_adapters` must name adapters of the run; raises `ConfigError` naming the key."""
    unknown = [n for n in wanted or [] if n not in names]
    if unknown:
        raise ConfigError(f"trajectory_adapters: {unknown[0]!r} is not an adapter of this run; adapters: {list(names)}")
