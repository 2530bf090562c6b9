"""`ExperimentConfig`: what defines a run, validated when it is made or loaded (a typed schema, pydantic).

Validation only checks: the values are kept exactly as given (an int learning rate stays an int), so
the stage keys hashed from them, and the caches keyed on those, do not change.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from specprobe.terms.records import first_repeat

#: the TOML tables whose keys are options passed on to `finetune.train` and to `compare`/`layers`
TABLES = ("train", "compare")
#: the keys of the [resources] table: the kinds of stage a remote executor asks resources for
RESOURCE_KINDS = ("lexicon", "train", "accuracy", "compare", "layers", "report")
#: the analyses of issue 12 the runner can add (the `analyses` key); trajectory needs train.save_steps
Analysis = Literal["seen_unseen", "accuracy_link", "trajectory", "general_text"]
ANALYSES: tuple[str, ...] = get_args(Analysis)
#: the kinds of stage the `reuse_older` key may name: their finished folders from another specprobe
#: version or code, with the same inputs, are reused rather than redone (`stages.reusing_older`)
ReusableStage = Literal[
    "lexicon", "adapter", "accuracy", "compare", "layers", "seen-unseen", "trajectory", "general-text", "accuracy_link"
]
REUSABLE_STAGES: tuple[str, ...] = get_args(ReusableStage)
#: the demo's adapter snapshots, as fractions of its training steps (for the trajectory analysis)
DEMO_SNAPSHOTS = (0.25, 0.5)


class ConfigError(ValueError):
    """An invalid experiment configuration; the message is one line naming the source and the key."""


def builtin_model() -> Path:
    """The directory of the tiny built-in demo model."""
    return Path(str(resources.files("specprobe").joinpath("data/demo/model")))


def builtin_questions() -> Path:
    """The built-in demo questions (S-MedQA JSON)."""
    return Path(str(resources.files("specprobe").joinpath("data/demo/questions.json")))


# -- the schema ------------------------------------------------------------------------------------
_STRICT = ConfigDict(strict=True, extra="forbid")


def _optional(**constraints: Any) -> Any:
    """A key that may be left out: the schema only checks what is given; defaults live elsewhere."""
    return Field(None, **constraints)


class TrainSchema(BaseModel):
    """The keys of the [train] table: `finetune.train` keyword options (defaults: `finetune.TrainOptions`)."""

    model_config = _STRICT

    rank: int = _optional(gt=0)
    alpha: float = _optional()
    dropout: float = _optional(ge=0, lt=1)
    target_modules: list[str] | str | None = _optional()  # a list, or a comma-separated string
    learning_rate: float = _optional(gt=0)
    scheduler: Literal["linear", "cosine", "constant"] = _optional()
    warmup_ratio: float = _optional(ge=0, lt=1)
    weight_decay: float = _optional()
    max_grad_norm: float | None = _optional()
    epochs: int = _optional(gt=0)
    max_steps: int | None = _optional(gt=0)
    batch_size: int = _optional(gt=0)
    grad_accum: int = _optional(gt=0)
    max_length: int = _optional(gt=0)
    seed: int = _optional(ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _optional()
    load_in_4bit: bool = _optional()
    gradient_checkpointing: bool = _optional()
    template: str = _optional()
    option_format: str = _optional()
    continuation: Literal["letter", "text"] = _optional()
    append_eos: bool = _optional()
    save_every: int = _optional(gt=0)
    keep_checkpoints: int = _optional(gt=0)
    save_steps: list[int] | str | None = _optional()  # adapter snapshots after these steps: a list, or "10,20,40"
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = _optional()
    revision: str | None = _optional()
    trust_remote_code: bool = _optional()


class CompareSchema(BaseModel):
    """The keys of the [compare] table: options that `compare` and `layers` both take (defaults: theirs)."""

    model_config = _STRICT

    controls: Literal["auto"] | list[str] | None = _optional()  # "auto" or a list of control words
    n_controls: int | None = _optional(gt=0)
    template: str = _optional()
    add_bos: bool | None = _optional()
    batch_size: int = _optional(gt=0)
    max_length: int | None = _optional(gt=0)
    long_texts: Literal["window", "error"] = _optional()
    device: str | None = _optional()
    dtype: str | None = _optional()


class ResourceSchema(BaseModel):
    """What one kind of stage asks for under `--executor ray` (default: one CPU, no GPU)."""

    model_config = _STRICT

    cpus: float = _optional(ge=0)
    gpus: float = _optional(ge=0)
    memory_gb: float = _optional(gt=0)
    custom: dict[str, float] = _optional()  # Ray custom resources, e.g. {a100 = 1}

    @field_validator("gpus")
    @classmethod
    def _whole_gpus_above_one(cls, gpus: float | None) -> float | None:
        """Ray shares one GPU in fractions but gives several only whole (1.5 fails when the task is submitted)."""
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            raise PydanticCustomError("whole_gpus", "must be a whole number when above 1")  # _PROBLEMS words it
        return gpus


class ResourcesSchema(BaseModel):
    """The [resources] table: per kind of stage (`RESOURCE_KINDS`), what its Ray tasks ask for.

    Where stages run does not change what they compute, so these keys are in no stage's key."""

    model_config = _STRICT

    lexicon: ResourceSchema = _optional()
    train: ResourceSchema = _optional()
    accuracy: ResourceSchema = _optional()
    compare: ResourceSchema = _optional()
    layers: ResourceSchema = _optional()
    report: ResourceSchema = _optional()


