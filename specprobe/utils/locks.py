"""`output_lock(folder)`: one writer per output folder, across processes.

    from specprobe.utils.locks import OutputLockedError, output_lock

    with output_lock(out):          # raises OutputLockedError (a ValueError) naming the holder's PID
        ...write into out...

The lock is an OS file lock (`filelock.FileLock`: flock on Unix) on ``folder/.specprobe.lock``; the
holder's PID, host and start time are written to the sidecar ``folder/.specprobe.lock.pid`` for the
error message. The OS drops the lock of a process that dies, even by SIGKILL, so a lock left behind
by a killed run is free: the next run takes it over, and says so when the sidecar names a process
that no longer runs. The lock is not held again by a second `output_lock` of the same folder in
the same process: nested uses are counted (re-entrant), so a caller and the code it calls can both
lock one folder.

The folder is created if needed; if this call created it and nothing but the lock files is left
in it on exit (the work failed before writing anything, or raised), it is removed again, with the
parent folders the call created that are left empty. The names of the two
lock files are in `LOCK_FILES`: code that lists or hashes an output folder must skip them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".specprobe.lock"
PID_NAME = ".specprobe.lock.pid"
#: the files `output_lock` keeps in a locked folder
LOCK_FILES = (LOCK_NAME, PID_NAME)


class OutputLockedError(ValueError):
    """The output folder is locked by another run. `pid` (None if unknown), `host` and `folder` say which."""

    def __init__(self, folder: Path, pid: int | None = None, host: str | None = None, since: str | None = None):
        self.folder, self.pid, self.host, self.since = Path(folder), pid, host, since
        if pid is None:
            who = "another process"
        else:
            local = host in (None, _host())
            who = (
                f"another specprobe run (PID {pid}{'' if local else f' on {host}'}{f', since {since}' if since else ''}"
            )
            if local and not pid_alive(pid):
                who += "; that process has ended, but a process it started still holds the lock"
            who += ")"
        super().__init__(
            f"output folder {folder} is in use by {who}; wait for it to finish, or choose another output folder"
        )

    def __reduce__(self):
        return type(self), (self.folder, self.pid, self.host, self.since)


def _host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (a PID of another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(folder: str | os.PathLike) -> dict | None:
    """The sidecar of `folder`'s lock ({"pid", "host", "since", ...}), or None if absent or unreadable."""
    try:
        data = json.loads((Path(folder) / PID_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    return data


def _write_holder(folder: Path) -> None:
    tmp = folder / f"{PID_NAME}.{os.getpid()}.tmp"
    tmp.write_text(
        json.dumps({"pid": os.getpid(), "host": _host(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
        encoding="utf-8",
    )
    os.replace(tmp, folder / PID_NAME)


# folders this process holds (resolved path -> depth), so nested output_lock calls do not lock themselves out
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) for the body; yields the folder's Path.

    Raises `OutputLockedError` at once (no waiting) when another process holds it. Re-entrant within
    a process. See the module docstring for stale locks and clean-up.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output {path} exists and is not a directory")
    key = str(path.resolve())
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return

    made = _missing_folders(path)
    created = bool(made)
    path.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(path):
            previous = read_holder(path)
            if previous is not None and previous["pid"] != os.getpid():
                ended = previous.get("host") in (None, _host()) and not pid_alive(previous["pid"])
                log.warning(
                    "took over the stale lock on %s left by PID %d (%s)",
                    path,
                    previous["pid"],
                    "no longer running" if ended else "it had let the lock go",
                )
            _write_holder(path)
            with _HELD_GUARD:
                _HELD[key] = 1
            try:
                yield path
            finally:
                with _HELD_GUARD:
                    _HELD.pop(key, None)
                _release(path, created)
    finally:  # also when the body failed: a run that wrote nothing leaves no empty folder behind
        _remove_if_empty(made)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The OS file lock on `path` for the body; `OutputLockedError` at once when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = read_holder(path) or {}
        raise OutputLockedError(path, holder.get("pid"), holder.get("host"), holder.get("since")) from None
    try:
        yield
    finally:
        lock.release()


def _release(path: Path, created: bool) -> None:
    """Remove our sidecar (and, in a folder we created that holds nothing else, the lock file) while
    still holding the lock."""
    holder = read_holder(path)
    if holder is not None and holder["pid"] == os.getpid():
        try:
            (path / PID_NAME).unlink()
        except OSError:
            pass
    if created:
        try:
            left = {p.name for p in path.iterdir()}
        except OSError:
            return
        if left <= set(LOCK_FILES):
            try:
                (path / LOCK_NAME).unlink()
            except OSError:
                pass


def _missing_folders(path: Path) -> list[Path]:
    """The folders `path.mkdir(parents=True)` will create: `path` and its missing parents, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(made: list[Path]) -> None:
    """Remove the folders this lock created, innermost first, while they are empty; never any other."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            return
