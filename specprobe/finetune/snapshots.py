"""Adapter snapshots at chosen training steps: the dose-response of fine-tuning.

`train(..., save_steps=[10, 20, 40])` keeps the adapter as it is after each of those optimizer steps
(0: before the first, the LoRA initialisation) as a loadable PEFT folder,
`out/snapshots/step-00000010/` (adapter_config.json + adapter_model.safetensors), and lists them in
the manifest (`"snapshots"`: step, folder relative to `out`, sha256 of the weights).

They are not the resume checkpoints (`out/checkpoints/`: optimizer and scheduler state, pruned to
the newest, deleted when the run finishes): snapshots are kept, hold weights only, and writing them
changes nothing in training (the final adapter is bit-identical with or without them; tested).
Each is written to `.tmp-step-N` and renamed, so a killed run never leaves half a snapshot; a
resumed run keeps the snapshots written before the stop. Each holds the identity hash of the run that
wrote it (`specprobe_run.txt`): the manifest lists only this run's, never those of another run stopped in
the same folder before its first checkpoint.
"""

from __future__ import annotations

import logging
import numbers
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from specprobe.utils.io import sha256_file

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
WEIGHTS = "adapter_model.safetensors"
RUN_MARKER = "specprobe_run.txt"  # in each snapshot: the identity hash of the run that wrote it


def snapshot_name(step: int) -> str:
    """The folder name of the snapshot after `step` optimizer steps (zero-padded: sorts by step)."""
    return f"step-{step:08d}"


def parse_save_steps(value: Any) -> list[int] | None:
    """`save_steps` as sorted unique steps (>= 0), from a list of integers or a string "10,20,40";
    None or empty: no snapshots. Raises ValueError naming the bad value."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"must be steps separated by commas (e.g. 10,20,40), got {value!r}") from None
    if not isinstance(value, Iterable):
        raise ValueError(f"must be a list of steps (integers >= 0), got {type(value).__name__}")
    steps = list(value)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0]
    if bad:
        raise ValueError(f"must be steps (integers >= 0), got {bad[0]!r}")
    return sorted({int(s) for s in steps}) or None


def check_save_steps(steps: list[int] | None, total: int) -> None:
    """A step after the run's last one would never be saved: refuse it before training starts."""
    beyond = [s for s in steps or [] if s > total]
    if beyond:
        raise ValueError(f"step {beyond[0]} is after the run's last step ({total})")


def save_snapshot(model: Any, out: Path, step: int, state_dict: dict | None = None, run_id: str | None = None) -> Path:
    """Write the adapter of `model` (a PeftModel) to `out/snapshots/step-N` (via a temporary folder
    and a rename), marked with `run_id` (the run's identity hash). `state_dict`: the gathered weights of a
    sharded model (as `save_pretrained` takes)."""
    root = out / SNAPSHOTS
    tmp, final = root / f".tmp-{snapshot_name(step)}", root / snapshot_name(step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
    if run_id is not None:
        (tmp / RUN_MARKER).write_text(run_id + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def snapshot_entries(out: Path, steps: list[int] | None, run_id: str | None = None) -> list[dict]:
    """The manifest's list of snapshots: {"step", "path" (relative to `out`), "sha256"} for each step
    whose folder exists and was written by this run (`run_id`; a snapshot without a marker, from an older
    specprobe, is taken as this run's); a missing one (e.g. a step before the resume point of a run whose
    `save_steps` changed) or another run's (one stopped in the same folder before its first checkpoint)
    is left out with a warning."""
    entries = []
    for step in steps or []:
        folder = out / SNAPSHOTS / snapshot_name(step)
        if not (folder / WEIGHTS).exists():
            log.warning("%s: no snapshot at step %d (it was not written in this run); not listed", out, step)
            continue
        marker = folder / RUN_MARKER
        if run_id is not None and marker.is_file() and marker.read_text(encoding="utf-8").strip() != run_id:
            log.warning("%s: the snapshot at step %d was written by another run; not listed", out, step)
            continue
        entries.append({"step": step, "path": f"{SNAPSHOTS}/{folder.name}", "sha256": sha256_file(folder / WEIGHTS)})
    return entries
