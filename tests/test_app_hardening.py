"""The experiment runner under interruption, damage and contention (issue 15, items 1, 2, 3 and 6):
a signal stops the run with 128 + signum and a rerun resumes to the same results; stage keys hash
content, not paths; damaged outputs are detected and recomputed; one run per output folder; specialty
names cannot collide with the all-data adapter or make file names too long."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specprobe.app.cli import main
from specprobe.app.config import ConfigError, builtin_questions
from specprobe.app.experiment import ALL_SPECIALTIES, SLUG_MAX, ExperimentConfig, RunInterrupted, run_experiment, slug
from specprobe.app.stages import DONE, run_stage
from specprobe.utils.locks import OutputLockedError

REPO = Path(__file__).resolve().parents[1]
SPECIALTIES = ["Cardiology", "Neurology"]
TRAIN = {"max_steps": 12, "batch_size": 2, "learning_rate": 1e-3, "rank": 2, "max_length": 128, "save_every": 1}
CSVS = ("compare_matrix.csv", "accuracy_matrix.csv")


def write_data(path: Path, per_specialty: int = 16, rename: dict[str, str] | None = None) -> Path:
    """A small S-MedQA file: `per_specialty` built-in questions of each of SPECIALTIES (renamed by `rename`)."""
    rows, count = [], dict.fromkeys(SPECIALTIES, 0)
    for r in json.loads(builtin_questions().read_text(encoding="utf-8")):
        spec = r["Specialty"]
        if spec in count and count[spec] < per_specialty:
            count[spec] += 1
            rows.append({**r, "Specialty": (rename or {}).get(spec, spec)})
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_toml(path: Path, base: Path, data: Path, out: str | Path, **extra) -> Path:
    lines = [
        f'base = "{base}"',
        f'data = "{data}"',
        f'out = "{out}"',
        f"specialties = {json.dumps(SPECIALTIES)}",
        "include_all = false",
        "layers = false",
        "max_texts = 6",
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "[train]",
        *(f"{k} = {json.dumps(v)}" for k, v in TRAIN.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "specprobe.app.cli", *args]


def _csvs(root: Path) -> dict[str, str]:
    return {name: (root / name).read_text(encoding="utf-8") for name in CSVS}


@pytest.fixture(scope="module")
def reference(tiny_llama, tmp_path_factory):
    """An uninterrupted `specprobe run` into the relative output folder "D"; (workdir, toml, data, base)."""
    work = tmp_path_factory.mktemp("hardening")
    base = tiny_llama[0]
    data = write_data(work / "qa.json")
    toml = write_toml(work / "exp.toml", base, data, "D")
    res = subprocess.run(_cli("run", str(toml), "--no-progress"), env=_env(), cwd=work, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return work, toml, data, base


# -- item 1: interruption ------------------------------------------------------------------------------
def test_a_signal_between_stages_stops_the_run_and_restores_the_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def say(line: str) -> None:
        if line.startswith("[done] split"):
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = ExperimentConfig(out=str(tmp_path / "exp"), specialties=["Cardiology"], include_all=False, layers=False)
    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg, progress=False, say=say)
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    assert str(info.value) == "stopped after SIGTERM; finished stages are kept; rerun the same command to resume"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    stages = tmp_path / "exp" / "stages"
    assert [p.name.split("-")[0] for p in stages.iterdir() if (p / DONE).exists()] == ["split"]


def test_a_failed_or_interrupted_stage_is_not_marked_done(tmp_path):
    def fail(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, "x", {"a": 1}, fail, say=lambda s: None)
    log: list[str] = []
    folder = run_stage(tmp_path, "x", {"a": 1}, lambda f: (f / "half.txt").write_text("whole"), say=log.append)
    assert log[0].startswith("[run ]") and (folder / "half.txt").read_text() == "whole"
    assert json.loads((folder / DONE).read_text())["outputs"].keys() == {"half.txt"}


@pytest.mark.slow
def test_sigterm_during_training_then_rerun_gives_the_same_results(reference, tmp_path):
    work, _, data, base = reference
    out = tmp_path / "out"
    toml = write_toml(tmp_path / "exp.toml", base, data, out)
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            _cli("run", str(toml), "--no-progress"), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if list(out.glob("stages/adapter-*/adapter/checkpoints/step-*")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before training was seen: {err_path.read_text()[-3000:]}"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    stderr = err_path.read_text()
    assert rc == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "rerun the same command" in stderr.strip().splitlines()[-1]
    adapters = list(out.glob("stages/adapter-*"))
    assert adapters and not all((a / DONE).exists() for a in adapters), "the interrupted adapter stage is not done"
    assert not (out / "compare_matrix.csv").exists()

    res = subprocess.run(
        _cli("run", str(toml), "--no-progress"), env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert _csvs(out) == _csvs(work / "D")


# -- item 2: the cache keys on content and checks what is on disk ----------------------------------------
@pytest.mark.slow
def test_relative_and_absolute_out_share_every_stage(reference):
    work, _, data, base = reference
    cfg = ExperimentConfig(
        base=str(base),
        data=str(data),
        out=str(work / "D"),
        specialties=SPECIALTIES,
        include_all=False,
        layers=False,
        max_texts=6,
        train=dict(TRAIN),
    )
    log: list[str] = []
    run_experiment(cfg, progress=False, say=log.append)
    assert log and all(line.startswith(("[skip]", "[note]")) for line in log), log


@pytest.mark.slow
def test_damaged_outputs_are_detected_and_recomputed(reference, tmp_path):
    work, _, data, base = reference
    out = tmp_path / "copy"
    shutil.copytree(work / "D", out)
    toml = write_toml(tmp_path / "exp.toml", base, data, out)
    weights = next(out.glob("stages/adapter-cardiology-*/adapter/adapter_model.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x10  # one bit of the last tensor
    weights.write_bytes(bytes(raw))
    comparison = next(out.glob("stages/compare-neurology-*/comparison.json.gz"))
    comparison.write_bytes(comparison.read_bytes()[:-20])  # a truncated gzip file

    res = subprocess.run(
        _cli("run", str(toml), "--no-progress"), env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "EOFError" not in res.stderr and "Traceback" not in res.stderr
    assert str(weights) in res.stderr and str(comparison) in res.stderr  # the warnings name the files
    reran = [line.split()[2] for line in res.stdout.splitlines() if line.startswith("[run ]")]
    assert "adapter-cardiology" in reran and "compare-neurology" in reran
    assert "adapter-neurology" not in reran and "split" not in reran
    # the recomputed comparison holds the same numbers (a new time stamp): the analyses that read it are kept
    assert "seen-unseen-neurology" not in reran and "accuracy_link" not in reran
    assert _csvs(out) == _csvs(work / "D")


# -- item 3: one run per output folder --------------------------------------------------------------------
def test_a_second_run_into_a_locked_folder_names_the_holder(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_utils_locks import hold_in_subprocess

    from specprobe.app.cli import main

    out = tmp_path / "out"
    holder = hold_in_subprocess(out)
    try:
        with pytest.raises(OutputLockedError, match=rf"PID {holder.pid}\b"):
            run_experiment(ExperimentConfig(out=str(out)), progress=False, say=lambda s: None)
        toml = tmp_path / "exp.toml"
        toml.write_text(f'out = "{out}"\n', encoding="utf-8")
        rc = main(["run", str(toml), "--no-progress"])
        err = capsys.readouterr().err
        assert rc != 0 and f"PID {holder.pid}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        rc = main(["demo", "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc != 0 and f"PID {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "stages").exists()


# -- item 6: specialty names ------------------------------------------------------------------------------
def test_a_specialty_named_like_the_all_data_adapter_is_refused(tmp_path):
    data = write_data(tmp_path / "qa.json", 8, rename={"Neurology": ALL_SPECIALTIES})
    cfg = ExperimentConfig(data=str(data), out=str(tmp_path / "exp"), layers=False)
    with pytest.raises(ValueError, match="named 'All specialties'.*include_all = false"):
        run_experiment(cfg, progress=False, say=lambda s: None)
    assert not list((tmp_path / "exp" / "stages").glob("lexicon-*")), "refused before the long stages"


def test_slugs_are_short_and_distinct():
    long_a, long_b = "A" * 300, "A" * 299 + "B"
    assert slug("Infectious diseases") == "infectious-diseases"
    assert len(slug(long_a)) <= SLUG_MAX + 9 and slug(long_a) != slug(long_b)
    assert slug("Ärzte") != slug("rzte") and slug("心脏") and slug("心脏") != slug("肺")


@pytest.mark.slow
def test_a_300_character_specialty_runs(tiny_llama, tmp_path):
    name = "Cardiology " + "x" * 289
    data = write_data(tmp_path / "qa.json", 8, rename={"Cardiology": name})
    cfg = ExperimentConfig(
        base=str(tiny_llama[0]),
        data=str(data),
        out=str(tmp_path / "exp"),
        specialties=[name],
        include_all=False,
        layers=False,
        max_texts=4,
        train={"max_steps": 1, "batch_size": 2, "rank": 2, "max_length": 128},
    )
    res = run_experiment(cfg, progress=False, say=lambda s: None)
    assert set(res.comparisons) == {name} and name in set(res.compare_matrix["finetune_specialty"])
    assert all(len(p.name) < 100 for p in (tmp_path / "exp" / "stages").iterdir())


# -- bad configuration: refused when read, naming the file and the key ----------------------------------
@pytest.mark.parametrize(
    "table, line, message",
    [
        # was: "training option weight_decay: must be >= 0, got -1", after the lexicon stage, no file named
        ("train", "weight_decay = -1", r"train\.weight_decay: must be >= 0, got -1$"),
        ("train", 'template = "no question"', r"train\.template: the prompt template must contain \{question\}"),
        ("train", 'save_steps = "0,x"', r"train\.save_steps: must be steps separated by commas"),
        # was: found only when the first compare stage started, after every adapter was trained
        ("compare", 'device = "gpu"', r"compare\.device: unknown device 'gpu'; use auto, cpu, cuda, cuda:N"),
        ("compare", 'dtype = "float17"', r"compare\.dtype: unknown dtype 'float17'; use one of"),
    ],
)
def test_a_bad_option_is_refused_when_the_config_is_read(tmp_path, capsys, table, line, message):
    path = tmp_path / "exp.toml"
    path.write_text(f'out = "{tmp_path / "out"}"\n[{table}]\n{line}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}"):
        ExperimentConfig.from_toml(path)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(path) in err
    assert not (tmp_path / "out").exists()  # no stage started


def test_demo_specialties_without_a_name_is_an_error_not_every_specialty(tmp_path, capsys):
    # was: `--specialties` with no value ran the whole demo on every specialty
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--out", str(tmp_path / "demo"), "--specialties"])
    assert stop.value.code == 2 and "--specialties: expected at least one argument" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_the_report_is_written_under_the_runs_hold_of_the_output_lock(tmp_path, monkeypatch):
    """run_experiment released the output folder's lock on return and the report was written after it: a
    second run could take the folder in between and write its results, which this report then described."""
    import specprobe.app.demo_cli as demo_cli
    import specprobe.app.experiment as experiment
    from specprobe.app.experiment import ExperimentConfig
    from specprobe.utils import locks

    held: list[bool] = []
    key = str((tmp_path / "out").resolve())
    monkeypatch.setattr(experiment, "run_experiment", lambda cfg, **kw: "result")
    monkeypatch.setattr(demo_cli, "_finish", lambda result, started: held.append(key in locks._HELD) or 0)
    assert demo_cli.run_and_finish(ExperimentConfig(out=str(tmp_path / "out")), 0.0) == 0
    assert held == [True] and key not in locks._HELD
