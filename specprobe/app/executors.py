"""How the experiment's stages run: `make_executor("local")` calls them one after another in this process
(the default); `make_executor("ray", address=...)` runs each as a Ray task on a cluster.

The experiment declares its stages once, as a list of `Step`s in dependency order (`experiment.plan_steps`);
both executors run that same list, so the stage folders, their keys and hence caching and resume are
the same under both (`executors_base` has the shared parts, `executors_ray` the Ray one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specprobe.app import executors_base
from specprobe.app.executors_base import *  # noqa: F403  (re-exports executors_base.__all__)
from specprobe.app.executors_base import EXECUTORS, Executor, ExecutorError, LocalExecutor

#: executors_base's names, re-exported, and make_executor
__all__ = ["make_executor"]
__all__ += executors_base.__all__


def make_executor(
    name: str = "local", *, address: str | None = None, resources: Mapping[str, Any] | None = None
) -> Executor:
    """The executor called `name` ("local" or "ray"). `address` (Ray only): "auto", "HOST:PORT",
    "ray://HOST:PORT" or None (join RAY_ADDRESS's cluster, else start a Ray instance on this machine); a
    HOST:PORT that takes no connection is an error within 10 s (`executors_ray.check_reachable`);
    `resources`: the `[resources]` table (Ray only).

    Raises `ExecutorError` (one line) for an unknown name, an address with the local executor, or
    `ray` without Ray installed.
    """
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; choose from {list(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise ExecutorError("--address is for --executor ray; the local executor runs in this process")
        return LocalExecutor()
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ExecutorError("--executor ray needs Ray, which is not installed: pip install 'specprobe[ray]'") from None
    from specprobe.app.executors_ray import RayExecutor

    return RayExecutor(address=address, resources=resources or {})
