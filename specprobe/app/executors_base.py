"""What every executor shares: the `Step` (one stage to run), the errors, and `LocalExecutor`, which calls
the stages one after another in this process (the default); `executors_ray.RayExecutor` runs each as a
Ray task. `executors.make_executor` picks one by name.

The experiment declares its stages once, as a list of `Step`s in dependency order (`experiment.plan_steps`):
each step is a stage function, its fixed inputs, and the steps whose outputs it reads (`needs`). Both
executors run that same list, so the stage folders, their keys and hence caching and resume are the same
under both; an executor only decides where and when each function runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EXECUTORS",
    "BAD_INPUT",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "StageError",
    "StageInputError",
    "Step",
    "check_order",
    "resolve_needs",
]

#: the names `--executor` accepts
EXECUTORS = ("local", "ray")
#: the exception types that mean bad input (the CLI's one-line errors with exit 2: `app.cli.USER_ERRORS`)
BAD_INPUT = (ValueError, TypeError, OSError, LookupError)

#: a step's `needs`: keyword -> the step whose output it reads, or name -> step for a mapping of outputs
Needs = Mapping[str, "str | Mapping[str, str]"]


class ExecutorError(ValueError):
    """An executor cannot be used as asked (unknown name, Ray not installed, an option it does not take)."""


class StageInputError(ValueError):
    """A stage run by a remote executor failed on bad input; the message starts with the stage's name."""


class StageError(RuntimeError):
    """A stage run by a remote executor failed for another reason; the message starts with the stage's name."""


@dataclass(frozen=True)
class Step:
    """One stage to run: `fn(**kwargs, **inputs)`, where `inputs` are the outputs of the steps in `needs`.

    `name` is the stage's name (as in its folder and in error messages); `kind` says which resources it
    asks for under Ray (a key of the `[resources]` table: lexicon, train, accuracy, compare, layers, report).
    `reuse_older`: the kinds of stage whose finished folders from another specprobe version or code it
    may reuse (`stages.reusing_older`; the config's `reuse_older`).
    """

    name: str
    kind: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    needs: Needs = field(default_factory=dict)
    reuse_older: tuple[str, ...] = ()

    def call(self, inputs: Mapping[str, Any]) -> Any:
        """Run the stage function on its fixed inputs and `inputs` (the outputs `needs` names, resolved),
        under its cache policy; every executor runs a step through this."""
        from specprobe.app.stages import reusing_older

        with reusing_older(self.reuse_older):
            return self.fn(**self.kwargs, **inputs)

    def dependencies(self) -> list[str]:
        """The names of the steps this one reads, each once, in the order `needs` gives them."""
        names: list[str] = []
        for need in self.needs.values():
            for name in [need] if isinstance(need, str) else need.values():
                if name not in names:
                    names.append(name)
        return names


def resolve_needs(needs: Needs, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments `needs` stands for, given the outputs of the steps it names."""
    return {
        key: outputs[need] if isinstance(need, str) else {label: outputs[n] for label, n in need.items()}
        for key, need in needs.items()
    }


def check_order(steps: Sequence[Step]) -> None:
    """Raise `ValueError` unless every step's dependencies come before it and names are unique."""
    seen: set[str] = set()
    for step in steps:
        missing = [d for d in step.dependencies() if d not in seen]
        if missing:
            raise ValueError(f"step {step.name!r} reads {missing}, which do not run before it")
        if step.name in seen:
            raise ValueError(f"two steps are named {step.name!r}")
        seen.add(step.name)


class Executor(Protocol):
    """What `run_experiment` needs of an executor: `run(steps)` -> step name -> output, and whether the
    steps run in this process (`in_process`: they may share loaded models)."""

    name: str
    in_process: bool

    def run(self, steps: Sequence[Step]) -> dict[str, Any]: ...


class LocalExecutor:
    """Runs the steps one after another in this process, in the order given (today's behaviour).

    `in_process` tells the plan that steps may share loaded models and that the accuracy of all adapters
    is measured in one stage (the base loads once).
    """

    name = "local"
    in_process = True

    def run(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Run every step; returns step name -> its output. Errors propagate unchanged."""
        check_order(steps)
        outputs: dict[str, Any] = {}
        for step in steps:
            outputs[step.name] = step.call(resolve_needs(step.needs, outputs))
        return outputs