class ConfigSchema(BaseModel):
    """The top-level keys of an experiment configuration (defaults: `ExperimentConfig`)."""

    model_config = _STRICT

    base: str = _optional()
    data: str = _optional()
    mapping: dict[str, Any] | None = _optional()  # how to read `data` (`load_qa`'s mapping=), a table
    out: str = _optional(min_length=1)
    specialties: list[str] | None = _optional(min_length=1)  # left out: every specialty; [] is an error
    include_all: bool = _optional()
    test_fraction: float = _optional(gt=0, lt=1)
    seed: int = _optional(ge=0)
    train: TrainSchema = _optional()
    compare: CompareSchema = _optional()
    max_texts: int | None = _optional(gt=0)
    layers: bool = _optional()
    analyses: list[Analysis] | None = _optional()
    trajectory_adapters: list[str] | None = _optional(min_length=1)
    reuse_older: list[ReusableStage] | None = _optional()
    resources: ResourcesSchema = _optional()


_SCHEMAS: dict[str, type[BaseModel]] = {
    "": ConfigSchema,
    "train": TrainSchema,
    "compare": CompareSchema,
    "resources": ResourcesSchema,
    **{f"resources.{kind}": ResourceSchema for kind in RESOURCE_KINDS},
}

_PROBLEMS = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "literal_error": "must be {expected}",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "none_required": "must be left out",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty (leave the key out for its default)",
    "whole_gpus": "must be a whole number when above 1 (Ray splits one GPU into fractions, not several)",
}


def _key(loc: tuple) -> str:
    """The dotted key an error location names (`train.max_steps`, `specialties[1]`), without union tags."""
    parts, rest = [str(loc[0])], list(loc[1:])
    if parts[0] in TABLES and rest:
        parts.append(str(rest.pop(0)))
    if parts[0] == "resources":  # resources.<kind>.<key>
        while rest and len(parts) < 3 and isinstance(rest[0], str):
            parts.append(str(rest.pop(0)))
    index = next((r for r in rest if isinstance(r, int)), None)
    return ".".join(parts) + (f"[{index}]" if index is not None else "")


def _problem(error: ErrorDetails) -> str:
    """A short phrase for one pydantic error ("must be an integer")."""
    kind = error["type"]
    if kind == "extra_forbidden":
        loc = error["loc"]
        table = ".".join(str(part) for part in loc[:-1])
        return f"unknown key; valid {table + ' ' if table else ''}keys: {sorted(_SCHEMAS[table].model_fields)}"
    template = _PROBLEMS.get(kind)
    return template.format(**error.get("ctx", {})) if template else error["msg"].lower()


