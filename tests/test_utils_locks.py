"""`output_lock`: one writer per output folder; the holder's PID in the error; stale locks taken over."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from specprobe.utils.locks import LOCK_NAME, PID_NAME, OutputLockedError, output_lock, pid_alive, read_holder

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import sys, time
    from specprobe.utils.locks import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def hold_in_subprocess(folder: Path) -> subprocess.Popen:
    """A Python process that holds `folder`'s lock until killed (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        raise AssertionError(f"the holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def test_lock_writes_the_holder_and_cleans_up(tmp_path):
    out = tmp_path / "new" / "out"
    with output_lock(out) as folder:
        assert folder == out and out.is_dir()
        holder = read_holder(out)
        assert holder["pid"] == os.getpid() and holder["host"]
        with output_lock(out):  # re-entrant within a process
            assert read_holder(out)["pid"] == os.getpid()
        assert (out / PID_NAME).exists()  # still held by the outer one
    assert not out.exists(), "a folder the lock created and nothing else used is removed again"

    kept = tmp_path / "kept"
    with output_lock(kept):
        (kept / "result.json").write_text("{}")
    assert sorted(p.name for p in kept.iterdir()) in (["result.json"], [LOCK_NAME, "result.json"])

    existing = tmp_path / "existing"
    existing.mkdir()
    with output_lock(existing):
        pass
    assert existing.is_dir() and not (existing / PID_NAME).exists()  # a folder it did not create stays


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        with output_lock(tmp_path / "f"):
            pass


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "out"
    proc = hold_in_subprocess(out)
    try:
        with pytest.raises(OutputLockedError, match=rf"in use by another specprobe run \(PID {proc.pid}\b") as info:
            with output_lock(out):
                pytest.fail("got a lock another process holds")
        assert info.value.pid == proc.pid and isinstance(info.value, ValueError)
        again = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries (DDP broadcast)
        assert again.pid == proc.pid and str(again) == str(info.value)
        # the refused attempt left the holder's files alone
        assert json.loads((out / PID_NAME).read_text())["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    proc = hold_in_subprocess(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(out)["pid"] == proc.pid and not pid_alive(proc.pid)  # what a SIGKILL leaves behind
    with caplog.at_level(logging.WARNING, logger="specprobe.utils.locks"):
        with output_lock(out):
            assert read_holder(out)["pid"] == os.getpid()
    assert f"left by PID {proc.pid} (no longer running)" in caplog.text
    assert not (out / PID_NAME).exists()


def test_a_failed_body_leaves_no_folder_it_created(tmp_path):
    """A body that raised (a finetune refused after the lock was taken: save_steps past the last step, a bad
    target module) left the empty folder behind; the folders the lock made are removed, not one that existed."""
    out = tmp_path / "runs" / "a" / "lora"
    with pytest.raises(ValueError, match="boom"):
        with output_lock(out):
            raise ValueError("boom")
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError, match="boom"):
        with output_lock(existing / "lora"):
            raise ValueError("boom")
    assert existing.is_dir() and not (existing / "lora").exists()
    with output_lock(out):
        (out / "result.json").write_text("{}")
    assert (out / "result.json").exists()
