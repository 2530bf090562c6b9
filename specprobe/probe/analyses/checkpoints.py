"""The adapters of a training trajectory, in step order: from an adapter folder's manifest (the
snapshots `specprobe finetune --save-steps` keeps, plus the final adapter) or from a list of
(step, folder).

`probe` may not import `finetune` (import contract), so the manifest is read as data: its
`"snapshots"` list holds {"step", "path" (relative to the adapter folder), "sha256" (of the folder's
adapter_model.safetensors)}; each sha256 is checked against the file here.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specprobe.core.models import check_adapter_folder, is_adapter_dir
from specprobe.utils.io import read_json, sha256_file

WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    """One point of the trajectory: the adapter folder after `step` optimizer steps."""

    step: int
    path: Path
    sha256: str | None = None  # of its adapter_model.safetensors (None: no safetensors file)


@dataclass(frozen=True)
class Checkpoints:
    """The points in step order, with what the manifest says about the run (None without one)."""

    points: tuple[Checkpoint, ...]
    adapter: str | None = None  # the adapter folder whose manifest listed them
    trained_on: tuple[str, ...] | None = None  # the run's specialty filter; None: all or unknown
    total_steps: int | None = None
    base_weights_sha256: str | None = None  # the base the run trained on (its snapshots have no manifest)


def _weights_sha(folder: Path) -> str | None:
    return sha256_file(folder / WEIGHTS) if (folder / WEIGHTS).exists() else None


def _step(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{where}: a step must be an integer >= 0, got {value!r}")
    return int(value)


def _point(step: Any, path: Any, where: str) -> Checkpoint:
    folder = Path(path)
    if not is_adapter_dir(folder):
        raise ValueError(f"{where}: {folder} is not a PEFT adapter folder (no adapter_config.json)")
    return Checkpoint(_step(step, where), folder, _weights_sha(folder))


def _from_manifest(folder: Path) -> Checkpoints:
    manifest_path = folder / "manifest.json"
    check_adapter_folder(folder)  # a typo was "no manifest.json; pass a list of (step, adapter folder)"
    if not manifest_path.exists():
        raise ValueError(f"{folder}: no manifest.json; pass a list of (step, adapter folder) instead")
    manifest = read_json(manifest_path)
    entries = manifest.get("snapshots") if isinstance(manifest, dict) else None
    if not entries:
        raise ValueError(f"{manifest_path}: lists no snapshots (train with --save-steps, e.g. 0,10,20,40)")
    points = []
    for i, entry in enumerate(entries):
        where = f"{manifest_path}: snapshots[{i}]"
        if not isinstance(entry, dict) or "step" not in entry or "path" not in entry:
            raise ValueError(f"{where}: expected an object with step, path and sha256, got {entry!r:.80}")
        point = _point(entry["step"], folder / str(entry["path"]), where)
        if entry.get("sha256") and point.sha256 != entry["sha256"]:
            raise ValueError(
                f"{where}: {point.path / WEIGHTS} has sha256 {str(point.sha256)[:12]}..., "
                f"the manifest records {str(entry['sha256'])[:12]}..."
            )
        points.append(point)
    total = manifest.get("steps")
    if is_adapter_dir(folder) and isinstance(total, int) and total not in {p.step for p in points}:
        points.append(Checkpoint(total, folder, _weights_sha(folder)))  # the final adapter
    wanted = manifest.get("specialty") or manifest.get("filter", {}).get("specialty")
    trained = tuple(wanted) if isinstance(wanted, (list, tuple)) and wanted else None
    base = manifest.get("base_weights_sha256")
    base = base if isinstance(base, str) and base else None
    return Checkpoints(_ordered(points, str(manifest_path)), str(folder), trained, total, base)


def _ordered(points: list[Checkpoint], where: str) -> tuple[Checkpoint, ...]:
    steps = [p.step for p in points]
    if len(set(steps)) != len(steps):
        dup = next(s for s in steps if steps.count(s) > 1)
        raise ValueError(f"{where}: step {dup} is given twice")
    return tuple(sorted(points, key=lambda p: p.step))


def read_checkpoints(checkpoints: Any) -> Checkpoints:
    """`checkpoints`: an adapter folder whose manifest.json lists snapshots (they and the final adapter,
    in step order), a mapping {step: adapter folder}, or a sequence of (step, adapter folder)."""
    if isinstance(checkpoints, Checkpoints):
        return checkpoints
    if isinstance(checkpoints, (str, os.PathLike)):
        return _from_manifest(Path(checkpoints))
    if isinstance(checkpoints, Mapping):
        pairs = list(checkpoints.items())
    elif isinstance(checkpoints, (list, tuple)):
        pairs = list(checkpoints)
    else:
        raise TypeError(
            f"checkpoints must be an adapter folder, a mapping step -> folder or a list of (step, folder), "
            f"got {type(checkpoints).__name__}"
        )
    points = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"checkpoints[{i}]: expected (step, adapter folder), got {pair!r:.80}")
        points.append(_point(pair[0], pair[1], f"checkpoints[{i}]"))
    if not points:
        raise ValueError("checkpoints: no adapter given")
    return Checkpoints(_ordered(points, "checkpoints"))
