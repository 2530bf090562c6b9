"""Where one timed call spends its time: the torch profiler's busiest operators (host and device time) and
cProfile's busiest Python functions, so that a run that misses its speed target says whether the device or
the host was the bottleneck (used by `python -m bench --profile`)."""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]


def _ms(us: float) -> float:
    return round(us / 1000, 3)


def torch_ops(call: Callable[[], object], device: str, top: int = 15) -> dict:
    """`call` once under the torch profiler: its wall time, the summed self time of every operator on the host
    and on the device, and the `top` operators by self device time (by host time on a CPU)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        call()
        sync()
    wall = time.perf_counter() - t0
    events = list(prof.key_averages())
    on_device = device.startswith("cuda")
    key = (lambda e: e.self_device_time_total) if on_device else (lambda e: e.self_cpu_time_total)
    rows = [
        {
            "op": e.key,
            "calls": e.count,
            "self_host_ms": _ms(e.self_cpu_time_total),
            "self_device_ms": _ms(e.self_device_time_total) if on_device else None,
        }
        for e in sorted(events, key=key, reverse=True)[:top]
    ]
    return {
        "wall_s": wall,
        "host_ops_s": sum(e.self_cpu_time_total for e in events) / 1e6,
        "device_ops_s": sum(e.self_device_time_total for e in events) / 1e6 if on_device else None,
        "top_ops": rows,
    }


def python_functions(call: Callable[[], object], top: int = 15) -> dict:
    """`call` once under cProfile: its wall time and the `top` functions by own time, paths relative to the
    repository or to site-packages."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    call()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_cc, calls, tottime, cumtime, _callers) in sorted(
        stats.items(), key=lambda kv: kv[1][2], reverse=True
    )[:top]:
        short = path.split("site-packages/")[-1] if "site-packages/" in path else path.replace(f"{REPO}/", "")
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls": calls,
                "own_ms": round(tottime * 1000, 3),
                "cumulative_ms": round(cumtime * 1000, 3),
            }
        )
    return {"wall_s": wall, "top_functions": rows}


def summary_lines(prof: dict) -> list[str]:
    """The profile in a few printable lines."""
    ops = prof["torch"]
    device = ops["device_ops_s"]
    lines = [
        f"profile of one compare call ({prof['n_texts']} texts): {ops['wall_s']:.2f} s wall under the torch "
        f"profiler; operators' own time on the host {ops['host_ops_s']:.2f} s"
        + (f", on the device {device:.2f} s ({100 * device / ops['wall_s']:.0f}% of the wall time)" if device else "")
    ]
    for row in ops["top_ops"][:8]:
        dev = f", device {row['self_device_ms']:.1f} ms" if row["self_device_ms"] is not None else ""
        lines.append(f"  op {row['op']}: {row['calls']} calls, host {row['self_host_ms']:.1f} ms{dev}")
    py = prof["python"]
    lines.append(f"  python (cProfile, {py['wall_s']:.2f} s wall): busiest functions by own time")
    for row in py["top_functions"][:8]:
        lines.append(f"  fn {row['function']}: {row['calls']} calls, own {row['own_ms']:.1f} ms")
    return lines
