"""`specprobe stages OUT`: each stage folder's status (done, damaged, unfinished), its time and the version
that wrote it, whether a run holds the folder; nothing is run or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import specprobe
from specprobe.app.cli import main
from specprobe.app.stage_status import stage_table
from specprobe.app.stages import run_stage
from specprobe.utils.locks import output_lock


def _stage(root, name, text, monkeypatch=None, version=None):
    if monkeypatch is not None and version is not None:
        monkeypatch.setattr(specprobe, "__version__", version)
    return run_stage(
        root, name, {"name": name}, lambda f: (f / "out.txt").write_text(text, encoding="utf-8"), say=lambda _: None
    )


def _folder(tmp_path, monkeypatch):
    """An experiment folder with one stage of each status, one of them from an older version."""
    root = tmp_path / "exp"
    current = specprobe.__version__
    _stage(root, "adapter-old", "a", monkeypatch, "0.0.1")  # an older version wrote it
    monkeypatch.setattr(specprobe, "__version__", current)
    _stage(root, "compare-a", "b")
    damaged = _stage(root, "compare-b", "c")
    (damaged / "out.txt").write_text("changed", encoding="utf-8")
    (root / "stages" / "layers-a-0123456789ab").mkdir()  # interrupted: no done marker
    return root


def test_the_table_reads_each_folders_status(tmp_path, monkeypatch):
    table = stage_table(_folder(tmp_path, monkeypatch)).set_index("stage")
    assert table.loc["adapter-old", "status"] == "done" and table.loc["adapter-old", "version"] == "0.0.1"
    assert bool(table.loc["adapter-old", "other_code"]) and not bool(table.loc["compare-a", "other_code"])
    assert table.loc["compare-a", "status"] == "done"
    assert table.loc["compare-b", "status"] == "damaged" and "sha256 mismatch" in table.loc["compare-b", "problem"]
    assert table.loc["layers-a", "status"] == "unfinished"


def test_the_command_prints_the_table_a_summary_and_the_holder(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path, monkeypatch)
    assert main(["stages", str(root)]) == 0
    out = capsys.readouterr().out
    assert "4 stages: 2 done, 1 unfinished, 1 damaged" in out and "1 written by another specprobe version" in out
    assert "damaged: " in out and "no run holds this folder" in out
    with output_lock(root):
        assert main(["stages", str(root), "--json"]) == 0
        records = json.loads(capsys.readouterr().out)
        assert {r["stage"] for r in records} == {"adapter-old", "compare-a", "compare-b", "layers-a"}
        assert main(["-q", "stages", str(root)]) == 0, "a display command keeps its output under --quiet"
        assert f"a run holds this folder: process {os.getpid()}" in capsys.readouterr().out


def test_a_folder_without_stages_is_one_line(tmp_path, capsys):
    assert main(["stages", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("specprobe stages: error:") and "no stages/ folder" in err and "\n" not in err


def test_a_reader_that_stops_early_is_not_an_error(tmp_path, monkeypatch):
    """A reader that closes the pipe at once (the output waits in Python's buffer until the end) or after
    one line of an output larger than a pipe holds (64 KiB): exit 0, nothing on stderr."""
    root = _folder(tmp_path, monkeypatch)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as usual

    def piped(reader: str) -> subprocess.CompletedProcess:
        command = f"set -o pipefail; {sys.executable} -m specprobe.app.cli stages {root} | {reader}"
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)

    res = piped("(exec 0<&-; sleep 2)")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    for i in range(2000):
        (root / "stages" / f"trajectory-{i:04d}-0123456789ab").mkdir()
    res = piped("head -1")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.split()[:2] == ["stage", "status"]


def test_an_odd_marker_is_a_damaged_row_not_a_crash(tmp_path):
    root = tmp_path / "exp"
    for name, marker in (
        ("compare-a-0123456789ab", "[]"),
        ("compare-b-0123456789ab", '{"seconds": null, "outputs": {}}'),
    ):
        (root / "stages" / name).mkdir(parents=True)
        (root / "stages" / name / ".done.json").write_text(marker, encoding="utf-8")
    table = stage_table(root).set_index("folder")
    assert table.loc["compare-a-0123456789ab", "status"] == "damaged"
    assert table.loc["compare-b-0123456789ab", "status"] == "done"
    assert bool(table["seconds"].isna().all())
