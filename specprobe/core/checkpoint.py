"""Finished batches of a long scoring run, kept on disk so that a rerun after a crash or kill resumes
instead of starting over (`score_items(checkpoint=...)`; `compare(checkpoint=...)`, which `specprobe
compare` points under its --out).

A run is identified by what its caller says about it (`identity`: the models, dtype, device, options)
with the specprobe version, the items' tokens and scored positions, and the batch plan, hashed; its
batches live in a folder of that name, one file per finished batch, each written atomically. When a run
resumes, the first finished batch it holds is scored again and must agree with the stored one (to
`resume_tolerance`): a model changed in place under the same path gives other numbers, and then the
stored batches are discarded with a warning instead of mixed in. A checkpoint keeps log-probabilities
only (not layer states)."""

from __future__ import annotations

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
        self.runs: list[BatchStore] = []  # the stores `for_run` made, which `finish` removes

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
        store = BatchStore(self.root / f"run-{digest}", {**key, "batches": len(batches)})
        self.runs.append(store)
        return store

    def finish(self) -> None:
        """Remove every run's batches from the folder (this run's results are complete; those of runs with
        another key, stopped before, will not be resumed by this caller), then the folder if that empties it."""
        for folder in [s.folder for s in self.runs] + sorted(self.root.glob("run-*")):
            shutil.rmtree(folder, ignore_errors=True)
        self.runs.clear()
        try:
            self.root.rmdir()
        except OSError:
            pass  # absent, or holding files that are not batches


class BatchStore:
    """One run's finished batches: batch j's {item index: log-probabilities} in `batch-<j>.npz`."""

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

    def save(self, j: int, logps: Mapping[int, np.ndarray]) -> None:
        """Store batch `j`'s log-probabilities (atomically: a kill mid-write leaves no half batch)."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / "run.json", json.dumps(self.described, indent=1, default=str))
        index = np.asarray(list(logps), dtype=np.int64)
        arrays = [np.asarray(logps[i], dtype=np.float64) for i in logps]
        buf = io.BytesIO()
        np.savez(
            buf,
            index=index,
            lengths=np.asarray([len(a) for a in arrays], dtype=np.int64),
            logps=np.concatenate(arrays) if arrays else np.zeros(0),
        )
        atomic_write_bytes(self._path(j), buf.getvalue())

    def load(self, j: int) -> dict[int, np.ndarray]:
        """Batch `j`'s {item index: log-probabilities}."""
        with np.load(self._path(j)) as data:
            index, lengths, flat = data["index"], data["lengths"], data["logps"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return {int(i): flat[bounds[k] : bounds[k + 1]].copy() for k, i in enumerate(index)}

    def agrees(self, j: int, fresh: Mapping[int, np.ndarray], tolerance: float) -> bool:
        """Whether batch `j` scored again (`fresh`) gives the stored log-probabilities, to `tolerance`."""
        try:
            stored = self.load(j)
        except (OSError, ValueError, KeyError):
            return False  # unreadable: treated as another run's
        if set(stored) != set(fresh):
            return False
        return all(
            stored[i].shape == np.shape(fresh[i]) and np.allclose(stored[i], fresh[i], rtol=0, atol=tolerance)
            for i in stored
        )

    def discard(self, batches: Iterable[int], why: str) -> None:
        """Remove the stored `batches` (this rank's: under data parallelism, ranks share the folder and
        each discards only its own), saying `why`."""
        batches = sorted(batches)
        log.warning("discarding %d stored batch(es) in %s: %s; scoring them again", len(batches), self.folder, why)
        for j in batches:
            self._path(j).unlink(missing_ok=True)
