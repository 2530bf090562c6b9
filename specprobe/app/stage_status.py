"""`specprobe stages OUT`: what an experiment folder holds, stage by stage, without running anything: which
stages are done (their files checked against their checksums), unfinished (interrupted, or running now)
or damaged, how long each took, and which specprobe version wrote it; and whether a run holds the folder.

For a long study on a cluster, this is how to see how far it got, and what a rerun will redo.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from specprobe.app.stages import DONE, read_marker, stage_seconds, verify_outputs, written_by_other_code
from specprobe.utils.locks import pid_alive, read_holder

COLUMNS = ["stage", "status", "seconds", "version", "other_code", "folder", "problem"]
_SUFFIX = re.compile(r"-[0-9a-f]{12}$")  # stages.stage_key's hash


def stage_table(root: str | Path) -> pd.DataFrame:
    """One row per stage folder under `root`/stages, in name order: stage, status (done, damaged or
    unfinished), seconds, the version that wrote it, other_code (a stage reused from another version or
    code), folder and the first problem found. Folders of earlier configurations are listed too."""
    stages = Path(root) / "stages"
    if not stages.is_dir():
        raise FileNotFoundError(f"{root}: no stages/ folder here; is it the `out` folder of an experiment?")
    rows = [_row(folder) for folder in sorted(p for p in stages.iterdir() if p.is_dir())]
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(folder: Path) -> dict[str, Any]:
    """The status row of one stage folder."""
    row: dict[str, Any] = {"stage": _SUFFIX.sub("", folder.name), "folder": folder.name, "problem": ""}
    if not (folder / DONE).exists():
        return row | {"status": "unfinished", "seconds": float("nan"), "version": "", "other_code": False}
    marker = read_marker(folder) or {}
    problems = verify_outputs(folder)
    row |= {
        "stage": str(marker.get("stage", row["stage"])),
        "status": "damaged" if problems else "done",
        "seconds": stage_seconds(folder),
        "version": str(marker.get("version", "")),
        "other_code": written_by_other_code(folder) is not None,
        "problem": problems[0] if problems else "",
    }
    return row


def holder_line(root: str | Path) -> str:
    """Whether a run holds the folder's lock now: who and since when, or that none does."""
    holder = read_holder(root)
    if holder is None:
        return "no run holds this folder"
    where = f"process {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    if holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"]):
        return f"no run holds this folder (the last was {where}; it has ended)"
    return f"a run holds this folder: {where}"


def summary_line(table: pd.DataFrame) -> str:
    """Counts by status, the seconds the finished stages took, and how many came from other code."""
    status = table["status"].tolist()
    parts = [f"{status.count(s)} {s}" for s in ("done", "unfinished", "damaged")]
    seconds = float(table.loc[table["status"] == "done", "seconds"].sum())
    reused = sum(bool(v) for v in table["other_code"].tolist())
    return f"{len(table)} stages: {', '.join(parts)}; {seconds:.0f} s of finished work" + (
        f"; {reused} written by another specprobe version or code" if reused else ""
    )
