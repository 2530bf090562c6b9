"""Finished batches of a long scoring run, kept on disk so that a rerun after a crash or kill resumes
instead of starting over (`score_items(checkpoint=...)`; `compare(checkpoint=...)`, which `specprobe
compare` points under its --out).

A run is identified by what its caller says about it (`identity`: the models, dtype, device, options)
with the specprobe version, the items' tokens and scored positions, and the batch plan, hashed; its
batches live in a folder of that name, one file per finished batch, each written atomically. When a run
resumes, the first and the last finished batch it holds are scored again and must agree with the stored
ones (to `resume_tolerance`): a model changed in place under the same path gives other numbers, and then
the stored batches are discarded with a warning instead of mixed in. A checkpoint keeps log-probabilities
and, for the logit lens, its reduced layer rows; never whole layer states."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specprobe.utils.io import atomic_write_bytes, atomic_write_text, sha256_file
from specprobe.utils.provenance import installed_version

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the stored files or the key change meaning
PARTIAL_SCORES = "partial-scores"  # the folder `specprobe compare` (under --out) and the runner's stage use


def items_digest(items: Sequence[Any]) -> str:
    """sha256 of every item's token ids and scored positions, in order (anything with `ids`, `positions`)."""
    h = hashlib.sha256()
    for item in items:
        h.update(np.asarray(item.ids, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(item.positions, dtype=np.int64).tobytes())
        h.update(b";")
    return h.hexdigest()


def resume_tolerance(dtype_name: str) -> float:
    """How far a batch scored again may differ from its stored log-probabilities (nats, per scored token):
    float rounding of the same computation on the same device, which reproduces the same batch exactly or
    nearly (1e-5 in float32 and float64, 2e-3 in 16-bit), not a model changed in place (a LoRA alpha
    changed by 1% moved bf16 log-probs by 1e-2). On other hardware the check may fail: the batches are
    then scored again, never mixed."""
    return 1e-5 if dtype_name in ("float32", "float64") else 2e-3


def view_identity(metadata: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """What a view of a `ModelPair` (`variant` "base" or "tuned", its `metadata`) computes with, by content
    where the pair knows it (weights hashes, and here every file of a local adapter folder: its config as
    well as its weights) and by name otherwise; never a path where content is known, so a moved or copied
    folder resumes. The base view leaves the tuned model out."""
    identity: dict[str, Any] = {
        "variant": variant,
        "device": metadata.get("device"),
        "dtype": metadata.get("dtype"),
        "base": metadata.get("base_weights_sha256") or metadata.get("base"),
    }
    if variant == "base":
        return identity
    tuned = metadata.get("tuned")
    folder = Path(tuned) if isinstance(tuned, str) and tuned else None
    if folder is not None and (folder / "adapter_config.json").is_file():
        files = [folder / "adapter_config.json", *sorted(folder.glob("adapter_model.*"))]
        identity["adapter"] = {f.name: sha256_file(f) for f in files}
    else:
        identity["tuned"] = metadata.get("tuned_weights_sha256") or metadata.get("adapter_sha256") or tuned
    identity["lora_forward"] = metadata.get("lora_forward")
    return identity


class ScoreCheckpoint:
    """A folder of finished scoring batches: `for_run` gives the `BatchStore` of one run's batches."""

    def __init__(self, root: str | os.PathLike, identity: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.identity = dict(identity)

    def for_run(self, items: Sequence[Any], batches: Sequence[Sequence[int]], **flags: Any) -> BatchStore:
        """The store of the run that scores `items` in `batches` (row indices) with `flags` (the forward
        pass's switches): its folder is named by the hash of all of that and `identity`."""
        key = {
            "format": _FORMAT,
            "specprobe": installed_version("specprobe"),
            "identity": self.identity,
            "items": items_digest(items),
            "batches": [list(b) for b in batches],
            "flags": flags,
        }
        text = json.dumps(key, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return BatchStore(self.root / f"run-{digest}", {**key, "batches": len(batches)})


#: the subfolders of a probe's checkpoint folder (`view_checkpoint`): one per view, compare's and the lens's
VIEW_FOLDERS = ("base", "tuned", "lens-base", "lens-tuned")


def view_checkpoint(
    folder: str | os.PathLike, metadata: Mapping[str, Any], variant: str, lens_layers: Sequence[int] | None = None
) -> ScoreCheckpoint:
    """The checkpoint of one view's scoring under a probe's `folder`, keyed by `view_identity`: compare's
    (`<variant>/`), or the logit lens's over `lens_layers` (`lens-<variant>/`, keyed by those layers too)."""
    identity = view_identity(metadata, variant)
    if lens_layers is None:
        return ScoreCheckpoint(Path(folder) / variant, identity)
    lens = {**identity, "lens": "logit", "layers": list(lens_layers)}
    return ScoreCheckpoint(Path(folder) / f"lens-{variant}", lens)


def remove_checkpoint(folder: str | os.PathLike) -> None:
    """Remove a probe's finished batches from `folder` (`<view>/run-*` for the `VIEW_FOLDERS`, every run's,
    a stale key's too), then those folders and `folder` where that empties them; nothing else is touched:
    the folder is the caller's."""
    root = Path(folder)
    for view in [root / name for name in VIEW_FOLDERS if (root / name).is_dir()]:
        for run in view.glob("run-*"):
            shutil.rmtree(run, ignore_errors=True)
        with contextlib.suppress(OSError):
            view.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


class BatchStore:
    """One run's finished batches: batch j's per-item arrays in `batch-<j>.npz` ("logps": each item's
    log-probabilities, (n,); "states", where a caller reduces layer states: each item's (k, n) rows)."""

    def __init__(self, folder: Path, described: Mapping[str, Any]) -> None:
        self.folder = folder
        self.described = described

    def _path(self, j: int) -> Path:
        return self.folder / f"batch-{j:07d}.npz"

    def finished(self) -> set[int]:
        """Indices of the batches stored."""
        if not self.folder.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.folder.glob("batch-*.npz")}

    def save(self, j: int, parts: Mapping[str, Mapping[int, np.ndarray]]) -> None:
        """Store batch `j`'s arrays, {name: {item index: array}}, every name for the same items, each array's
        last axis the item's scored positions (atomically: a kill mid-write leaves no half batch)."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / "run.json", json.dumps(self.described, indent=1, default=str))
        index = list(parts["logps"])
        arrays: dict[str, np.ndarray] = {"index": np.asarray(index, dtype=np.int64)}
        arrays["lengths"] = np.asarray([np.shape(parts["logps"][i])[-1] for i in index], dtype=np.int64)
        for name, per_item in parts.items():
            chunks = [np.asarray(per_item[i]) for i in index]
            arrays[name] = np.concatenate(chunks, axis=-1) if chunks else np.zeros(0)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self._path(j), buf.getvalue())

    def load(self, j: int) -> dict[str, dict[int, np.ndarray]]:
        """Batch `j`'s arrays, {name: {item index: array}}."""
        with np.load(self._path(j)) as data:
            stored = {name: data[name] for name in data.files}
        index, lengths = stored.pop("index"), stored.pop("lengths")
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return {
            name: {int(i): flat[..., bounds[k] : bounds[k + 1]].copy() for k, i in enumerate(index)}
            for name, flat in stored.items()
        }

    def agrees(self, j: int, fresh: Mapping[str, Mapping[int, np.ndarray]], tolerance: float) -> bool:
        """Whether batch `j` scored again (`fresh`, as `save` takes it) gives the stored arrays, to `tolerance`."""
        try:
            stored = self.load(j)
        except (OSError, ValueError, KeyError):
            return False  # unreadable: treated as another run's
        if set(stored) != set(fresh):
            return False
        for name, per_item in fresh.items():
            if set(stored[name]) != set(per_item):
                return False
            for i, array in per_item.items():
                have = stored[name][i]
                if have.shape != np.shape(array) or not np.allclose(
                    have, array, rtol=0, atol=tolerance, equal_nan=True
                ):
                    return False
        return True

    def discard(self, batches: Iterable[int], why: str) -> None:
        """Remove the stored `batches` (this rank's: under data parallelism, ranks share the folder and
        each discards only its own), saying `why`."""
        batches = sorted(batches)
        log.warning("discarding %d stored batch(es) in %s: %s; scoring them again", len(batches), self.folder, why)
        for j in batches:
            self._path(j).unlink(missing_ok=True)
