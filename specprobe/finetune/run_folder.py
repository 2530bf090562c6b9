"""A training run's output folder: what it holds (nothing, this run finished, this run's checkpoints,
another run, something else), so that `train` starts, resumes, returns or refuses, and which of its
entries a run owns (what `overwrite` removes)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from specprobe.finetune.run_identity import comparable, identity_diff, identity_hash, is_this_run
from specprobe.finetune.snapshots import SNAPSHOTS
from specprobe.finetune.trackers import LOGS
from specprobe.utils.io import read_json, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # in each checkpoint: its step, the run identity, the loss curve
FINISHING = ".finishing.json"  # present while the final adapter is being moved into place
# the finished run that an `overwrite` replaces, kept until the new run finishes: a crash, kill or Ctrl-C of
# the new run loses nothing (restore it by moving its files back)
PREVIOUS = ".previous-run"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # the final adapter, hashed in the manifest
# Entries of an output directory that a run writes (and `overwrite` removes).
OWNED = (
    MANIFEST,
    CHECKPOINTS,
    *ADAPTER_FILES,
    "adapter_model.bin",
    "README.md",
    ".final-tmp",
    FINISHING,
    LOGS,
    SNAPSHOTS,
)


def checkpoint_dirs(out: Path) -> list[Path]:
    """The committed checkpoints in `out` (`checkpoints/step-N`), oldest first."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_STATE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _entries(out: Path) -> list[Path]:
    """What `out` holds, apart from the files of its output lock."""
    from specprobe.utils.locks import LOCK_FILES

    return [p for p in out.iterdir() if p.name not in LOCK_FILES and p.name != PREVIOUS] if out.is_dir() else []


def inspect_out(out: Path, identity: dict, identity_hash: str, overwrite: bool) -> tuple[str, Any]:
    """("fresh", None) | ("overwrite", None) | ("done", manifest) | ("resume", checkpoint dir); refuses
    a different run."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory")
    if not out.exists() or not _entries(out):
        return "fresh", None
    if overwrite:
        return "overwrite", None
    if (out / MANIFEST).exists():
        return _finished_run(out, identity, identity_hash)
    ckpts = checkpoint_dirs(out)
    if ckpts:
        return _checkpointed_run(out, ckpts[-1], identity, identity_hash)
    if _stopped_while_finishing(out, identity_hash):
        return "overwrite", None
    return _no_run(out)


def adapter_digests(out: Path) -> dict[str, str]:
    """sha256 of the final adapter's files in `out` (`ADAPTER_FILES` that exist), as the manifest records them."""
    return {name: sha256_file(out / name) for name in ADAPTER_FILES if (out / name).is_file()}


def spelled_as_recorded(out: Path, identity: dict) -> dict:
    """`identity` with its base path spelled as the run on disk in `out` spells it, when that run is this
    one given another path to the same local folder (a relative and an absolute path, a link): the same
    folder now and the same weights fingerprint. Otherwise `identity` as it is."""
    recorded = _recorded_identity(out)
    base, other = identity.get("base"), (recorded or {}).get("base")
    if not recorded or not isinstance(other, str) or not isinstance(base, str) or other == base:
        return identity
    weights = identity.get("base_weights_sha256")
    if not weights or recorded.get("base_weights_sha256") != weights:
        return identity
    if not (Path(other).is_dir() and Path(other).resolve() == Path(base).resolve()):
        return identity
    respelled = {**identity, "base": other}
    return respelled if identity_hash(respelled) == identity_hash(comparable(recorded)) else identity


def _recorded_identity(out: Path) -> dict | None:
    """The identity of the run on disk in `out`: its manifest's, else its newest checkpoint's."""
    if (out / MANIFEST).exists():
        source = out / MANIFEST
    elif ckpts := checkpoint_dirs(out):
        source = ckpts[-1] / TRAINER_STATE
    else:
        return None
    try:
        found = read_json(source).get("identity")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def _finished_run(out: Path, identity: dict, identity_hash: str) -> tuple[str, Any]:
    """("done", manifest) when the finished run in `out` is this one and its adapter files are the ones
    it wrote (manifests before `adapter_files` was recorded: not checked); otherwise refused."""
    m = read_json(out / MANIFEST)
    if is_this_run(m, identity_hash):
        recorded = m.get("adapter_files")
        if isinstance(recorded, dict) and (now := adapter_digests(out)) != recorded:
            changed = sorted(n for n in set(recorded) | set(now) if recorded.get(n) != now.get(n))
            raise FileExistsError(
                f"output directory {out} holds this run, finished, but its adapter files changed or are missing "
                f"since ({', '.join(changed)}); pass --overwrite to train it again"
            )
        return "done", m
    diffs = identity_diff(identity, comparable(m.get("identity", {})))
    raise FileExistsError(
        f"output directory {out} already holds a different finished run "
        f"({'; '.join(diffs[:6]) or 'unknown identity'}); pass --overwrite to replace it"
    )


