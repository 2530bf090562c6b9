"""Stage caching for the experiment runner: each stage's output lives in a folder named by a hash of
its inputs and options, so a rerun skips finished stages, an interrupted one resumes, and a changed
option reruns only the stages that depend on it.

The keys hold content, never paths: the inputs' content hashes (the caller's job), the package version
and a fingerprint of the source code the stage runs (`code_fingerprint`), so `--out D` and
`--out $PWD/D` share a cache, and an upgrade that changes what a stage computes reruns it.

A stage is done only when `produce` returned: the done marker is written last, with the sha256 of
every output file. On a rerun the files are checked against it; a changed or missing file (a bit flip,
a truncated write) is reported and the stage recomputed (and, through the content keys, everything
that depends on it).

An upgrade of specprobe changes every key (the version and the code are part of it). Where a stage is
too costly to redo for that (a 70B adapter), `reusing_older(["adapter"])` lets `run_stage` take a
finished folder of the same stage with the same inputs, written by another version or code, after
checking its files; it says so, and the stages downstream key on that folder's content as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from specprobe.utils.io import atomic_write_text, sha256_file
from specprobe.utils.locks import LOCK_FILES

log = logging.getLogger(__name__)
DONE = ".done.json"
_PACKAGE = Path(__file__).resolve().parent.parent  # the specprobe package folder
#: the kinds of stage (`stage_kind`) whose finished folders from another version or code may be reused
_REUSE_OLDER: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("specprobe_reuse_older", default=())


@functools.cache
def code_fingerprint(parts: tuple[str, ...]) -> str:
    """sha256 over the source of `parts` of the specprobe package (subpackages such as "terms", or
    single files such as "app/experiment_stages.py"), by relative path and content; computed once per process."""
    h = hashlib.sha256()
    for part in sorted(set(parts)):
        target = _PACKAGE / part
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        if not any(f.is_file() for f in files):
            raise ValueError(f"no source for {part!r} in {_PACKAGE}")
        for f in files:
            if f.is_file():
                h.update(f.relative_to(_PACKAGE).as_posix().encode() + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def package_data_digests(parts: Sequence[str]) -> dict[str, str]:
    """sha256 of each data file `parts` of the specprobe package (e.g. "data/terms/abbreviations.csv"): a
    stage's inputs, not its code, so that `reuse_older` does not carry a result over a data change."""
    return {part: sha256_file(_PACKAGE / part) for part in sorted(set(parts))}


def stage_key(name: str, inputs: Any) -> str:
    """The folder name for `name` and `inputs`: the name and a hash of the inputs (JSON, sorted keys)."""
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def stage_inputs(inputs: Any, code: Sequence[str] = ()) -> dict:
    """What a stage's key hashes: its `inputs`, the package version and the fingerprint of the code it
    runs (`code`: see `code_fingerprint`). `run_stage` names the folder `stage_key(name, stage_inputs(...))`."""
    from specprobe import __version__

    return {"inputs": inputs, "version": __version__, "code": code_fingerprint(tuple(code))}


def stage_folder(root: Path, name: str, inputs: Any, code: Sequence[str] = ()) -> Path:
    """The folder `run_stage` uses for a stage."""
    return Path(root) / "stages" / stage_key(name, stage_inputs(inputs, code))


def _output_files(folder: Path) -> Iterable[Path]:
    skip = {DONE, *LOCK_FILES}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in skip and not p.name.endswith(".tmp"):
            yield p


def output_checksums(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every output file of a stage folder (not the marker or lock files)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in _output_files(folder)}


