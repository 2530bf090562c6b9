"""Stage caching for the experiment runner: each stage's output lives in a folder named by a hash of
its inputs and options, so a rerun skips finished stages, an interrupted one resumes, and a changed
option reruns only the stages that depend on it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specprobe.utils.io import atomic_write_text

log = logging.getLogger(__name__)
DONE = ".done.json"


def stage_key(name: str, inputs: Any) -> str:
    """The folder name of a stage: its name and a hash of its inputs (JSON, sorted keys)."""
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def run_stage(root: Path, name: str, inputs: Any, produce: Callable[[Path], Any], *, say: Callable[[str], None] = print) -> Path:
    """Run `produce(folder)` unless the folder for (name, inputs) is already marked done; returns the folder.

    `produce` writes into the folder; it may be resumable itself (training is): an interrupted stage
    is re-entered with whatever it left there.
    """
    folder = root / "stages" / stage_key(name, inputs)
    marker = folder / DONE
    if marker.exists():
        say(f"[skip] {name}: done earlier ({folder.name})")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    say(f"[run ] {name} -> {folder.name}")
    t0 = time.perf_counter()
    produce(folder)
    seconds = time.perf_counter() - t0
    atomic_write_text(marker, json.dumps({"stage": name, "inputs": inputs, "seconds": round(seconds, 2)}, default=str))
    say(f"[done] {name} in {seconds:.1f} s")
    return folder


def stage_seconds(folder: Path) -> float:
    """How long a finished stage took (NaN when it is not marked done)."""
    try:
        return float(json.loads((folder / DONE).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return float("nan")