def unmet_file_options(manifest: dict, save_steps: list[int] | None, report_to: str) -> list[str]:
    """What a rerun asks of a finished run's files that it did not write (these options change no weight, so
    the run is the same and is returned as it is): snapshots after `save_steps` it did not keep, a
    `report_to` tracker it did not log to; one phrase each, [] when all is there (or not recorded)."""
    options = manifest.get("options")
    recorded: dict = options if isinstance(options, dict) else {}
    unmet = []
    if "save_steps" in recorded and (missing := sorted(set(save_steps or ()) - set(recorded["save_steps"] or ()))):
        kept = recorded["save_steps"] or "no step"
        unmet.append(f"save_steps {save_steps} (it kept snapshots after {kept}, not after {missing})")
    if "report_to" in recorded and report_to not in ("none", recorded["report_to"]):
        unmet.append(f"report_to {report_to!r} (it logged to {recorded['report_to']!r})")
    return unmet


def _checkpointed_run(out: Path, newest: Path, identity: dict, identity_hash: str) -> tuple[str, Any]:
    """("resume", newest) when the checkpoints in `out` are this run's; otherwise refused."""
    state = read_json(newest / TRAINER_STATE)
    if is_this_run(state, identity_hash):
        return "resume", newest
    diffs = identity_diff(identity, comparable(state.get("identity", {})))
    raise FileExistsError(
        f"output directory {out} holds checkpoints of a different run "
        f"({'; '.join(diffs[:6]) or 'unknown identity'}); pass --overwrite to start over"
    )


def _stopped_while_finishing(out: Path, identity_hash: str) -> bool:
    """Whether this run was killed while moving its final adapter into place (the `FINISHING` marker is
    its own) with no checkpoint left: its adapter files are its own, and it trains again."""
    if not (out / FINISHING).exists():
        return False
    try:
        marker = read_json(out / FINISHING)
    except (OSError, ValueError):
        marker = {}
    if isinstance(marker, dict) and marker.get("identity_hash") == identity_hash:
        log.warning(
            "%s: this run was stopped while writing its final adapter, with no checkpoint left; training it again",
            out,
        )
        return True
    return False


def _no_run(out: Path) -> tuple[str, Any]:
    """A folder with no manifest and no checkpoint: "fresh" if it holds only what a run leaves before its
    first checkpoint (logs, snapshots); anything else is refused."""
    if (out / "adapter_config.json").exists():
        raise FileExistsError(
            f"output directory {out} already holds an adapter that this run did not write; "
            "pass --overwrite to replace it"
        )
    others = sorted(p.name for p in _entries(out))
    if set(others) <= {CHECKPOINTS, LOGS, SNAPSHOTS}:
        return "fresh", None
    raise FileExistsError(
        f"output directory {out} is not empty ({', '.join(others[:5])}) and holds no specprobe run; "
        "choose another directory or pass --overwrite"
    )


def clear_owned(out: Path) -> None:
    """Clear what a training run writes in `out` (`overwrite`): a finished run's files move to `PREVIOUS`
    (replacing any kept there), removed only when the new run finishes (`drop_previous`); an unfinished run's
    are removed (a finished run kept in `PREVIOUS` stays). Anything else is kept, with a warning."""
    keep = (out / MANIFEST).is_file()
    if keep:
        shutil.rmtree(out / PREVIOUS, ignore_errors=True)
        (out / PREVIOUS).mkdir()
    for name in OWNED:
        p = out / name
        if keep and (p.exists() or p.is_symlink()):
            p.replace(out / PREVIOUS / name)
        elif p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    left = [p.name for p in _entries(out)]
    if left:
        log.warning("--overwrite kept files that a training run does not write: %s", ", ".join(left[:10]))


def drop_previous(out: Path) -> None:
    """Remove the finished run an `overwrite` kept (`PREVIOUS`): the run that replaces it has finished."""
    shutil.rmtree(out / PREVIOUS, ignore_errors=True)
