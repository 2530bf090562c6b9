"""`train(base, data, specialty=..., out=...)`: LoRA supervised fine-tuning on one specialty's questions.

A plain, explicit torch loop driven by accelerate's `Accelerator`, so the same code runs on one CPU,
one GPU, or under `accelerate launch` (DDP; FSDP/DeepSpeed through an accelerate config).

Determinism and resumption
  * The data order is a function of (seed, epoch) only; an optimizer step k always sees the same
    examples (its "group"), whatever happened before.
  * Dropout randomness is re-seeded from (seed, step, process) at the start of every optimizer step,
    so no RNG state has to be saved and a resumed run draws exactly what an uninterrupted one draws.
  * Every `save_every` steps the adapter weights, optimizer and scheduler state and the loss curve
    are written to `out/checkpoints/.tmp-step-N` and then renamed to `out/checkpoints/step-N`: the
    rename is the commit, so a SIGKILL never leaves a half checkpoint.
  * SIGINT/SIGTERM (Ctrl-C, a cluster's pre-emption) stop training after the current step: a
    checkpoint is written, then `TrainingInterrupted` (a KeyboardInterrupt) is raised, so no caller
    takes a stopped run for a finished one. A second signal stops at once.
  * The output directory is locked for the whole call (`specprobe.utils.locks.output_lock`); a
    second run into it is refused with the holder's PID.
  * Running the same command again continues from the newest checkpoint, provided the run's identity
    (base weights, data hash, specialty filter, all result-affecting options, number of processes)
    is the same; a different run in the directory is refused unless `overwrite=True`.
  * On CPU a resumed run ends with bit-identical weights to an uninterrupted one (tested).

Loss: cross-entropy on the answer tokens only (the option continuation, plus EOS by default),
summed over the tokens of the whole optimizer step (all micro-batches, all processes) and divided by
their number, so 2 processes x batch b give the same update as 1 process x batch 2b.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import math
import numbers
import os
import shutil
import signal
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from specprobe.finetune.data import data_specialties, load_selected, specialty_counts
from specprobe.finetune.prompts import PromptFormat, encode_continuation
from specprobe.finetune.snapshots import SNAPSHOTS, check_save_steps, parse_save_steps, save_snapshot, snapshot_entries
from specprobe.finetune.trackers import LOGS, REPORT_TO, StepTracker
from specprobe.terms.datasets import QARecord
from specprobe.utils.interrupts import SignalInterrupt
from specprobe.utils.io import read_json, sha256_text, write_json
from specprobe.utils.provenance import library_versions, now_iso

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Entries of an output directory that a run writes (and `overwrite` removes).
FINISHING = ".finishing.json"  # present while the final adapter is being moved into place
OWNED = (
    MANIFEST,
    CHECKPOINTS,
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "README.md",
    ".final-tmp",
    FINISHING,
    LOGS,
    SNAPSHOTS,
)
# Options that do not change the trained weights (not part of the run identity).
NON_IDENTITY = ("save_every", "keep_checkpoints", "report_to", "save_steps")


class TrainOptionError(ValueError):
    """An invalid training option; `field` names it, and the message starts with it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"training option {field}: {problem}")

    def __reduce__(self):
        return type(self), (self.field, str(self).split(": ", 1)[1])


