"""The GPU check kit (`bench/gpu_check.sh`) runs end to end in its CPU mode and writes its summary.

On a GPU machine the same script runs the `cuda` tests and the bf16 benchmark on the GPU (docs/gpu.md);
here SPECPROBE_GPU_CHECK_CPU=1 runs every step on the CPU at tiny sizes, so the kit is ready when a
GPU is.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_in_cpu_mode(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECPROBE_GPU_CHECK")}
    env.update(SPECPROBE_GPU_CHECK_CPU="1", OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    summary_path = out / "gpu_check.json"
    assert summary_path.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert res.returncode == 0, (summary.get("failures"), res.stdout[-4000:])

    # the summary: every section there, the machine described, no failures
    for key in (
        "kit",
        "schema",
        "mode",
        "status",
        "created",
        "wall_s",
        "machine",
        "gpu",
        "driver",
        "torch",
        "cuda",
        "steps",
        "tests",
        "observations",
        "bench",
        "bench_shape",
        "failures",
    ):
        assert key in summary, key
    assert summary["mode"] == "cpu" and summary["status"] == "passed" and summary["failures"] == []
    assert summary["machine"]["torch"] and summary["machine"]["cuda_available"] is False

    # every cuda test ran on the CPU and passed, except QLoRA, which needs CUDA and says so
    counts, results = summary["tests"]["counts"], summary["tests"]["results"]
    assert counts["total"] == len(results) >= 12
    assert counts["failed"] == counts["error"] == 0 and counts["passed"] == counts["total"] - counts["skipped"]
    skipped = [t for t in results if t["outcome"] == "skipped"]
    assert [t["test"].split("::")[-1] for t in skipped] == ["test_qlora_4bit"] and "CUDA" in skipped[0]["message"]
    assert all(t["test"].startswith("tests/test_cuda.py::") and t["seconds"] >= 0 for t in results)

    # observed errors reach the summary
    checks = {o["check"] for o in summary["observations"]}
    assert {"compare_float32_vs_cpu", "compare_bfloat16_vs_cpu_float32", "resume_after_sigkill"} <= checks
    bf16 = next(o for o in summary["observations"] if o["check"] == "compare_bfloat16_vs_cpu_float32")
    assert 0 < bf16["max_abs_err_per_token"] < bf16["tol_per_token"]

    # steps: pytest ran; the bench ran where the S-MedQA data is, else it says why not; the 3B shape is GPU-only
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["pytest-cuda"]["status"] == "ok" and steps["bench-shape"]["status"] == "skipped"
    if steps["bench"]["status"] == "ok":
        bench = summary["bench"]
        assert bench["results"]["machine"]["dtype"] == "bfloat16" and bench["results"]["texts_per_s"]["compare"] > 0
        assert [r["metric"] for r in bench["rows"]][0] == "texts/s" and bench["table"]
        assert "compare_speedup_met" in bench["targets"] and (out / "bench.json").exists()
    else:
        assert steps["bench"]["status"] == "skipped" and "S-MedQA" in steps["bench"]["message"]

    # what comes back from a device run: at most 8 plain files, no folders
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() and re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    assert {"gpu_check.json", "gpu_check.log", "pytest.log"} <= {f.name for f in files}


def test_gpu_check_refuses_without_cuda(tmp_path):
    """Without CUDA and without the CPU mode the kit refuses at once, saying why, and leaves a summary."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECPROBE_GPU_CHECK")}
    env.update(OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 2
    assert "CUDA is not available" in res.stdout + res.stderr and "SPECPROBE_GPU_CHECK_CPU=1" in res.stdout + res.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["status"] == "refused" and "CUDA" in summary["refused"]
    assert summary["steps"] == [] and summary["tests"]["counts"]["total"] == 0


def _kit_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECPROBE_GPU_CHECK")}
    env.update({"OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "TMPDIR": str(tmp_path), **extra})
    return env


def _broken_wheel(folder: Path) -> Path:
    """A wheel whose module raises on import, as a carried bitsandbytes without its CUDA library may."""
    import base64
    import hashlib
    import zipfile

    files = {
        "brokenmod/__init__.py": "raise RuntimeError('CUDA Setup failed despite GPU being available')\n",
        "brokenmod-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: brokenmod\nVersion: 0.1\n",
        "brokenmod-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}"
        for name, text in files.items()
    ]
    files["brokenmod-0.1.dist-info/RECORD"] = "\n".join(record + ["brokenmod-0.1.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "brokenmod-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_check_site_names_a_carried_module_that_does_not_import(tmp_path, capsys):
    """peft imports bitsandbytes for every LoRA layer once it is installed: a carried module that raises on
    import must be found before the tests run (the kit then leaves it off PYTHONPATH)."""
    from bench import gpu_kit

    site = tmp_path / "site"
    (site / "goodmod").mkdir(parents=True)
    (site / "goodmod" / "__init__.py").write_text("")
    (site / "brokenmod").mkdir()
    (site / "brokenmod" / "__init__.py").write_text("raise RuntimeError('no CUDA library')\n")
    (site / "brokenmod-0.1.dist-info").mkdir()
    (site / "bin").mkdir()
    assert gpu_kit.site_modules(site) == ["brokenmod", "goodmod"]
    sys.path.insert(0, str(site))
    try:
        assert gpu_kit.main(["check-site", "--site", str(site)]) == 1
    finally:
        sys.path.remove(str(site))
        for name in ("goodmod", "brokenmod"):
            sys.modules.pop(name, None)
    assert "brokenmod: RuntimeError: no CUDA library" in capsys.readouterr().out


def test_stopped_kit_leaves_an_interim_summary(tmp_path):
    """A kit stopped from outside (the device run's own time limit kills it) still leaves gpu_check.json with
    what it found so far; and a carried wheel that does not import is reported and left off PYTHONPATH."""
    import signal
    import time

    out = tmp_path / "out"
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", SPECPROBE_GPU_CHECK_WHEELS=str(tmp_path / "wheels"))
    _broken_wheel(tmp_path / "wheels")
    proc = subprocess.Popen(
        ["bash", str(REPO / "bench" / "gpu_check.sh")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not (out / "pytest.log").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert (out / "pytest.log").exists(), "the kit never reached its pytest step"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as a run's time limit does: no trap, no final summary
        proc.communicate()
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["status"] == "incomplete" and "final summary" in summary["incomplete"]
    assert summary["machine"]["torch"] and summary["tests"]["counts"]["total"] == 0
    wheels = next(s for s in summary["steps"] if s["step"] == "wheels")
    assert wheels["status"] == "failed" and "does not import" in wheels["message"]
    assert any("step wheels: failed" in f for f in summary["failures"])


def test_gpu_check_refuses_when_the_cuda_probe_hangs(tmp_path):
    """A torch that never answers whether CUDA is available (a hung driver) is refused after the probe's
    timeout, with a summary, instead of holding the whole run."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/bash\ncase "$*" in *is_available*) sleep 600;; esac\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    env = _kit_env(tmp_path, PYTHON=str(wrapper), SPECPROBE_GPU_CHECK_PROBE_S="2")
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "did not say within 2s" in res.stdout + res.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["status"] == "refused" and "within 2s" in summary["refused"]


def test_summary_says_which_targets_a_bench_run_did_not_measure(tmp_path, capsys):
    """The --shape run measures no matmul rate: its summary line must not print it as 0%; it reports the
    shape's own target (peak model memory / weights) instead."""
    from bench import gpu_kit

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    shape = {
        "texts_per_s": {"compare": 9.3, "baseline": 1.55},
        "speedup": 6.0,
        "peak_minus_import_bytes": {"compare": 2**20, "baseline": 4 * 2**20},
        "memory_ratio": 0.25,
        "peak_memory_ratio": 1.705,
        "memory": {"target_ratio": 1.15, "target_met": False},
    }
    (out / "bench-shape.json").write_text(json.dumps(shape))
    (out / "bench-shape.log").write_text("| shape | layers |\n")
    (work / "steps.jsonl").write_text(json.dumps({"step": "bench-shape", "status": "ok", "rc": 0}) + "\n")
    gpu_kit.main(["summary", "--work", str(work), "--out-dir", str(out), "--mode", "cuda"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("bench_shape:"))
    assert "0% of the measured matmul rate" not in line and "matmul rate not measured" in line
    assert "6.00x the baseline's texts/s" in line and "1.705x the weights (target <= 1.15: NOT met)" in line
    targets = json.loads((out / "gpu_check.json").read_text())["bench_shape"]["targets"]
    assert targets["fraction_of_matmul_rate"] is None and targets["peak_memory_ratio_met"] is False


def test_the_precomputed_lexicon_is_keyed_on_the_terms_code(tmp_path, monkeypatch):
    """The carried lexicon was checked against its data file only: one built by older terms code (1,253
    terms where this code finds 1,257) was used without a word. It now records the terms code's digest."""
    from bench import gpu_kit

    (tmp_path / "specprobe" / "terms").mkdir(parents=True)
    (tmp_path / "specprobe" / "data" / "terms").mkdir(parents=True)
    (tmp_path / "specprobe" / "terms" / "build.py").write_text("RULE = 1\n")
    (tmp_path / "specprobe" / "data" / "terms" / "map.csv").write_text("a,b\n")
    monkeypatch.setattr(gpu_kit, "REPO", tmp_path)
    first = gpu_kit.terms_code_digest()
    assert gpu_kit.terms_code_digest() == first
    (tmp_path / "specprobe" / "data" / "terms" / "map.csv").write_text("a,c\n")
    assert gpu_kit.terms_code_digest() != first


def test_a_rerun_can_leave_out_steps_that_already_passed(tmp_path):
    """SPECPROBE_GPU_CHECK_STEPS runs only the named steps; the others are in the summary as skipped, saying
    why, so a second run on the same lease can spend its minutes on what the first one did not finish."""
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", SPECPROBE_GPU_CHECK_STEPS="wheels")
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res.returncode == 0, (summary.get("failures"), res.stdout[-3000:])
    steps = {s["step"]: s for s in summary["steps"]}
    for name in ("pytest-cuda", "bench", "bench-shape"):
        assert steps[name]["status"] == "skipped" and steps[name]["message"] == "not in SPECPROBE_GPU_CHECK_STEPS"
    assert steps["wheels"]["message"] != "not in SPECPROBE_GPU_CHECK_STEPS"
    assert summary["status"] == "passed" and summary["failures"] == []


def test_an_unknown_step_name_is_refused_in_one_line(tmp_path):
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", SPECPROBE_GPU_CHECK_STEPS="pytest bnech")
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert res.stdout.strip() == (
        "gpu_check: SPECPROBE_GPU_CHECK_STEPS: unknown step 'bnech' (the steps: wheels pytest bench shape)"
    )


def test_a_left_out_steps_older_files_are_not_reported_as_this_runs(tmp_path):
    """A rerun that leaves the bench out keeps the earlier bench.json in $OUT; the summary must not present
    it as measured by this run."""
    from bench import gpu_kit

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (out / "bench.json").write_text(json.dumps({"texts_per_s": {"compare": 1.0, "baseline": 1.0}, "speedup": 1.0}))
    (out / "bench.log").write_text("| metric |\n")
    steps = [{"step": "bench", "status": "skipped", "rc": None}, {"step": "bench-shape", "status": "ok", "rc": 0}]
    (work / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    summary = gpu_kit.build_summary(work, out, "cuda", None, None)
    assert summary["bench"] is None


def test_a_setting_that_is_not_a_number_is_refused_before_anything_is_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu_check.json").write_text("{}")  # an earlier run's summary
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", SPECPROBE_GPU_CHECK_CAP_BENCH_S="200s")
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert res.stdout.strip() == "gpu_check: SPECPROBE_GPU_CHECK_CAP_BENCH_S='200s' is not a whole number of seconds"
    assert (out / "gpu_check.json").read_text() == "{}"


def test_steps_may_be_separated_by_any_whitespace(tmp_path):
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", SPECPROBE_GPU_CHECK_STEPS="wheels\t\nshape\n")
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res.returncode == 0, res.stdout[-2000:]
    steps = {s["step"]: s["message"] for s in summary["steps"]}
    assert steps["bench-shape"] == "CPU mode: the llama-3.2-3b shape runs on a GPU only"  # asked for, so reached
    assert steps["bench"] == steps["pytest-cuda"] == "not in SPECPROBE_GPU_CHECK_STEPS"


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("SPECPROBE_GPU_CHECK_BUDGET_S", "08", "SPECPROBE_GPU_CHECK_BUDGET_S='08' is not a whole number of seconds"),
        ("SPECPROBE_GPU_CHECK_PROBE_S", "0", "SPECPROBE_GPU_CHECK_PROBE_S='0' is not a whole number of seconds"),
        (
            "SPECPROBE_GPU_CHECK_STEPS",
            " \t",
            "SPECPROBE_GPU_CHECK_STEPS is empty (the steps: wheels pytest bench shape)",
        ),
    ],
)
def test_settings_bash_would_misread_are_refused(tmp_path, setting, value, says):
    """A leading 0 is octal to bash's arithmetic (08 aborts it), `timeout 0` is no limit, and no steps at all
    would report "passed" having checked nothing."""
    env = _kit_env(tmp_path, SPECPROBE_GPU_CHECK_CPU="1", **{setting: value})
    res = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and res.stdout.strip() == f"gpu_check: {says}"
