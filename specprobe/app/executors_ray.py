"""`RayExecutor`: every experiment stage as a Ray task (`ray.remote`), with the resources its kind asks for
in the `[resources]` table, and the outputs of the stages it reads passed as `ObjectRef` arguments, so
Ray starts it when they are ready and runs independent stages side by side.

Imported only when Ray is installed (`executors.make_executor` checks). The tasks write into the same
output folder as the driver, which must therefore be on a filesystem every node shares; the stage
folders and their keys are the local executor's, so caching and resume work the same.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from specprobe.app.executors_base import (
    BAD_INPUT,
    ExecutorError,
    StageError,
    StageInputError,
    Step,
    check_order,
    resolve_needs,
)

__all__ = ["RayExecutor", "StageFailure", "check_reachable", "task_options", "unschedulable"]

log = logging.getLogger(__name__)
WAIT_S = 1.0  # how long one `ray.wait` blocks, so that Ctrl-C and SIGTERM reach the driver promptly
#: how long the driver waits for a cluster's address to answer before refusing (`ray.init` retried > 400 s)
CONNECT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_ENV = "SPECPROBE_RAY_CONNECT_TIMEOUT_S"


class StageFailure(Exception):
    """What a failed stage's task sends back: the stage's name, the error's type and its one-line message,
    and whether it was bad input (so the driver raises `StageInputError` or `StageError`)."""

    def __init__(self, stage: str, error: str, message: str, bad_input: bool):
        super().__init__(
            f"stage {stage} failed: {message}" if bad_input else f"stage {stage} failed: {error}: {message}"
        )
        self.stage, self.error, self.message, self.bad_input = stage, error, message, bad_input

    def __reduce__(self):
        return type(self), (self.stage, self.error, self.message, self.bad_input)


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (KeyError quotes its key)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def run_step(step: Step, deps: Sequence[str], *values: Any) -> Any:
    """The body of every task: the step on its dependencies' outputs (`values`, resolved by Ray from the
    ObjectRefs, in the order of `deps`). An error comes back as a `StageFailure`."""
    name = step.name
    try:
        return step.call(resolve_needs(step.needs, dict(zip(deps, values))))
    except Exception as exc:
        raise StageFailure(name, type(exc).__name__, _one_line(exc), isinstance(exc, BAD_INPUT)) from None


def task_options(step: Step, resources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The `.options(...)` of a step's task: its name, and the CPUs, GPUs and custom resources its kind
    asks for in the `[resources]` table (default: one CPU, no GPU)."""
    spec = resources.get(step.kind) or {}
    options: dict[str, Any] = {
        "name": step.name,
        "num_cpus": spec.get("cpus", 1),
        "num_gpus": spec.get("gpus", 0),
    }
    if spec.get("memory_gb"):
        options["memory"] = int(spec["memory_gb"] * 1024**3)
    if spec.get("custom"):
        options["resources"] = dict(spec["custom"])
    return options


def _demand(options: Mapping[str, Any]) -> dict[str, float]:
    """The Ray resources a task's `.options(...)` ask of one node ("CPU", "GPU", "memory", custom)."""
    demand = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], "memory": options.get("memory", 0)}
    demand.update(options.get("resources", {}))
    return {name: float(amount) for name, amount in demand.items() if amount}


