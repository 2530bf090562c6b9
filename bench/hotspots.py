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
    """`call` once under the torch profiler: its wall time (timed inside the profiled block, so the
    profiler's start and trace processing are left out), the host operators by own host time, and on CUDA
    the device kernels by device time. Kernels are rows of their own in torch's table, and the host
    operator that launched one also carries its time, so the device total adds up kernel rows only."""
    from torch.autograd import DeviceType

    on_device = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    sync = torch.cuda.synchronize if on_device else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        call()
        sync()
        wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if not e.is_user_annotation]
    host = [e for e in events if e.device_type == DeviceType.CPU]
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    return {
        "wall_s": wall,
        "host_ops_s": sum(e.self_cpu_time_total for e in host) / 1e6,
        "device_kernels_s": sum(e.self_device_time_total for e in kernels) / 1e6 if on_device else None,
        "top_host_ops": [
            {"op": e.key, "calls": e.count, "self_host_ms": _ms(e.self_cpu_time_total)}
            for e in sorted(host, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        ],
        "top_device_kernels": [
            {"kernel": e.key, "calls": e.count, "device_ms": _ms(e.self_device_time_total)}
            for e in sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:top]
        ],
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
    if "error" in prof:
        return [f"profile of one compare call: not taken ({prof['error']})"]
    ops = prof["torch"]
    kernels = ops["device_kernels_s"]
    lines = [
        f"profile of one compare call ({prof['n_texts']} texts): {ops['wall_s']:.2f} s wall; host operators' own "
        f"time {ops['host_ops_s']:.2f} s"
        + (
            f"; device kernels {kernels:.3f} s ({100 * kernels / ops['wall_s']:.0f}% of the wall time)"
            if kernels
            else ""
        )
    ]
    for row in ops["top_device_kernels"][:5]:
        lines.append(f"  kernel {row['kernel'][:80]}: {row['calls']} calls, {row['device_ms']:.1f} ms")
    for row in ops["top_host_ops"][:6]:
        lines.append(f"  op {row['op']}: {row['calls']} calls, host {row['self_host_ms']:.1f} ms")
    py = prof["python"]
    lines.append(f"  python (cProfile, {py['wall_s']:.2f} s wall): busiest functions by own time")
    for row in py["top_functions"][:8]:
        lines.append(f"  fn {row['function']}: {row['calls']} calls, own {row['own_ms']:.1f} ms")
    return lines