def describe(exc: ValidationError, source: str) -> str:
    """One line for a validation error: the source, the first bad key, what it must be, what it got."""
    errors = exc.errors(include_url=False)
    key = _key(errors[0]["loc"])
    same = [e for e in errors if _key(e["loc"]) == key]  # a union gives one error per alternative
    phrases = list(dict.fromkeys(_problem(e) for e in same))
    problem = phrases[0] + "".join(" or " + p.removeprefix("must be ") for p in phrases[1:])
    got = "" if same[0]["type"] == "extra_forbidden" else f", got {same[0]['input']!r}"
    more = len({_key(e["loc"]) for e in errors}) - 1
    return f"{source}: {key}: {problem}{got}" + (f" (and {more} more invalid key(s))" if more else "")


def validate_config(values: dict[str, Any], source: str) -> None:
    """Check every key and value of a configuration; raises `ConfigError` naming `source` and the key."""
    try:
        ConfigSchema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from None


def check_train_options(train: dict, source: str) -> None:
    """The [train] options as training itself checks them (a negative weight_decay, a template without
    {question}, save_steps that do not parse, ...): when the config is read, not when the first adapter
    stage starts; raises `ConfigError` naming `source` and the key."""
    from specprobe.finetune.train_options import TrainOptionError, TrainOptions

    try:
        TrainOptions.from_kwargs({k: v for k, v in train.items() if k not in ("revision", "trust_remote_code")})
    except TrainOptionError as exc:
        problem = str(exc).removeprefix(f"training option {exc.field}: ")
        raise ConfigError(f"{source}: train.{exc.field}: {problem}") from None


def check_listed_once(config: ExperimentConfig, source: str) -> None:
    """A specialty or trajectory adapter named twice is a mistake (two stages would share one folder name)."""
    for name in ("specialties", "trajectory_adapters"):
        values = getattr(config, name) or []
        if (repeat := first_repeat(values)) is not None:
            raise ConfigError(f"{source}: {name}: {repeat[2]!r} is listed twice")


def check_out_folder(out: str, source: str) -> None:
    """`out` can be a folder: neither it nor a folder above it is a file (that was "[Errno 20] Not a
    directory" from the lock, naming no key)."""
    path = Path(out).expanduser()
    for folder in (path, *path.parents):
        if folder.is_file():
            what = "is a file" if folder == path else f"is under {folder}, a file"
            raise ConfigError(f"{source}: out: {out} {what}, not a folder")
        if folder.is_dir():
            return


def check_data_mapping(mapping: dict | None, source: str) -> None:
    """The mapping's keys and value types (`terms.formats.check_mapping`): a misspelt key is an error when the
    config is read, not a default column read in its place."""
    from specprobe.terms.formats import check_mapping
    from specprobe.terms.records import DataError

    try:
        check_mapping(mapping, "mapping")
    except DataError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_control_words(compare: dict, source: str) -> None:
    """compare.controls as a list: words, not blank strings (["", ""] ran without control words while the
    command line refuses a --controls file without words); an empty list is "no control words"."""
    words = compare.get("controls")
    if isinstance(words, list):
        blank = [i for i, w in enumerate(words) if not str(w).strip()]
        if blank:
            raise ConfigError(
                f"{source}: compare.controls[{blank[0]}]: an empty control word; give words, or [] for none"
            )


def check_device_and_dtype(compare: dict, source: str) -> None:
    """compare.device and compare.dtype spelled as the probes take them: a typo is an error now, not
    after every adapter is trained. Whether the device exists is checked where the stage runs."""
    device, dtype = compare.get("device"), compare.get("dtype")
    if device not in (None, "auto", "shard"):
        import torch

        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(
                f"{source}: compare.device: unknown device {device!r}; use auto, cpu, cuda, cuda:N, mps or shard"
            ) from None
    if dtype not in (None, "auto"):
        import torch

        from specprobe.core.models import resolve_dtype

        try:
            resolve_dtype(dtype, torch.device("cpu"))
        except ValueError as exc:
            raise ConfigError(f"{source}: compare.dtype: {exc}") from None


