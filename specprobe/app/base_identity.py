"""The base model's identity in an experiment's stage keys: what the stages load, by content, not by name.

- A local directory: a digest over every file in it that a loader may read (every safetensors shard, the
  config, the tokenizer files, chat templates, remote code; not documentation, hidden files, subfolders or
  weights in formats that specprobe does not load, `NOT_LOADED`). A base replaced in place, whole or one
  shard, its config or its tokenizer, so reruns every stage that uses it.
- A hub id: the commit its revision resolves to now, on the hub or in the local Hugging Face cache as the
  loaders resolve it. A new upstream commit of an unpinned id reruns the stages, and the commit is what
  experiment.json records (`metadata["base_identity"]`). The stages get the base as "<hub id>@<commit>"
  (`core.models.model_ref`), so each loads that commit even if upstream moves on during the run. A
  `[train] revision` must resolve to the same commit as the default revision does.

Hashing a large model takes minutes; each file's sha256 is kept in the output folder (`DIGESTS`) with its
size, device, inode and modification and change times, as git's index keeps them: any write or
replacement of a file changes its change time, so a rerun reads again only files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from specprobe.app.config import ConfigError
from specprobe.core.models import ModelLoadError, hub_commit, refuse_adapter_as_model
from specprobe.utils.io import atomic_write_text, sha256_file

#: the output folder's file of base-file digests (see the module docstring)
DIGESTS = ".base-digests.json"
#: files of a model directory that no loader of specprobe reads (safetensors only; documentation)
NOT_LOADED = (".md", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot", ".tflite")
_RACY_NS = 2_000_000_000  # a file changed this recently is hashed but its digest not kept


def base_identity(base: str, revision: str | None, root: Path) -> str:
    """The identity of `base` in the stage keys: "sha256:<digest of its files>" for a local directory,
    "<hub id>@<commit>" for a hub id (see the module docstring); `revision`: the [train] table's."""
    if Path(base).is_dir():
        try:
            refuse_adapter_as_model(base, "base")  # as training and ModelPair.load refuse it, before any hashing
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from None
        if not (Path(base) / "config.json").is_file():
            raise ConfigError(f"base: {base} is a folder without a config.json, not a model folder")
        return "sha256:" + directory_digest(Path(base), Path(root) / DIGESTS)
    if Path(base).exists():
        raise ConfigError(f"base: {base} is a file; give the folder that holds the model's config.json")
    commit = hub_commit(base, None)
    if revision and (pinned := hub_commit(base, revision)) != commit:
        raise ConfigError(
            f"train.revision: {revision!r} is commit {pinned} of {base!r}, but the accuracy and probe stages load "
            f"its default revision, commit {commit}; download that revision (`hf download {base} --revision "
            f"{revision}` prints its folder) and give its folder as base, or leave train.revision out"
        )
    return f"{base}@{commit}"


def model_files(folder: Path) -> list[Path]:
    """The files of a model directory that a loader may read, by name (see `NOT_LOADED`)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in NOT_LOADED
    )


def directory_digest(folder: Path, digests: Path) -> str:
    """sha256 over the names and contents of `model_files(folder)`, reusing the digests kept in `digests`
    for files whose size, device, inode, modification and change times are unchanged."""
    try:
        kept = json.loads(digests.read_text(encoding="utf-8"))
        kept = kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    h, changed = hashlib.sha256(), False
    for path in model_files(folder):
        key = str(path.resolve())
        before = _stat(path)
        entry = kept.get(key)
        if isinstance(entry, dict) and entry.get("stat") == before and isinstance(entry.get("sha256"), str):
            digest = entry["sha256"]
        else:
            digest = sha256_file(path)
            if _stat(path) == before and time.time_ns() - max(before[3], before[4]) > _RACY_NS:
                kept[key], changed = {"stat": before, "sha256": digest}, True
        h.update(path.name.encode() + b"\0" + digest.encode() + b"\n")
    if changed:
        digests.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(digests, json.dumps(kept, indent=1, sort_keys=True))
    return h.hexdigest()


def _stat(path: Path) -> list[int]:
    """What says a file is unchanged: size, device, inode, modification and change times (ns)."""
    st = os.stat(path)
    return [st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