class UnknownTrainOptionError(TrainOptionError, TypeError):
    """A key that is not a training option (a TypeError too, as an unknown keyword argument is)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        ValueError.__init__(self, problem)

    def __reduce__(self):
        return type(self), (self.field, str(self))


class TrainingInterrupted(SignalInterrupt):
    """`train` was stopped by SIGINT or SIGTERM; raised after the checkpoint is written.

    A KeyboardInterrupt, so that `except Exception` does not take it for an ordinary error. Running the
    same call (or command) again resumes from `checkpoint` and ends with the same adapter as an
    uninterrupted run.

    Attributes: `signum` (the signal), `signal_name` ("SIGTERM"), `step` (the optimizer step a rerun
    resumes from: that of the newest checkpoint, 0 if none), `total_steps` (None if the signal came
    before the run's length was known), `out` (the output directory), `checkpoint` (the checkpoint
    directory, or None), `completed` (True when the signal came while the final adapter was being
    written, which was finished first: the adapter in `out` is complete), `exit_code` (128 + signum:
    130 for SIGINT, 143 for SIGTERM). `str(exc)` is the one-line message for the user.
    """

    def __init__(
        self,
        signum: int,
        step: int,
        total_steps: int | None,
        out: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        completed: bool = False,
    ) -> None:
        self.signum, self.step, self.total_steps = int(signum), int(step), total_steps
        self.out = Path(out)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.completed = completed
        super().__init__(signum)

    @property
    def message(self) -> str:
        at = f"step {self.step} of {self.total_steps if self.total_steps is not None else '?'}"
        if self.completed:
            return (
                f"stopped after {self.signal_name} once training had finished ({at}); the adapter in {self.out} "
                "is complete; rerun the same command to go on"
            )
        if self.checkpoint is None:
            return (
                f"stopped at {at} after {self.signal_name}, before any checkpoint was saved in {self.out}; "
                "rerun the same command to start again"
            )
        return f"stopped at {at} after {self.signal_name}; checkpoint in {self.out}; rerun the same command to resume"

    def __reduce__(self):
        return type(self), (self.signum, self.step, self.total_steps, self.out, self.checkpoint, self.completed)


_POSITIVE_INTS = ("rank", "epochs", "batch_size", "grad_accum", "max_length", "save_every", "keep_checkpoints")
_BOOLS = ("load_in_4bit", "gradient_checkpointing", "append_eos")
_STRINGS = ("template", "option_format", "continuation", "scheduler", "precision", "report_to")


def _kind(value: Any) -> str:
    return f"{value!r} (a {type(value).__name__})"


@dataclass
class TrainOptions:
    """Every training option, with its default. Options not in NON_IDENTITY define the run.

    Checked when made: a wrong type or value raises `TrainOptionError` (a ValueError) naming the
    option; `from_kwargs` also refuses unknown keys (`UnknownTrainOptionError`). Values are kept as
    given (an int learning rate stays an int), so run identities do not change.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: every linear projection inside the decoder layers
    learning_rate: float = 2e-4
    scheduler: str = "cosine"  # linear | cosine | constant (after warmup)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    epochs: int = 3
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 4  # per process
    grad_accum: int = 1
    max_length: int = 1024  # capped at the model's context; longer prompts lose tokens from the left (after BOS)
    seed: int = 0
    precision: str = "auto"  # auto: bf16 (fp16 if unsupported) on GPU, fp32 on CPU
    load_in_4bit: bool = False  # QLoRA; needs CUDA and bitsandbytes
    gradient_checkpointing: bool = False
    template: str = PromptFormat.template
    option_format: str = PromptFormat.option_format
    continuation: str = "letter"
    append_eos: bool = True
    save_every: int = 50
    keep_checkpoints: int = 1
    save_steps: list[int] | None = None  # adapter snapshots kept after these steps (finetune/snapshots.py)
    report_to: str = "none"  # none | tensorboard | wandb | mlflow (specprobe.finetune.trackers)

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            self._int(name, minimum=1)
        if self.max_steps is not None:
            self._int("max_steps", minimum=1, what="a positive integer or None")
        self._int("seed", minimum=0)
        self._number("alpha", lambda v: v > 0, "> 0")
        self._number("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        self._number("learning_rate", lambda v: v > 0, "> 0")
        self._number("warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)")
        self._number("weight_decay", lambda v: v >= 0, ">= 0")
        if self.max_grad_norm is not None:
            self._number("max_grad_norm", lambda v: v >= 0, ">= 0 (or None: no clipping)")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise TrainOptionError(name, f"must be true or false, got {_kind(getattr(self, name))}")
        for name in _STRINGS:
            if not isinstance(getattr(self, name), str):
                raise TrainOptionError(name, f"must be a string, got {_kind(getattr(self, name))}")
        if self.scheduler not in SCHEDULERS:
            raise TrainOptionError("scheduler", f"must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.precision not in PRECISIONS:
            raise TrainOptionError("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if self.report_to not in REPORT_TO:
            raise TrainOptionError("report_to", f"must be one of {REPORT_TO}, got {self.report_to!r}")
        self._target_modules()
        try:
            self.save_steps = parse_save_steps(self.save_steps)
        except ValueError as exc:
            raise TrainOptionError("save_steps", str(exc)) from None
        try:
            self.prompt_format()  # validates the template, option format and continuation
        except ValueError as exc:
            field = next((f for f in ("continuation", "option_format") if f in str(exc)), "template")
            raise TrainOptionError(field, str(exc)) from exc

    def _int(self, name: str, minimum: int, what: str | None = None) -> None:
        value = getattr(self, name)
        what = what or ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TrainOptionError(name, f"must be {what}, got {_kind(value)}")
        if value < minimum:
            raise TrainOptionError(name, f"must be {what}, got {value}")
        if not isinstance(value, int):
            setattr(self, name, int(value))  # a numpy integer

    def _number(self, name: str, ok: Callable[[float], bool], rule: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TrainOptionError(name, f"must be a number {rule}, got {_kind(value)}")
        if not math.isfinite(value) or not ok(cast(float, value)):  # a Real compares like a float
            raise TrainOptionError(name, f"must be {rule}, got {value}")
        if not isinstance(value, (int, float)):
            setattr(self, name, float(value))  # a numpy number

    def _target_modules(self) -> None:
        value = self.target_modules
        if value is None:
            return
        if isinstance(value, str):
            value = self.target_modules = [t.strip() for t in value.split(",") if t.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in value):
            raise TrainOptionError(
                "target_modules", f"must be a list of module names (or a comma-separated string), got {_kind(value)}"
            )
        if not value:
            raise TrainOptionError("target_modules", "names no module; leave it out to target every linear layer")

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(self.template, self.option_format, self.continuation)

    def is_explicit(self, name: str) -> bool:
        """Whether option `name` was given (by `from_kwargs`), or, for an instance made directly,
        differs from its default."""
        given = getattr(self, "_given", None)
        if given is not None:
            return name in given
        return getattr(self, name) != next(f.default for f in dataclasses.fields(self) if f.name == name)

    @classmethod
    def from_kwargs(cls, options: dict) -> TrainOptions:
        """Options from keyword arguments (a TOML table, CLI flags); unknown keys are refused."""
        if not isinstance(options, dict):
            raise TypeError(f"training options must be a mapping, got {type(options).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(known), key=str)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            more = f"; also unknown: {unknown[1:]}" if len(unknown) > 1 else ""
            raise UnknownTrainOptionError(
                str(key), f"unknown training option {key!r}{hint}{more}; valid: {', '.join(known)}"
            )
        opts = cls(**options)
        # deliberately not a dataclass field: it stays out of asdict() and so out of the run identity
        opts._given = frozenset(options)  # pyright: ignore[reportAttributeAccessIssue]
        return opts


@dataclass
class TrainRun:
    """What `train` returns: the output directory and its manifest. `train` only returns finished runs
    (a stopped one raises `TrainingInterrupted`), so `completed` is always True."""

    path: Path
    manifest: dict
    completed: bool = True

    @property
    def adapter(self) -> Path:
        return self.path


@dataclass
class Example:
    ids: tuple[int, ...]
    positions: tuple[int, ...]  # target token positions (their labels are the ids there)


# -- helpers ---------------------------------------------------------------------------------------------
def find_lora_targets(model) -> list[str]:
    """Names (last component) of every linear projection inside the decoder layers of `model`.

    Works per architecture without a table: Llama/Qwen/Mistral give q,k,v,o,gate,up,down_proj,
    GPT-2 gives its Conv1D c_attn, c_proj, c_fc. Embeddings and the LM head are never targets.
    """
    import torch.nn as nn

    from specprobe.core.architecture import split_model

    try:
        from transformers.pytorch_utils import Conv1D

        linear = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        linear = (nn.Linear,)
    split = split_model(model)
    if split.layers is None:
        raise ValueError(f"{type(split.causal_lm).__name__}: cannot find the decoder layers; pass target_modules")
    names = {name.rsplit(".", 1)[-1] for name, mod in split.layers.named_modules() if isinstance(mod, linear) and name}
    if not names:
        raise ValueError(
            f"{type(split.causal_lm).__name__}: no linear layers in the decoder layers; pass target_modules"
        )
    return sorted(names)


def uses_conv1d(model, targets: Sequence[str]) -> bool:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules())


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def group_indices(n: int, seed: int, epoch: int, k: int, group_size: int) -> list[int]:
    """The example indices of optimizer step k of `epoch`: a seeded permutation, wrapped to full groups."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    need = math.ceil(n / group_size) * group_size
    if need > n:
        perm = np.concatenate([perm, perm[: need - n]] if need - n <= n else [np.resize(perm, need)])[:need]
    return [int(i) for i in perm[k * group_size : (k + 1) * group_size]]


def build_examples(
    tokenizer, records: Sequence[QARecord], fmt: PromptFormat, max_length: int, append_eos: bool
) -> tuple[list[Example], int]:
    examples, truncated = [], 0
    for rec in records:
        enc = encode_continuation(
            tokenizer, fmt.prompt(rec), fmt.target(rec), max_length=max_length, append_eos=append_eos
        )
        truncated += enc.n_dropped > 0
        examples.append(Example(enc.ids, enc.positions))
    return examples, truncated


def collate(examples: Sequence[Example], pad_id: int):
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        mask[r, : len(e.ids)] = 1
        for p in e.positions:
            labels[r, p] = e.ids[p]
    return ids, mask, labels


def resolve_precision(precision: str, cuda: bool) -> str:
    import torch

    if precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not cuda:
        raise ValueError("precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
    return precision  # bf16 also runs on a CPU (autocast), slowly, but it exercises the GPU recipe


def base_identity(base: str, revision: str | None = None) -> dict:
    """What identifies the base weights in a run's identity: a local checkpoint's weights hash
    (`base_fingerprint`); for a hub id, the commit its configuration was read from (call after
    `AutoConfig.from_pretrained`). The commit is known before the weights are downloaded, unlike their
    hash, so a first run (weights not yet cached) and its resume have the same identity."""
    from specprobe.core.models import hub_commit

    if Path(base).is_dir():
        return {"base_weights_sha256": base_fingerprint(base)}
    try:
        commit = hub_commit(base, revision, cached_only=True)
    except ValueError:  # not cached: the model cannot load offline either, and says why
        commit = None
    return {"base_weights_sha256": None, "base_commit": commit}


def base_fingerprint(base: str, revision: str | None = None) -> str | None:
    """sha256 of the base's first safetensors file (as `ModelPair` checks it), local dir or hub cache."""
    from specprobe.core.models import weights_fingerprint

    if Path(base).is_dir():
        return weights_fingerprint(base)
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(base, revision=revision, local_files_only=True, allow_patterns=["*.safetensors"])
        return weights_fingerprint(snap)
    except Exception:  # noqa: BLE001 - provenance only; the base may be unavailable offline
        return None


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {vb!r} there vs {va!r} now")
    return out


class _SignalGuard:
    """SIGINT/SIGTERM during `train` (main thread only; elsewhere the handlers are left alone).

    Outside `deferring` (loading, the output checks) a signal raises `abort(signum)` at once: nothing
    is lost. While deferring (the training loop, the final write), the first signal is noted in
    `signum`, for the loop to checkpoint after the current step and raise; a second one raises at
    once (the newest checkpoint on disk stays the resume point).
    """

    def __init__(self, abort: Callable[[int], BaseException]) -> None:
        self.abort = abort
        self.signum = 0
        self.deferring = False
        self._old: dict = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.deferring and not self.signum:
            self.signum = signum
            log.warning(
                "%s: saving a checkpoint after the current step, then stopping (send it again to stop at once)",
                signal.Signals(signum).name,
            )
            return
        self.deferring = False
        raise self.abort(signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# -- output directory ------------------------------------------------------------------------------------
def _checkpoints(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "trainer_state.json").exists()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _entries(out: Path) -> list[Path]:
    """What `out` holds, apart from the files of its output lock."""
    from specprobe.utils.locks import LOCK_FILES

    return [p for p in out.iterdir() if p.name not in LOCK_FILES] if out.is_dir() else []


def _inspect_out(out: Path, identity: dict, identity_hash: str, overwrite: bool) -> tuple[str, Any]:
    """("fresh", None) | ("overwrite", None) | ("done", manifest) | ("resume", checkpoint dir); refuses
    a different run."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory")
    if not out.exists() or not _entries(out):
        return "fresh", None
    if overwrite:
        return "overwrite", None
    manifest = out / MANIFEST
    if manifest.exists():
        m = read_json(manifest)
        if m.get("identity_hash") == identity_hash:
            return "done", m
        diffs = _diff(identity, m.get("identity", {}))
        raise FileExistsError(
            f"output directory {out} already holds a different finished run "
            f"({'; '.join(diffs[:6]) or 'unknown identity'}); pass --overwrite to replace it"
        )
    ckpts = _checkpoints(out)
    if ckpts:
        state = read_json(ckpts[-1] / "trainer_state.json")
        if state.get("identity_hash") == identity_hash:
            return "resume", ckpts[-1]
        diffs = _diff(identity, state.get("identity", {}))
        raise FileExistsError(
            f"output directory {out} holds checkpoints of a different run "
            f"({'; '.join(diffs[:6]) or 'unknown identity'}); pass --overwrite to start over"
        )
    if (out / FINISHING).exists():
        try:
            marker = read_json(out / FINISHING)
        except (OSError, ValueError):
            marker = {}
        if isinstance(marker, dict) and marker.get("identity_hash") == identity_hash:
            log.warning(
                "%s: this run was stopped while writing its final adapter, with no checkpoint left; training it again",
                out,
            )
            return "overwrite", None
    if (out / "adapter_config.json").exists():
        raise FileExistsError(
            f"output directory {out} already holds an adapter that this run did not write; "
            "pass --overwrite to replace it"
        )
    others = sorted(p.name for p in _entries(out))
    if set(others) <= {CHECKPOINTS, LOGS, SNAPSHOTS}:
        return "fresh", None
    raise FileExistsError(
        f"output directory {out} is not empty ({', '.join(others[:5])}) and holds no specprobe run; "
        "choose another directory or pass --overwrite"
    )


def _clear_owned(out: Path) -> None:
    for name in OWNED:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    left = [p.name for p in _entries(out)]
    if left:
        log.warning("--overwrite kept files that a training run does not write: %s", ", ".join(left[:10]))


# -- the trainer -----------------------------------------------------------------------------------------
EXTRA_VERSIONS = ("accelerate", "safetensors", "bitsandbytes")  # recorded beside `library_versions()`' own


@dataclass
class _Progress:
    """The loop state that a checkpoint saves and a resumed run restores (besides the weights)."""

    step: int = 0
    curve: list = field(default_factory=list)  # {"step", "epoch", "loss", "lr"} per optimizer step
    wall_before: float = 0.0  # training wall time of the earlier segments of a resumed run
    resumed_from: list = field(default_factory=list)  # the steps the run was resumed at


def _check_4bit(cuda: bool) -> None:
    if not cuda:
        raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401  # pyflakes: ignore
    except ImportError as exc:
        raise ValueError("load_in_4bit (QLoRA) needs the bitsandbytes package (pip install bitsandbytes)") from exc


class _Trainer:
    """One `train` call as named steps, which `train` runs in this order:

    start (accelerator, precision) -> identify (data, max_length, run identity) -> [locked: the output
    lock] prepare_out (fresh, resume or done) -> load (model, LoRA, examples, optimizer) -> restore
    (a checkpoint, when resuming) -> loop (`optimizer_step`s, with a `checkpoint` every `save_every`
    steps; a signal: checkpoint, then `TrainingInterrupted`) -> finish (adapter, manifest).
    """

    def __init__(
        self,
        base: str,
        out: Path,
        opts: TrainOptions,
        *,
        progress: bool,
        revision: str | None,
        trust_remote_code: bool,
        on_step: Callable[[int, float], None] | None,
    ) -> None:
        self.base, self.out, self.opts = base, out, opts
        self.show_progress, self.revision, self.trust_remote_code = progress, revision, trust_remote_code
        self.on_step = on_step
        self.fmt = opts.prompt_format()
        self.t_start = time.time()
        self.progress = _Progress()
        self.guard: _SignalGuard | None = None  # set by `train`
        self.total: int | None = None
        self.identity_hash: str | None = None

    # -- start, identity, output directory --------------------------------------------------------------
    def start(self) -> None:
        """The accelerator (one process, or `accelerate launch`: DDP, FSDP, DeepSpeed) and the precision."""
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        opts = self.opts
        cuda = torch.cuda.is_available()
        self.precision = resolve_precision(opts.precision, cuda)
        if opts.load_in_4bit:
            _check_4bit(cuda)
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # accelerate keeps one process-wide state: a second train() in the same Python session with
            # another precision would be refused. A single process owns it, so start it afresh.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        self.tracker = StepTracker(opts.report_to, self.out)  # a missing tracker package fails here, first
        # cpu=True without CUDA: lets `accelerate launch`/torchrun run several CPU processes (gloo) too
        self.accelerator = Accelerator(
            gradient_accumulation_steps=opts.grad_accum,
            cpu=not cuda,
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision],
            **self.tracker.accelerator_kwargs(),
        )
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def identify(self, data: str | os.PathLike | Sequence[QARecord], specialty: str | Sequence[str] | None) -> None:
        """The questions, the base fingerprint, and the run identity: everything that defines the trained
        weights, hashed (before any model is loaded, so that bad input fails fast)."""
        from accelerate.utils import broadcast_object_list

        self.chosen, self.data_meta = load_selected(data, specialty)
        # as the data spells them: the manifest's specialty must name the data's ("cardiology" selects
        # "Cardiology", and the accuracy matrix then finds the adapter's own specialty)
        self.wanted = data_specialties(self.chosen, specialty)
        self.max_length = self._fit_max_length()
        fp: list[dict] = [base_identity(self.base, self.revision) if self.accelerator.is_main_process else {}]
        if self.world > 1:
            broadcast_object_list(fp)
        self.base_sha256 = fp[0]["base_weights_sha256"]  # a hub base's: read once loaded (`manifest`)
        ident_options = {k: v for k, v in asdict(self.opts).items() if k not in NON_IDENTITY}
        ident_options["precision"] = self.precision
        self.identity = {
            "base": str(self.base),
            "revision": self.revision,
            **fp[0],
            "data_sha256": self.data_meta["sha256"],
            "specialty": self.wanted,
            "n_examples": len(self.chosen),
            "options": ident_options,
            "world_size": self.world,
        }
        self.identity_hash = sha256_text(json.dumps(self.identity, sort_keys=True, default=str))

    def _fit_max_length(self) -> int:
        """`max_length` capped at the model's context (read from its config, before the weights load):
        a default that is larger is capped (logged); a larger value given explicitly is an error."""
        from transformers import AutoConfig

        from specprobe.core.models import load_tokenizer, model_context_length

        self.tokenizer = load_tokenizer(self.base, self.trust_remote_code)
        try:
            config = AutoConfig.from_pretrained(
                self.base, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the model configuration of {self.base!r}: {exc}") from exc
        self.context_length = model_context_length(types.SimpleNamespace(config=config), self.tokenizer)
        wanted = self.opts.max_length
        if wanted <= self.context_length:
            return wanted
        if self.opts.is_explicit("max_length"):
            raise TrainOptionError(
                "max_length",
                f"{wanted} is longer than the model's context of {self.context_length} "
                f"tokens ({self.base}); use at most {self.context_length}",
            )
        if self.accelerator.is_main_process:
            log.info(
                "max_length: using the model's context of %d tokens (the default %d is longer)",
                self.context_length,
                wanted,
            )
        return self.context_length

    @contextlib.contextmanager
    def locked(self):
        """Hold the output directory's lock (`specprobe.utils.locks.output_lock`) for the body; under
        several processes the main one holds it, and all of them raise if it is taken."""
        from specprobe.utils.locks import output_lock

        with contextlib.ExitStack() as stack:
            if self.world == 1:
                stack.enter_context(output_lock(self.out))
            else:
                from accelerate.utils import broadcast_object_list

                failure = [None]
                if self.accelerator.is_main_process:
                    try:
                        stack.enter_context(output_lock(self.out))
                    except (ValueError, OSError) as exc:
                        failure = [exc]
                broadcast_object_list(failure)
                if failure[0] is not None:
                    raise failure[0]
            yield

    def interrupted(self, signum: int, *, completed: bool = False) -> TrainingInterrupted:
        """The exception for a stop by `signum`, pointing at the newest checkpoint of this run on disk."""
        if completed:
            return TrainingInterrupted(signum, self.progress.step, self.total, self.out, None, completed=True)
        step, ck = 0, None
        for cand in reversed(_checkpoints(self.out) if self.out.is_dir() else []):
            try:
                state = read_json(cand / "trainer_state.json")
            except (OSError, ValueError):
                continue
            if self.identity_hash is None or state.get("identity_hash") == self.identity_hash:
                step, ck = int(state.get("step", 0)), cand
                if self.total is None:
                    self.total = state.get("total_steps")
                break
        return TrainingInterrupted(signum, step, self.total, self.out, ck)

    def prepare_out(self, overwrite: bool) -> tuple[str, Any]:
        """What the output directory holds (see `_inspect_out`); unless "done", it is made ready to write."""
        assert self.identity_hash is not None  # set by identify(), which runs first
        state, found = _inspect_out(self.out, self.identity, self.identity_hash, overwrite)
        if state == "done":
            return state, found
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if state == "overwrite":
                _clear_owned(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        return state, found

    # -- load ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Tokenizer and model, the LoRA layers, the training examples, optimizer and scheduler."""
        model = self._load_model()
        model = self._add_lora(model)
        self._build_examples()
        self._build_optimizer(model)

    def _load_model(self):
        import torch

        from specprobe.core.models import load_causal_lm, load_tokenizer

        opts, precision = self.opts, self.precision
        if getattr(self, "tokenizer", None) is None:
            self.tokenizer = load_tokenizer(self.base, self.trust_remote_code)
        base_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if opts.load_in_4bit:
            from peft import prepare_model_for_kbit_training
            from transformers import AutoModelForCausalLM, BitsAndBytesConfig

            qcfg = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=base_dtype if precision != "fp32" else torch.float32,
            )
            model = AutoModelForCausalLM.from_pretrained(
                self.base,
                quantization_config=qcfg,
                dtype=base_dtype,
                revision=self.revision,
                device_map={"": self.accelerator.local_process_index},
                trust_remote_code=self.trust_remote_code,
            )
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=opts.gradient_checkpointing)
        else:
            model = load_causal_lm(
                self.base,
                device=self.accelerator.device,
                dtype=base_dtype,
                revision=self.revision,
                trust_remote_code=self.trust_remote_code,
            )
            if opts.gradient_checkpointing:
                model.gradient_checkpointing_enable()
                model.enable_input_require_grads()
        model.config.use_cache = False
        self.base_commit = getattr(model.config, "_commit_hash", None) or self.identity.get("base_commit")
        return model

    def _add_lora(self, model):
        import torch
        from peft import LoraConfig, get_peft_model

        opts = self.opts
        self.targets = targets = list(opts.target_modules) if opts.target_modules else find_lora_targets(model)
        # peft annotates lora_alpha as int; it only divides by it (scaling = alpha / r), so a float is fine
        lcfg = LoraConfig(
            r=opts.rank,
            lora_alpha=opts.alpha,  # pyright: ignore[reportArgumentType]
            lora_dropout=opts.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
            fan_in_fan_out=uses_conv1d(model, targets),
        )
        torch.manual_seed(opts.seed)  # LoRA A init
        try:
            return get_peft_model(model, lcfg)
        except ValueError as exc:
            raise ValueError(f"cannot put LoRA on target modules {targets}: {exc}") from exc

    def _build_examples(self) -> None:
        opts, tok = self.opts, self.tokenizer
        self.examples, self.n_truncated = build_examples(tok, self.chosen, self.fmt, self.max_length, opts.append_eos)
        if self.n_truncated:
            log.warning(
                "%d of %d prompts were longer than max_length=%d and lost tokens from the left",
                self.n_truncated,
                len(self.examples),
                self.max_length,
            )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.group_size = opts.batch_size * self.world * opts.grad_accum
        self.steps_per_epoch = math.ceil(len(self.examples) / self.group_size)
        self.total = opts.max_steps or opts.epochs * self.steps_per_epoch

    def _build_optimizer(self, model) -> None:
        import torch
        from transformers import get_scheduler

        opts, total = self.opts, self.total
        assert total is not None  # set by _build_examples(), which runs first
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
        self.scheduler = get_scheduler(
            "constant_with_warmup" if opts.scheduler == "constant" else opts.scheduler,
            optimizer,
            num_warmup_steps=int(round(opts.warmup_ratio * total)),
            num_training_steps=total,
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.sharded:
            self.accelerator.register_for_checkpointing(self.scheduler)

    # -- restore, checkpoint ----------------------------------------------------------------------------------
    def restore(self, ck: Path) -> None:
        """Adapter weights, optimizer, scheduler and the loop state from the checkpoint directory `ck`."""
        import torch
        from peft import set_peft_model_state_dict

        tstate = read_json(ck / "trainer_state.json")
        if self.sharded:
            self.accelerator.load_state(str(ck / "accelerate"))
        else:
            from safetensors.torch import load_file

            set_peft_model_state_dict(
                self.accelerator.unwrap_model(self.model), load_file(str(ck / "adapter.safetensors"))
            )
            self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True))
            self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt", map_location="cpu", weights_only=True))
        step = tstate["step"]
        self.progress = _Progress(
            step, tstate["loss_curve"], tstate["wall_time_s"], tstate.get("resumed_from", []) + [step]
        )
        if self.accelerator.is_main_process:
            log.info("resuming %s from step %d of %d", self.out, step, self.total)

    def checkpoint(self, at_step: int, wall: float) -> None:
        """Write `checkpoints/.tmp-step-N`, then rename it to `step-N` (the commit point); keep the newest."""
        import torch

        acc, pr = self.accelerator, self.progress
        root = self.out / CHECKPOINTS
        tmp = root / f".tmp-step-{at_step:08d}"
        final = root / f"step-{at_step:08d}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if self.sharded:
            acc.save_state(str(tmp / "accelerate"))
        if acc.is_main_process:
            from peft import get_peft_model_state_dict
            from safetensors.torch import save_file

            if not self.sharded:
                sd = get_peft_model_state_dict(acc.unwrap_model(self.model))
                save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / "adapter.safetensors"))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            write_json(
                tmp / "trainer_state.json",
                {
                    "step": at_step,
                    "total_steps": self.total,
                    "identity": self.identity,
                    "identity_hash": self.identity_hash,
                    "loss_curve": pr.curve,
                    "wall_time_s": wall,
                    "resumed_from": pr.resumed_from,
                    "saved": now_iso(),
                },
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # the commit point
            for old in _checkpoints(self.out)[: -self.opts.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.tracker.flush()  # the steps up to here are committed: the tracker may see them (exactly once)
        acc.wait_for_everyone()

    # -- the loop ------------------------------------------------------------------------------------------
    def wall(self) -> float:
        """Training wall time so far, over all segments of a resumed run."""
        return self.progress.wall_before + time.time() - self.t_segment

    def loop(self) -> None:
        """Optimizer steps up to the total, checkpointing every `save_every` steps. A SIGINT/SIGTERM on
        any process (see `_SignalGuard`) stops it after the current step: checkpoint, then
        `TrainingInterrupted`."""
        from specprobe.utils.progress import progress

        pr, total, guard = self.progress, self.total, self.guard
        assert total is not None  # set by load()
        self.model.train()
        self.t_segment = time.time()
        self.tracker.start(self.accelerator, self.manifest_options(), resumed=bool(pr.resumed_from))
        try:
            check_save_steps(self.opts.save_steps, total)
        except ValueError as exc:
            raise TrainOptionError("save_steps", str(exc)) from None
        if pr.step == 0 and 0 in (self.opts.save_steps or []):
            self.snapshot(0)
        bar = progress(
            total,
            f"finetune {', '.join(self.wanted) if self.wanted else 'all'}",
            "step",
            enabled=self.show_progress and self.accelerator.is_local_main_process,
            initial=pr.step,
        )
        try:
            while pr.step < total:
                epoch, k = divmod(pr.step, self.steps_per_epoch)
                t_step = time.perf_counter()
                loss, lr = self.optimizer_step(epoch, k)
                pr.step += 1
                pr.curve.append(
                    {"step": pr.step, "epoch": epoch + (k + 1) / self.steps_per_epoch, "loss": loss, "lr": lr}
                )
                seconds = max(time.perf_counter() - t_step, 1e-9)
                self.tracker.record(pr.step, loss, lr, self.grad_norm, self.step_tokens * self.world / seconds)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=f"{epoch + 1}/{math.ceil(total / self.steps_per_epoch)}")
                if self.on_step is not None:
                    self.on_step(pr.step, loss)
                if pr.step in (self.opts.save_steps or []):
                    self.snapshot(pr.step)
                signum = self._stop_anywhere(guard.signum if guard is not None else 0)
                wall = self.wall()
                if signum and pr.step < total:
                    self.checkpoint(pr.step, wall)
                    raise self.interrupted(signum)
                if pr.step % self.opts.save_every == 0 and pr.step < total:
                    self.checkpoint(pr.step, wall)
        finally:
            bar.close()

    def snapshot(self, step: int) -> None:
        """Keep the adapter as it is after `step` optimizer steps, as a PEFT folder (finetune/snapshots.py)."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model) if self.sharded else None
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_snapshot(acc.unwrap_model(self.model), self.out, step, state_dict)
        acc.wait_for_everyone()

    def _stop_anywhere(self, signum: int) -> int:
        """The signal any process was stopped by (the largest number), or 0."""
        if self.world == 1:
            return signum
        import torch

        t = torch.tensor([float(signum)], device=self.accelerator.device)
        return int(cast(torch.Tensor, self.accelerator.reduce(t, "max")).item())

    def optimizer_step(self, epoch: int, k: int) -> tuple[float, float]:
        """Step k of `epoch` over its group of examples (all micro-batches, all processes), dropout seeded
        from (seed, step, process). Returns the mean loss per target token and the learning rate used."""
        import torch

        acc, opts, world, rank = self.accelerator, self.opts, self.world, self.rank
        group = group_indices(len(self.examples), opts.seed, epoch, k, self.group_size)
        global_tokens = sum(len(self.examples[i].positions) for i in group)
        self.step_tokens = sum(len(self.examples[i].ids) for i in group) / world  # input tokens, per process
        self.grad_norm: float | None = None
        torch.manual_seed(step_seed(opts.seed, self.progress.step, rank))
        local_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        for j in range(opts.grad_accum):
            lo = (j * world + rank) * opts.batch_size
            local_sum += self._micro_step([self.examples[i] for i in group[lo : lo + opts.batch_size]], global_tokens)
        lr = cast(float, self.scheduler.get_last_lr()[0])  # a tensor only when the optimizer's lr is one
        self.scheduler.step()
        loss = (
            cast(torch.Tensor, acc.reduce(local_sum, "sum")).item() if world > 1 else local_sum.item()
        ) / global_tokens
        return loss, lr

    def _micro_step(self, batch: Sequence[Example], global_tokens: int):
        """Forward and backward of one micro-batch (the optimizer steps on the group's last one); the
        summed token loss, detached, as float64."""
        import torch

        acc, opts = self.accelerator, self.opts
        ids, mask, labels = collate(batch, self.pad_id)
        ids, mask, labels = ids.to(acc.device), mask.to(acc.device), labels.to(acc.device)
        with acc.accumulate(self.model):
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            shift = labels[:, 1:]
            sel = shift != -100
            rows = logits[:, :-1][sel].float()
            tok_loss = torch.nn.functional.cross_entropy(rows, shift[sel], reduction="sum")
            acc.backward(tok_loss * (self.world * opts.grad_accum / global_tokens))
            if acc.sync_gradients and opts.max_grad_norm:
                norm = acc.clip_grad_norm_(self.params, opts.max_grad_norm)
                self.grad_norm = float(norm) if norm is not None and self.tracker.active else None
            elif acc.sync_gradients and self.tracker.active:  # reading the norm changes nothing
                grads = [p.grad for p in self.params if p.grad is not None]
                self.grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else None
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return tok_loss.detach().double()

    # -- finish ----------------------------------------------------------------------------------------------
    def manifest_options(self) -> dict:
        """The run's options as recorded (the manifest's "options"; a tracker's configuration)."""
        return {
            **asdict(self.opts),
            "precision": self.precision,
            "target_modules": self.targets,
            "max_length": self.max_length,
        }

    def manifest(self, wall: float) -> dict:
        """Everything about the finished run (manifest.json; `tokenizer` is added when it is written)."""
        opts, pr = self.opts, self.progress
        return {
            "specprobe_finetune": 1,
            "identity_hash": self.identity_hash,
            "identity": self.identity,
            "base": str(self.base),
            "revision": self.revision,
            "base_commit": self.base_commit,
            "base_weights_sha256": self.base_sha256 or base_fingerprint(str(self.base), self.revision),
            "data": self.data_meta,
            "filter": {
                "specialty": self.wanted if self.wanted else "all",
                "n_examples": len(self.chosen),
                "specialty_counts": dict(specialty_counts(self.chosen)),
                "truncated_prompts": self.n_truncated,
            },
            "specialty": self.wanted,
            "options": self.manifest_options(),
            "context_length": self.context_length,
            "prompt": self.fmt.to_dict(),
            "seed": opts.seed,
            "world_size": self.world,
            "distributed_type": str(self.accelerator.distributed_type),
            "steps": pr.step,
            "steps_per_epoch": self.steps_per_epoch,
            "examples_per_step": self.group_size,
            "n_target_tokens": sum(len(e.positions) for e in self.examples),
            "loss_curve": pr.curve,
            "final_loss": pr.curve[-1]["loss"] if pr.curve else None,
            "wall_time_s": wall,
            "total_time_s": pr.wall_before + time.time() - self.t_start,
            "resumed_from": pr.resumed_from,
            "versions": library_versions(EXTRA_VERSIONS),
            "created": now_iso(),
        }

    def finish(self, wall: float) -> TrainRun:
        """Write the final adapter, then the manifest (written last: its presence means "finished"),
        then drop the checkpoints."""
        acc, out = self.accelerator, self.out
        state_dict = acc.get_state_dict(self.model) if self.sharded else None
        manifest = self.manifest(wall)
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = out / ".final-tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            acc.unwrap_model(self.model).save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
            manifest["tokenizer"] = getattr(self.tokenizer, "name_or_path", None)
            manifest["snapshots"] = snapshot_entries(out, self.opts.save_steps)
            # a run killed from here to the manifest leaves adapter files but no manifest: the marker
            # lets the rerun know them for its own (and train again) when no checkpoint is left
            write_json(out / FINISHING, {"identity_hash": self.identity_hash})
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            tmp.rmdir()
            write_json(out / MANIFEST, json.loads(json.dumps(manifest, default=str)))
            self.tracker.flush()  # after the manifest: a rerun of a finished run logs nothing again
            (out / FINISHING).unlink()
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            log.info(
                "wrote %s (%d steps, final loss %.4f, %.1f s)",
                out,
                self.progress.step,
                manifest["final_loss"] or math.nan,
                wall,
            )
        acc.wait_for_everyone()
        return TrainRun(out, manifest, True)


# -- the entry point -------------------------------------------------------------------------------------
def train(
    base: str,
    data: str | os.PathLike | Sequence[QARecord],
    specialty: str | Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
    trust_remote_code: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    **options: Any,
) -> TrainRun:
    """Fine-tune a LoRA adapter on the questions of `specialty` (a name, a list, or None/"all").

    `base`: a hub id or local model directory. `data`: a QA file (S-MedQA JSON) or `QARecord`s.
    `out`: the adapter directory (PEFT format plus manifest.json). `options`: see `TrainOptions`
    (checked first; `max_length` is capped at the model's context, and a larger explicit value is an error).
    Re-running the same call resumes from the last checkpoint; a finished run is returned as is.
    `on_step(step, loss)` is called after every optimizer step (on every process).

    Only a finished run is returned. SIGINT/SIGTERM stop training after the current step and a
    checkpoint, then raise `TrainingInterrupted` (a KeyboardInterrupt; see there). `out` is locked for
    the whole call (`specprobe.utils.locks.output_lock`): a second run into it gets `OutputLockedError`.
    """
    if out is None:
        raise ValueError("out= (the adapter output directory) is required")
    opts = TrainOptions.from_kwargs(options)
    trainer = _Trainer(
        base,
        Path(out),
        opts,
        progress=progress,
        revision=revision,
        trust_remote_code=trust_remote_code,
        on_step=on_step,
    )
    with _SignalGuard(trainer.interrupted) as guard:
        trainer.guard = guard
        trainer.start()
        trainer.identify(data, specialty)
        with trainer.locked():
            state, found = trainer.prepare_out(overwrite)
            if state == "done":
                log.info("%s already holds this finished run; nothing to do", trainer.out)
                return TrainRun(trainer.out, found, True)
            trainer.load()
            if state == "resume":
                trainer.restore(found)
            guard.deferring = True  # from here a signal stops after the current step, with a checkpoint
            try:
                trainer.loop()
                run = trainer.finish(trainer.wall())
            finally:
                trainer.tracker.end()  # steps not yet handed over are dropped: a rerun logs them
            guard.deferring = False
        if guard.signum:  # it came while the final adapter was written: that was finished first
            raise trainer.interrupted(guard.signum, completed=True)
    return run
