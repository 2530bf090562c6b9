"""The stage cache never certifies what it did not compute: a damaged stage's removal, stopped midway,
leaves it marked done (so the next run removes it again), never an unmarked folder that a resumable
stage (training) would take as its own unfinished work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from specprobe.app.stages import DONE, run_stage, verify_outputs

FILES = ("weights.txt", "config.txt", "sub/manifest.txt", "sub/deeper/state.txt", "zz.txt")


def _keep_or_write(folder: Path) -> None:
    """A resumable stage, as training is: what it finds finished in its folder, it keeps."""
    for name in FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("computed")


def _stopped_after(real, operations: int, count: list[int]):
    """`real` (a deletion), killed once `count` (shared by the deletions) reaches `operations`."""

    def delete(*args, **kwargs):
        if count[0] == operations:
            raise KeyboardInterrupt  # killed here
        count[0] += 1
        return real(*args, **kwargs)

    return delete


def test_a_damaged_stage_is_never_resumed_from_even_when_its_removal_is_stopped(tmp_path, monkeypatch):
    root = tmp_path / "out"
    stopped = 0
    for operations in range(20):  # stop the removal after 0, 1, 2, ... unlinks and rmdirs
        shutil.rmtree(root, ignore_errors=True)
        folder = run_stage(root, "adapter-x", {"a": 1}, _keep_or_write, say=lambda s: None)
        for name in FILES:
            (folder / name).write_text("edited")  # damaged: no checksum matches
        count = [0]
        monkeypatch.setattr(os, "unlink", _stopped_after(os.unlink, operations, count))
        monkeypatch.setattr(os, "rmdir", _stopped_after(os.rmdir, operations, count))
        try:
            run_stage(root, "adapter-x", {"a": 1}, _keep_or_write, say=lambda s: None)
        except KeyboardInterrupt:
            stopped += 1
        finally:
            monkeypatch.undo()
        left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
        assert (folder / DONE).exists() or not left, f"unmarked leftovers after {operations} deletions: {left}"
        run_stage(root, "adapter-x", {"a": 1}, _keep_or_write, say=lambda s: None)
        assert all((folder / name).read_text() == "computed" for name in FILES), f"stopped after {operations}"
        assert verify_outputs(folder) == []
    assert 5 < stopped < 20, "stopped before, between and after the deletions, and once not at all"