def read_marker(folder: Path) -> dict | None:
    """A stage folder's done marker; None when it is missing, unreadable or not a JSON object."""
    try:
        doc = json.loads((Path(folder) / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def verify_outputs(folder: Path) -> list[str]:
    """The problems with a finished stage's files against the checksums in its marker (empty: all good)."""
    recorded = (read_marker(folder) or {}).get("outputs")
    if not isinstance(recorded, dict):
        return [f"{folder / DONE}: unreadable done marker, or one without output checksums"]
    problems = []
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: content changed since the stage finished (sha256 mismatch)")
    return problems


def stage_kind(name: str, kinds: Iterable[str]) -> bool:
    """Whether stage `name` ("adapter-cardiology", "accuracy") is of one of `kinds` ("adapter", "accuracy")."""
    return any(name == kind or name.startswith(kind + "-") for kind in kinds)


@contextlib.contextmanager
def reusing_older(kinds: Iterable[str]) -> Iterator[None]:
    """Inside, `run_stage` may reuse a finished stage of these kinds (see `stage_kind`) that another
    specprobe version or other code wrote with the same inputs (`older_stage`), instead of redoing it."""
    token = _REUSE_OLDER.set(tuple(kinds))
    try:
        yield
    finally:
        _REUSE_OLDER.reset(token)


def _canonical(value: Any) -> str:
    """JSON with sorted keys, as a done marker records it (tuples become lists, paths strings)."""
    return json.dumps(json.loads(json.dumps(value, sort_keys=True, default=str)), sort_keys=True)


def _options_as_keyed(inputs: Any) -> Any:
    """Stage inputs with their [train] and [compare] options less those set to a default, as the keys of this
    code hold them: a stage that older code keyed with `rank = 8` written out has the same inputs as one without."""
    if not isinstance(inputs, dict):
        return inputs
    from specprobe.finetune.train_options import without_defaults
    from specprobe.probe.options import without_probe_defaults

    out = dict(inputs)
    if isinstance(out.get("train"), dict):
        out["train"] = without_defaults(out["train"])
    for name in ("compare", "options"):  # options: the general-text stage's [compare] options
        if isinstance(out.get(name), dict):
            out[name] = without_probe_defaults(out[name])
    return out


def older_stage(root: Path, name: str, inputs: Any) -> tuple[Path, dict] | None:
    """The newest finished folder of stage `name` whose marker records the same `inputs` (any version or
    code; [train]/[compare] options at their defaults count as left out) and whose files match its
    checksums, with its marker; None if there is none."""
    want, found = _canonical(_options_as_keyed(inputs)), []
    for marker in (Path(root) / "stages").glob(f"{name}-*/{DONE}"):
        doc = read_marker(marker.parent)
        if doc is not None and doc.get("stage") == name and _canonical(_options_as_keyed(doc.get("inputs"))) == want:
            if not verify_outputs(marker.parent):
                found.append((marker.stat().st_mtime, marker.parent.name, marker.parent, doc))
    if not found:
        return None
    newest = max(found, key=lambda f: f[:2])
    return newest[2], newest[3]


def _reuse_older(root: Path, name: str, inputs: Any, say: Callable[[str], None]) -> Path | None:
    """The older folder `run_stage` reuses for `name`, if `reusing_older` names its kind and one exists."""
    if not stage_kind(name, _REUSE_OLDER.get()):
        return None
    older = older_stage(root, name, inputs)
    if older is None:
        return None
    folder, doc = older
    log.warning("stage %s: reusing %s, written by specprobe %s with other code", name, folder, doc.get("version"))
    say(
        f"[reuse] {name}: done earlier by specprobe {doc.get('version')} with other code ({folder.name}); "
        "reused as asked (reuse_older)"
    )
    return folder


def remove_stage(folder: Path) -> None:
    """Delete a stage folder, its done marker last: stopped midway, it is still marked done and its files
    fail their checks, so the next run removes it again. (Without the marker, what is left would be
    resumed as an unfinished stage: training would take a finished but damaged adapter as its own.)"""
    marker = folder / DONE
    for child in folder.iterdir():
        if child == marker:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.rmtree(folder)


def run_stage(
    root: Path,
    name: str,
    inputs: Any,
    produce: Callable[[Path], Any],
    *,
    code: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> Path:
    """Run `produce(folder)` unless the folder for (name, inputs, code) is already marked done and its
    files match the marker's checksums; returns the folder. Under `reusing_older` naming this stage's
    kind, a finished folder of the same stage and inputs from another version or code is returned instead.

    `produce` writes into the folder; it may be resumable itself (training is): an interrupted stage
    is re-entered with whatever it left there. The marker is written only when `produce` returns; an
    exception or interruption (KeyboardInterrupt, `TrainingInterrupted`) propagates with the stage
    left unfinished.
    """
    folder = stage_folder(root, name, inputs, code)
    marker = folder / DONE
    if marker.exists():
        problems = verify_outputs(folder)
        if not problems:
            say(f"[skip] {name}: done earlier ({folder.name})")
            return folder
        for problem in problems:
            log.warning("stage %s: %s; recomputing it", name, problem)
        say(
            f"[warn] {name}: its output changed on disk ({problems[0]}{' ...' if len(problems) > 1 else ''}); "
            "recomputing it"
        )
        remove_stage(folder)  # a damaged output is not resumed from
    if (older := _reuse_older(root, name, inputs, say)) is not None:
        return older
    folder.mkdir(parents=True, exist_ok=True)
    say(f"[run ] {name} -> {folder.name}")
    t0 = time.perf_counter()
    produce(folder)
    seconds = time.perf_counter() - t0
    outputs = output_checksums(folder)
    atomic_write_text(
        marker,
        json.dumps(
            {
                "stage": name,
                **stage_inputs(inputs, code),
                "code_parts": list(code),
                "seconds": round(seconds, 2),
                "outputs": outputs,
            },
            default=str,
        ),
    )
    say(f"[done] {name} in {seconds:.1f} s")
    return folder


def written_by_other_code(folder: Path) -> str | None:
    """The specprobe version that wrote a finished stage folder, when that version or the code the stage
    ran (its marker's `code_parts`, fingerprinted now) differs from this one: a stage reused under
    `reusing_older`; None for a current one. A marker that cannot tell counts as other code."""
    from specprobe import __version__

    doc = read_marker(folder) or {}
    try:
        version, code, parts = doc["version"], doc["code"], tuple(doc.get("code_parts") or ())
    except (KeyError, TypeError):  # no readable marker, or one without these fields
        return "unknown"
    try:
        current = version == __version__ and code == code_fingerprint(parts)
    except (ValueError, TypeError):  # a part of the code that no longer exists
        current = False
    return None if current else str(version)


def stage_seconds(folder: Path) -> float:
    """How long a finished stage took (NaN when it is not marked done, or its marker records no number)."""
    try:
        return float((read_marker(folder) or {})["seconds"])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def finished_folder(root: Path, name: str, inputs: Any, code: Sequence[str], reuse: Iterable[str] = ()) -> Path | None:
    """The folder `run_stage` would take for a finished stage, without checking its files: this code's
    (marked done), else, when `reuse` names the stage's kind, a reusable older one (`older_stage`)."""
    folder = stage_folder(root, name, inputs, code)
    if (folder / DONE).exists():
        return folder
    older = older_stage(root, name, inputs) if stage_kind(name, reuse) else None
    return older[0] if older else None
