"""Data-parallel scoring: which share of the work each process runs, and the shares put back together.

Under an initialised `torch.distributed` process group (`accelerate launch`, `torchrun`, or a
caller's own `init_process_group`), `score_items(..., distribute=True)` plans its batches exactly
as one process would, deals whole batches to the ranks (`balanced_shares`, by padded tokens), runs
its own share and gathers every rank's results (`all_gather_indexed`). Every rank gets the whole
result, in the items' order; only rank 0 (`is_main`) writes files or shows progress bars.

Whole batches, not items, are dealt because the engine is not batch-composition invariant: the
same item scored in a batch of different shape can differ in the last float bits (up to ~1e-6 in
float32 on a CPU, far more in 16 bits on a GPU). Running the very batches the single process
runs makes the data-parallel result bit-identical to it.

Without a process group (or with one rank) everything here is the identity: `world()` is (0, 1).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if _initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes results and shows progress: rank 0, or the only process."""
    return world()[0] == 0


def init_from_env(device: str | None = None) -> tuple[int, int]:
    """Join the process group a launcher describes in the environment, for the command-line tools.

    `accelerate launch` and `torchrun` set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT but initialise nothing. With WORLD_SIZE > 1 and no group yet, this initialises one:
    on GPUs "nccl", with GPU LOCAL_RANK made the current device (so `device` "auto" or "cuda" puts
    each rank's model on its own GPU); on the CPU (or `device` "cpu") "gloo". On ranks other than
    0, specprobe's log then shows errors only (rank 0 speaks for the run). Returns `world()`;
    nothing happens without a launcher or when a group exists already.
    """
    if _initialized():
        return world()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not torch.distributed.is_available():
        return world()
    if device == "shard":
        raise ValueError(
            "device 'shard' spreads one model over every GPU; it cannot run under a data-parallel "
            "launch (use one process, or one GPU per process)"
        )
    on_gpu = torch.cuda.is_available() and (device is None or device == "auto" or str(device).startswith("cuda"))
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if on_gpu else "gloo")
    atexit.register(_destroy)
    if not is_main():
        logging.getLogger("specprobe").setLevel(logging.ERROR)
    return world()


def _destroy() -> None:
    if _initialized():
        torch.distributed.destroy_process_group()


def balanced_shares(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Indices of `costs` dealt to `world_size` ranks: largest first, each to the least-loaded rank
    (ties: the lower index, the lower rank). Deterministic, so every rank computes the same deal;
    each share is in increasing index order."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    loads = [0.0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        shares[r].append(i)
        loads[r] += costs[i]
    return [sorted(s) for s in shares]


def all_gather_indexed(local: Mapping[int, T], n: int) -> list[T]:
    """Every rank's {index: value} share merged into one list of `n` values in index order, on every
    rank (a collective: every rank must call it). Each index in 0..n-1 must come from exactly one rank."""
    _, size = world()
    parts: list[Any] = [dict(local)]
    if size > 1:
        parts = [None] * size
        torch.distributed.all_gather_object(parts, dict(local))
    out: list[Any] = [None] * n
    filled = [False] * n
    for part in parts:
        for i, value in part.items():
            if not 0 <= i < n or filled[i]:
                raise RuntimeError(f"data-parallel gather: index {i} is out of range or came from two ranks")
            out[i], filled[i] = value, True
    if not all(filled):
        raise RuntimeError(
            f"data-parallel gather: {filled.count(False)} of {n} results came from no rank "
            "(did every rank get the same items?)"
        )
    return out


def agree(value: T) -> T:
    """Rank 0's `value` on every rank (a collective): for a decision each rank takes on its own that
    must not differ between ranks, e.g. whether shared-prompt scoring is exact on this model."""
    if world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
