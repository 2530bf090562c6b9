"""Atomic file writes, JSON and JSON-lines reading, content hashes: a crash never leaves a half-written output
behind, and damaged input is one `ValueError` naming the file (and the line)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's file-creation mask (read without changing it where Linux shows it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename. The file
    gets the permissions an ordinary write would give it (those of the file it replaces, else 0666
    less the umask), not the owner-only ones of a temporary file. A `path` that is a folder, or a
    folder that refuses the write, is an OSError naming `path` (not the temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; cannot write a file there")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:
        raise PermissionError(f"cannot write {path}: no permission to create files in {path.parent}") from exc
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Refuse, before any long work, an output `path` (a file or a folder to write into) that could not be
    written: the nearest existing folder at or above it is a file, or is not writable. The error names
    `what` (an option, like "--out") and the path."""
    given = Path(path)
    folder = given.absolute() if given.is_dir() else given.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} {given}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {given}: no permission to write in {folder}")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write JSON; a `.gz` suffix gzips it."""
    data = json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":"), allow_nan=True).encode("utf-8")
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes; a folder given for the file is an IsADirectoryError naming it and the files it holds
    (`--comparison cmp/` for cmp/comparison.json.gz), not "[Errno 21] Is a directory"."""
    path = Path(path)
    if path.is_dir():
        held = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        shown = f" (it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''})" if held else ""
        raise IsADirectoryError(f"{path} is a folder, not a file: give the file itself{shown}")
    return path.read_bytes()


def looks_like_json(text: str) -> bool:
    """Whether `text`, read where lines of plain words or texts are expected, is a JSON document or JSON
    Lines instead (the whole, or its first line, parses as an object or array): read line by line, its
    JSON syntax would become the words or texts."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return False
    for candidate in (stripped, stripped.split("\n", 1)[0]):
        try:
            if isinstance(json.loads(candidate), (dict, list)):
                return True
        except json.JSONDecodeError:
            continue
    return False


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON (gzipped or not, a UTF-8 BOM allowed); any damage is a ValueError naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    raw = read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{path}: truncated or corrupt gzip file ({exc})") from exc
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


#: JSON's names for the Python types `json.loads` returns (for "expected a JSON object, got ...")
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def parse_jsonl_line(line: str, path: str | os.PathLike, lineno: int) -> dict:
    """One JSON-lines line as a dict; anything else is a ValueError naming the file and the 1-based line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {_JSON_KINDS.get(type(obj), 'null')}")
    return obj


def _decoded(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """A line's bytes as text; invalid UTF-8 is a ValueError naming the file, the line and the byte."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: line {lineno}: not valid UTF-8 at byte {exc.start} of the line ({exc.reason}); "
            "save the file as UTF-8"
        ) from exc


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line of a JSON-lines file (a UTF-8 BOM allowed);
    lines end at newline bytes only (a U+2028 inside a string stays in its line). Bad JSON, a line that is
    not an object or invalid UTF-8 is one ValueError "<path>: line <n>: <problem>", raised on reaching that line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = _decoded(raw, path, lineno)
            if line.strip():
                yield lineno, parse_jsonl_line(line, path, lineno)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