@dataclass
class ExperimentConfig:
    """Everything that defines a run; every field goes into the stage hashes that depend on it."""

    base: str = ""  # empty: the built-in demo model
    data: str = ""  # empty: the built-in demo questions
    mapping: dict | None = None  # how to read `data` (columns, MedMCQA's cop_base); in the split's key when set
    out: str = "specprobe-demo"
    specialties: list[str] | None = None  # None: every specialty in the data
    include_all: bool = True  # also one adapter trained on all specialties
    test_fraction: float = 0.3
    seed: int = 0
    train: dict = field(
        default_factory=lambda: {
            "max_steps": 60,
            "batch_size": 8,
            "learning_rate": 2e-3,
            "rank": 8,
            "continuation": "text",
        }
    )
    compare: dict = field(default_factory=lambda: {"batch_size": 16})
    max_texts: int | None = None  # cap on the test texts compare, layers and trajectory score (None: all)
    layers: bool = True  # logit-lens layer views for every adapter
    analyses: list[str] | None = None  # of ANALYSES; None: all but trajectory, and trajectory with train.save_steps
    trajectory_adapters: list[str] | None = None  # the adapters a trajectory is computed for (None: all)
    reuse_older: list[str] | None = None  # of REUSABLE_STAGES: reuse their results from another version or code
    resources: dict = field(default_factory=dict)  # [resources]: what each kind of stage asks of Ray

    #: the fields that say where stages run, not what they compute: not recorded with the results
    PLACEMENT = ("resources",)

    def __post_init__(self) -> None:
        for name in ("base", "data", "out"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        for name in ("specialties", "analyses", "trajectory_adapters", "reuse_older"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self.validate()

    def validate(self, source: str = "experiment config") -> None:
        """Check every field (also after fields were changed); raises `ConfigError` naming the key."""
        validate_config(asdict(self), source)
        check_listed_once(self, source)
        if "trajectory" in (self.analyses or []) and not self.train.get("save_steps"):
            raise ConfigError(f"{source}: analyses: 'trajectory' needs adapter snapshots; set train.save_steps")
        check_train_options(self.train, source)
        check_device_and_dtype(self.compare, source)
        check_control_words(self.compare, source)
        check_data_mapping(self.mapping, source)
        check_out_folder(self.out, source)

    def chosen_analyses(self) -> list[str]:
        """The analyses to run, in `ANALYSES` order: `analyses`, or by default every one but trajectory,
        and trajectory too when train.save_steps asks for snapshots."""
        if self.analyses is not None:
            return [a for a in ANALYSES if a in self.analyses]
        return [a for a in ANALYSES if a != "trajectory" or self.train.get("save_steps")]

    def recorded(self) -> dict:
        """The config as recorded in experiment.json: every field but those that only say where the
        stages run (`PLACEMENT`), so that every executor writes the same record."""
        return {k: v for k, v in asdict(self).items() if k not in self.PLACEMENT}

    def resolved(self) -> ExperimentConfig:
        """A validated copy with the built-in model and questions filled in where none are given (a mapping
        without data is an error: it would be applied to the built-in questions, which need none)."""
        if self.mapping and not self.data:
            raise ConfigError(
                "experiment config: mapping: says how to read data, but no data is given (the built-in questions "
                "need none); set data, or leave mapping out"
            )
        c = ExperimentConfig(**asdict(self))
        c.base = c.base or str(builtin_model())
        c.data = c.data or str(builtin_questions())
        return c

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> ExperimentConfig:
        """Load and validate an experiment TOML file; errors name the file and the key."""
        import tomllib

        from specprobe.utils.io import read_bytes

        if not Path(path).exists():
            raise FileNotFoundError(f"experiment file not found: {path}")
        try:
            raw = tomllib.loads(read_bytes(path).decode("utf-8"))  # a folder: an error naming it
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid TOML file: {exc}") from None
        if not raw:  # an empty (or wrong) file would run the whole demo study into ./specprobe-demo
            raise ConfigError(
                f"{path}: no keys; an experiment file sets at least base, data or out "
                "(`specprobe demo` runs the built-in study)"
            )
        validate_config(raw, str(path))
        try:
            return cls(**raw)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("experiment config", str(path), 1)) from None


def demo_save_steps(max_steps: int) -> list[int]:
    """The demo's snapshot steps for a run of `max_steps` (`DEMO_SNAPSHOTS` of it; at least step 1)."""
    return sorted({max(1, round(max_steps * f)) for f in DEMO_SNAPSHOTS} - {max_steps}) or [max(1, max_steps // 2)]
