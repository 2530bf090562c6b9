"""The training options (`TrainOptions`), checked when made, and the errors that name a wrong one.

Apart from the loop so that the CLI, a config file or a test can check options before anything loads;
`resolve_precision` and `check_4bit` check the options that depend on the machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

from specprobe.finetune.prompts import PromptFormat
from specprobe.finetune.snapshots import parse_save_steps
from specprobe.finetune.trackers import REPORT_TO

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Options that do not change the trained weights (not part of the run identity): a rerun that changes
# one resumes (gradient checkpointing recomputes the same activations: bit-identical on CPU, tested).
NON_IDENTITY = ("save_every", "keep_checkpoints", "report_to", "save_steps", "gradient_checkpointing")


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


_POSITIVE_INTS = ("rank", "epochs", "batch_size", "grad_accum", "max_length", "save_every", "keep_checkpoints")
_BOOLS = ("load_in_4bit", "gradient_checkpointing", "append_eos")
_STRINGS = ("template", "option_format", "continuation", "scheduler", "precision", "report_to")


def _kind(value: Any) -> str:
    """A wrong value as an error message shows it: its repr and its type."""
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
        """The prompt these options train on (template, option format, continuation)."""
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


#: `finetune.train` keyword arguments that a [train] table may hold beside the TrainOptions, with their defaults
TRAIN_ARGUMENT_DEFAULTS: dict[str, Any] = {"revision": None, "trust_remote_code": False}


def without_defaults(options: Mapping[str, Any]) -> dict:
    """The given options (a [train] table) less those whose value, as `TrainOptions` takes it, is the
    default: an option set to its default trains the same weights as one left out, so cache keys built
    from this agree, and the keys of tables that leave options out are unchanged. Other values are kept as given."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)} | TRAIN_ARGUMENT_DEFAULTS
    fields = {k: v for k, v in options.items() if k in defaults and k not in TRAIN_ARGUMENT_DEFAULTS}
    try:
        effective = {**options, **asdict(TrainOptions(**fields))}
    except (TrainOptionError, TypeError):  # checked where the options are used; here only the given values
        effective = dict(options)
    return {k: v for k, v in options.items() if k not in defaults or effective[k] != defaults[k]}


# -- options that depend on the machine ------------------------------------------------------------------
def resolve_precision(precision: str, cuda: bool) -> str:
    """The precision to train in: "auto" picks bf16 (fp16 where unsupported) on a GPU, fp32 on a CPU."""
    import torch

    if precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not cuda:
        raise ValueError("precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
    return precision  # bf16 also runs on a CPU (autocast), slowly, but it exercises the GPU recipe


def check_4bit(cuda: bool) -> None:
    """load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes: refused before any model loads."""
    if not cuda:
        raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401  # pyflakes: ignore
    except ImportError as exc:
        raise ValueError("load_in_4bit (QLoRA) needs the bitsandbytes package (pip install bitsandbytes)") from exc