def unschedulable(steps: Sequence[Step], resources: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What no live node of the connected Ray cluster can give a step (Ray would keep it pending for
    ever): one line naming the first such stage, its `[resources]` kind and the most any node has of
    each resource it asks for; None if every step fits on some node."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for step in steps:
        demand = _demand(task_options(step, resources))
        if not any(all(node.get(name, 0.0) >= amount for name, amount in demand.items()) for node in nodes):
            have = {name: max((node.get(name, 0.0) for node in nodes), default=0.0) for name in demand}
            return (
                f"stage {step.name} asks Ray for {_amounts(demand)} (resources.{step.kind}), but no node of "
                f"the Ray cluster has that (the most any node has: {_amounts(have)})"
            )
    return None


def _amounts(resources: Mapping[str, float]) -> str:
    """Ray resources as "GPU 1, CPU 2, memory 4.0 GB"."""
    return ", ".join(
        f"memory {amount / 1024**3:.1f} GB" if name == "memory" else f"{name} {amount:g}"
        for name, amount in resources.items()
    )


def _starts_own_instance() -> bool:
    """Whether `ray.init()` without an address starts a new Ray instance here, rather than joining the
    cluster that RAY_ADDRESS or a `ray start` on this machine names (as `ray.init` decides)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None) is None  # pyright: ignore[reportArgumentType]
    except Exception:  # noqa: BLE001 - Ray's internal API moved, or no cluster is reachable: not refused
        return False


def _target(address: str | None) -> tuple[str, int, str] | None:
    """(host, port, where it was named) of the cluster `ray.init(address)` connects to: `address`, or
    RAY_ADDRESS when `address` is None or "auto" (as `ray.init` reads them). None when Ray finds or starts
    the instance itself ("auto" or none without RAY_ADDRESS, "local"), or for a form it parses itself
    (a scheme other than ray://, no port)."""
    origin = "--address"
    env = os.environ.get("RAY_ADDRESS")
    if address in (None, "auto") and env:
        address, origin = env, "RAY_ADDRESS"
    if address is None or address in ("auto", "local"):
        return None
    if "://" in address:
        scheme, address = address.split("://", 1)
        if scheme != "ray":
            return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), origin
    if ":" in host:  # an IPv6 address without [brackets] ("::1", "::1:6379"): Ray's own "Invalid address format"
        return None
    return host, int(port), origin


def _host_port(host: str, port: int) -> str:
    """HOST:PORT as an address is written, an IPv6 host in brackets ("[::1]:6379", not "::1:6379")."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _timeout_s() -> float:
    """`CONNECT_TIMEOUT_S`, or the seconds in the environment variable `CONNECT_TIMEOUT_ENV`."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not text:
        return CONNECT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ExecutorError(f"{CONNECT_TIMEOUT_ENV}={text!r}: expected a number of seconds above 0")
    return seconds


def check_reachable(address: str | None, timeout_s: float | None = None) -> None:
    """Raise `ExecutorError` (one line naming the address) when the Ray cluster that `address` (or
    RAY_ADDRESS) names does not accept a connection within `timeout_s` (default `_timeout_s()`):
    `ray.init` would retry for minutes before failing. Addresses Ray resolves itself are not checked."""
    target = _target(address)
    if target is None:
        return
    host, port, origin = target
    timeout_s = _timeout_s() if timeout_s is None else timeout_s
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except TimeoutError:
        why = f"no answer within {timeout_s:g} s"
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
    except OverflowError:  # "inf" or 1e12: "timestamp out of range for platform time_t"
        raise ExecutorError(
            f"{CONNECT_TIMEOUT_ENV}: a wait of {timeout_s:g} s is more than a socket can take; give fewer seconds"
        ) from None
    else:
        return
    raise ExecutorError(
        f"cannot reach the Ray cluster at {_host_port(host, port)} ({why}; from {origin}): is Ray running there "
        f"(`ray start --head`), and is the address right? ({CONNECT_TIMEOUT_ENV} sets the wait)"
    )


def _check_schedulable(steps: Sequence[Step], resources: Mapping[str, Mapping[str, Any]], *, refuse: bool) -> None:
    """Raise `ExecutorError` (`refuse`: a Ray instance this run starts, which no node will join) or
    warn (a cluster, which an autoscaler may grow) when a step asks for more than any node has."""
    problem = unschedulable(steps, resources)
    if problem is None:
        return
    if refuse:
        raise ExecutorError(f"{problem}; lower it in the [resources] table, or run on a cluster (--address)")
    log.warning("%s; it waits until such a node joins (Ctrl-C stops the run)", problem)


class RayExecutor:
    """Runs the steps as Ray tasks on the cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"; None:
    a Ray instance started on this machine for the run, shut down after it; RAY_ADDRESS stands for None or
    "auto", as in `ray.init`). A cluster address that does not answer is refused (`check_reachable`). Already
    connected (`ray.init` called by the caller), it uses that connection and leaves it open."""

    name = "ray"
    in_process = False  # steps run in other processes: no shared models, one accuracy task per adapter

    def __init__(self, address: str | None = None, resources: Mapping[str, Mapping[str, Any]] | None = None):
        self.address = address
        self.resources = dict(resources or {})

    def run(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Submit every step, wait for all; returns step name -> output. A failed stage is raised as
        `StageInputError` (bad input) or `StageError` naming it, after the stages that do not need it ended."""
        check_order(steps)
        own = self.address is None and not ray.is_initialized() and _starts_own_instance()
        started = self._connect()
        try:
            _check_schedulable(steps, self.resources, refuse=own)
            return self._run(steps)
        finally:
            if started:
                ray.shutdown()

    def _connect(self) -> bool:
        """Connect to (or start) Ray unless already connected; True when this call connected.

        `ray.init` installs its own SIGTERM handler in the driver; the caller's handlers come back, so
        that SIGTERM still stops the run as it does under the local executor."""
        if ray.is_initialized():
            return False
        check_reachable(self.address)
        main = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if self.address is None:
            options["include_dashboard"] = False
        ray.init(address=self.address, **options)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        return True

    def _run(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Submit the tasks in order, each with its dependencies' ObjectRefs; collect the outputs."""
        remote = ray.remote(run_step)
        refs: dict[str, Any] = {}
        for step in steps:
            deps = step.dependencies()
            refs[step.name] = remote.options(**task_options(step, self.resources)).remote(
                step, deps, *(refs[d] for d in deps)
            )
        return self._collect(refs)

    def _collect(self, refs: Mapping[str, Any]) -> dict[str, Any]:
        """Wait for every task. A failure is logged when it happens and raised once nothing else can
        finish: the stages that do not need the failed one run to the end, and the next run reuses them.
        An interruption (Ctrl-C, SIGTERM) cancels what is still pending."""
        pending = {ref: name for name, ref in refs.items()}
        outputs: dict[str, Any] = {}
        failures: list[Exception] = []
        try:
            with _stops_kept() as raise_stop:
                while pending:
                    try:
                        self._next(pending, outputs, failures)
                    except KeyboardInterrupt as exc:
                        raise_stop(exc)
        finally:
            for ref in pending:  # after an interruption: stop what is still to run
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - an already finished task cannot be cancelled
                    pass
        if failures:
            raise failures[0]
        return {name: outputs[name] for name in refs}

    @staticmethod
    def _next(pending: dict, outputs: dict[str, Any], failures: list[Exception]) -> None:
        """Wait up to `WAIT_S` for a task to end; record its output or its failure."""
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
        for ref in ready:
            name = pending.pop(ref)
            try:
                outputs[name] = _result(name, ref)
            except (StageError, StageInputError) as exc:
                if str(exc) not in map(str, failures):  # a dependant fails with its input's error
                    log.error("%s; the stages that do not need it go on", exc)
                failures.append(exc)


@contextlib.contextmanager
def _stops_kept() -> Iterator[Callable[[KeyboardInterrupt], None]]:
    """Inside, SIGINT and SIGTERM are remembered before their handlers run; yields `raise_stop(exc)`.

    Ray's blocking calls turn any exception that a signal handler raises while they wait into a bare
    `KeyboardInterrupt`; `raise_stop` raises the handler's own exception again instead (`RunInterrupted`
    with exit code 143 for SIGTERM, ...), or `exc` when no signal was seen or this is not the main thread."""
    seen: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):
                previous[sig] = handler
                signal.signal(sig, functools.partial(_remember, seen, handler))

    def raise_stop(exc: KeyboardInterrupt) -> None:
        if type(exc) is KeyboardInterrupt and seen and seen[-1] in previous:
            previous[seen[-1]](seen[-1], None)  # raises the handler's exception
        raise exc

    try:
        yield raise_stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _remember(seen: list[int], handler: Callable[[int, Any], Any], signum: int, frame: Any) -> None:
    seen.append(signum)
    handler(signum, frame)


def _result(name: str, ref: Any) -> Any:
    """The output of a finished task, or its failure as `StageInputError`/`StageError` naming the stage
    that failed (a task whose input failed reports that input's stage)."""
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, StageFailure):
            raise (StageInputError if cause.bad_input else StageError)(str(cause)) from None
        raise StageError(f"stage {name} failed: {type(cause).__name__}: {_one_line(cause)}") from None
    except RayError as exc:  # the worker died, the task was cancelled, the node was lost
        raise StageError(f"stage {name} failed: {type(exc).__name__}: {_one_line(exc)}") from None
