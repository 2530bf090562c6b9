"""Progress without a terminal (one line per stage, no carriage returns), --quiet and --verbose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specprobe.app.cli import main
from specprobe.utils import progress as progress_mod
from specprobe.utils.progress import progress, quiet_stdout, set_level, track

REPO = Path(__file__).resolve().parents[1]
OPTS = ("aspirin", "heparin", "insulin", "rest")


def qa_file(path: Path, n: int = 8) -> Path:
    items = [
        {
            "Question": f"Patient {i} has pain. Best drug?",
            "Options": list(OPTS),
            "Answer": OPTS[i % 4],
            "Specialty": ("Cardiology", "Neurology")[i % 2],
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(items))
    return path


def test_without_a_terminal_a_stage_is_one_line(capsys):
    with progress(500, "scoring", "seq") as bar:
        for _ in range(500):
            bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoring: 500/500 seq done in ") and "seq/s" in lines[0]
    assert list(track(range(7), 7, "texts", "text")) == list(range(7))
    assert capsys.readouterr().err.startswith("texts: 7/7 text done")


def test_long_stages_print_a_line_per_interval_and_stopped_stages_say_so(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "INTERVAL_S", 0.0)
    bar = progress(10, "train", "step", initial=4)
    bar.update(2)
    bar.set_postfix(loss="0.5")
    bar.update(1)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "train: 6/10 step",
        "train: 7/10 step",
        "train: 7/10 step stopped",
    ]
    assert lines[-1].endswith("loss=0.5")
    with progress(2, "short", "step") as bar:  # the last update is followed by the closing line only
        bar.update(2)
    assert [line.split(" in ")[0] for line in capsys.readouterr().err.splitlines()] == ["short: 2/2 step done"]


def test_quiet_and_disabled_show_nothing(capsys):
    with progress(3, "x", enabled=False) as bar:
        bar.update(3)
    set_level("quiet")
    try:
        with progress(3, "y") as bar:
            bar.update(3)
    finally:
        set_level("normal")
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="output level 'silent'"):
        set_level("silent")


def test_quiet_stdout_keeps_only_result_lines(capsys):
    with quiet_stdout():
        print("specialty  n  acc")
        print("Cardiology 4  0.5")
        print("wrote out.json")
        print("\nreport: r.html", end="")
    assert capsys.readouterr().out == "wrote out.json\nreport: r.html\n"


def test_cli_quiet_prints_only_the_result_path_and_errors(tiny_llama, tmp_path, capsys):
    data = qa_file(tmp_path / "qa.json")
    out = tmp_path / "r.json"
    for position in ("before", "after"):
        args = ["evaluate", "--model", str(tiny_llama[0]), "--data", str(data), "--out", str(out), "--overwrite"]
        assert main(["--quiet", *args] if position == "before" else [*args, "-q"]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"wrote {out}\n" and captured.err == "", position
    assert progress_mod.level() == "normal"  # main() leaves the level as it found it
    assert (
        main(
            [
                "-q",
                "evaluate",
                "--model",
                str(tiny_llama[0]),
                "--data",
                str(tmp_path / "nope.json"),
                "--out",
                str(out),
                "--overwrite",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and "nope.json" in captured.err
    with pytest.raises(SystemExit):
        main(["-q", "-v", "evaluate"])


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["SPECPROBE_PROGRESS_INTERVAL"] = "3600"  # interval lines are tested above; a loaded machine must not add one
    return subprocess.run(
        [sys.executable, "-m", "specprobe", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_commands_without_a_terminal_print_one_line_per_stage(tiny_llama, tmp_path):
    """finetune then evaluate with stderr a pipe (as in a log file): no redraws, one line per stage."""
    base, data = str(tiny_llama[0]), qa_file(tmp_path / "qa.json")
    ft = _run(
        "finetune",
        "--base",
        base,
        "--data",
        str(data),
        "--out",
        str(tmp_path / "a"),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        cwd=tmp_path,
    )
    assert ft.returncode == 0, ft.stderr
    ev = _run(
        "evaluate",
        "--model",
        base,
        "--adapter",
        str(tmp_path / "a"),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r.json"),
        cwd=tmp_path,
    )
    assert ev.returncode == 0, ev.stderr
    for proc in (ft, ev):
        assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    stages = [line for line in ft.stderr.splitlines() if line.startswith("finetune all:")]
    assert len(stages) == 1 and stages[0].startswith("finetune all: 4/4 step done in ")
    scoring = [line for line in ev.stderr.splitlines() if line.startswith("options ")]
    assert [line.split(":")[0] for line in scoring] == ["options base", "options tuned"]
    assert all(" seq done in " in line for line in scoring)
    assert ft.stdout.startswith(f"wrote adapter {tmp_path / 'a'}") and ev.stdout.rstrip().endswith(
        f"wrote {tmp_path / 'r.json'}"
    )
    verbose = _run(
        "-v", "evaluate", "--model", base, "--data", str(data), "--out", str(tmp_path / "v.json"), cwd=tmp_path
    )
    assert verbose.returncode == 0 and "DEBUG specprobe.app.cli: specprobe evaluate, options" in verbose.stderr
