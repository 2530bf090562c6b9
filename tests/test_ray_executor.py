"""The experiment runner on Ray (issue 14): every stage a Ray task that reads only its inputs' outputs;
the same stage folders, hence the same CSVs, caching and resume as the local executor; a failed stage
names itself; without Ray, `--executor ray` is a one-line error naming the extra.

The Ray tests run on one local Ray instance (2 CPUs) shared by the module; they skip when Ray is not
installed, except under CI (CI=true), where Ray is required.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specprobe.app.cli import main
from specprobe.app.config import ExperimentConfig, builtin_questions
from specprobe.app.executors import LocalExecutor, Step, make_executor
from specprobe.app.experiment import RunInputs, plan_steps, run_experiment
from specprobe.app.stages import DONE

SPECIALTIES = ["Cardiology", "Neurology"]
TRAIN = {
    "max_steps": 6,
    "batch_size": 2,
    "learning_rate": 1e-3,
    "rank": 2,
    "max_length": 128,
    "save_every": 1,
    "save_steps": [3],  # snapshots, so that the trajectory analysis runs too
}
CSVS = ("compare_matrix.csv", "accuracy_matrix.csv")
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def require_ray():
    """The ray module; skips the test without it, except under CI, where a missing Ray fails it."""
    if os.environ.get("CI") == "true":
        import ray  # CI installs the ray extra: a missing Ray is a failure there

        return ray
    return pytest.importorskip("ray", reason="Ray is not installed (pip install 'specprobe[ray]')")


def write_data(path: Path, per_specialty: int = 10) -> Path:
    """A small S-MedQA file: the first `per_specialty` built-in questions of each of SPECIALTIES."""
    rows, count = [], dict.fromkeys(SPECIALTIES, 0)
    for r in json.loads(builtin_questions().read_text(encoding="utf-8")):
        if r["Specialty"] in count and count[r["Specialty"]] < per_specialty:
            count[r["Specialty"]] += 1
            rows.append(r)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def config(base: Path, data: Path, out: Path, **extra) -> ExperimentConfig:
    return ExperimentConfig(
        base=str(base),
        data=str(data),
        out=str(out),
        specialties=SPECIALTIES,
        include_all=False,
        max_texts=4,
        train=dict(TRAIN),
        **extra,
    )


def write_toml(path: Path, cfg: ExperimentConfig) -> Path:
    tables = ("train", "compare", "resources")
    lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.recorded().items() if k not in tables and v is not None]
    for table in tables:
        values = getattr(cfg, table)
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
        lines += [f"{k} = {{ {_inline(v)} }}" for k, v in values.items() if isinstance(v, dict)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _inline(table: dict) -> str:
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items())


def csvs(root: Path) -> dict[str, str]:
    return {name: (root / name).read_text(encoding="utf-8") for name in CSVS}


def markers(root: Path) -> dict[str, float]:
    """Finished stage folder -> the modification time of its done marker."""
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "stages").glob(f"*/{DONE}")}


# -- without Ray -----------------------------------------------------------------------------------------
def test_without_ray_the_cli_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is absent
    toml = write_toml(tmp_path / "exp.toml", config(tmp_path / "base", tmp_path / "qa.json", tmp_path / "out"))
    assert main(["run", str(toml), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'specprobe[ray]'" in err[0], err
    assert not (tmp_path / "out").exists(), "nothing runs when the executor cannot start"


def test_an_address_without_the_ray_executor_is_refused(tmp_path, capsys):
    toml = write_toml(tmp_path / "exp.toml", config(tmp_path / "base", tmp_path / "qa.json", tmp_path / "out"))
    assert main(["run", str(toml), "--address", "auto"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err


def test_the_resources_table_is_checked_and_kept_out_of_the_record(tmp_path):
    good = config(tmp_path, tmp_path, tmp_path, resources={"train": {"gpus": 1}, "compare": {"cpus": 2}})
    assert good.resources["train"] == {"gpus": 1} and "resources" not in good.recorded()
    toml = write_toml(tmp_path / "e.toml", good)
    assert ExperimentConfig.from_toml(toml).resources == good.resources
    toml.write_text(toml.read_text().replace("gpus = 1", "gpu = 1"))
    with pytest.raises(ValueError, match=r"e.toml: resources.train.gpu: unknown key; valid resources.train keys"):
        ExperimentConfig.from_toml(toml)
    with pytest.raises(ValueError, match=r"resources.trian: unknown key"):
        config(tmp_path, tmp_path, tmp_path, resources={"trian": {"gpus": 1}})


def test_more_than_one_gpu_must_be_whole(tmp_path):
    """Ray gives fractions of one GPU (0.5) or whole GPUs (2); 1.5 failed only when the task was submitted,
    after Ray had started, in a message split in two quoted halves."""
    for gpus in (0.5, 1, 2.0, 4):
        assert config(tmp_path, tmp_path, tmp_path, resources={"compare": {"gpus": gpus}}).resources
    toml = write_toml(tmp_path / "e.toml", config(tmp_path, tmp_path, tmp_path, resources={"train": {"gpus": 2}}))
    toml.write_text(toml.read_text().replace("gpus = 2", "gpus = 1.5"))
    with pytest.raises(
        ValueError, match=r"^\S*e.toml: resources.train.gpus: must be a whole number when above 1 .*got 1.5$"
    ):
        ExperimentConfig.from_toml(toml)


def _plan(tmp_path: Path, in_process: bool) -> dict[str, Step]:
    cfg = config(tmp_path, tmp_path, tmp_path)
    for name in ("train.json", "test.json"):
        (tmp_path / name).write_text("[]")
    run = RunInputs(
        cfg, tmp_path, "h", {}, tmp_path / "train.json", tmp_path / "test.json", [(s, s) for s in SPECIALTIES]
    )
    return {step.name: step for step in plan_steps(run, in_process=in_process, progress=False)}


def test_each_step_reads_only_the_stages_whose_outputs_it_needs(tmp_path):
    steps = _plan(tmp_path, in_process=False)
    deps = {name: set(step.dependencies()) for name, step in steps.items()}
    assert deps["lexicon"] == set() and deps["adapter-cardiology"] == set() == deps["adapter-neurology"]
    assert deps["accuracy-cardiology"] == {"adapter-cardiology"}
    assert deps["accuracy-neurology"] == {"adapter-neurology"}
    assert deps["accuracy"] == {"adapter-cardiology", "adapter-neurology", "accuracy-cardiology", "accuracy-neurology"}
    for kind in ("compare", "layers"):
        assert deps[f"{kind}-neurology"] == {"lexicon", "adapter-neurology"}
    assert deps["report"] == set(steps) - {"report", "accuracy-cardiology", "accuracy-neurology"}
    assert [s.kind for s in steps.values()].count("train") == 2 and steps["compare-cardiology"].kind == "compare"
    assert steps["accuracy-cardiology"].kwargs["with_base"] and not steps["accuracy-neurology"].kwargs["with_base"]
    local = _plan(tmp_path, in_process=True)  # the local executor: one accuracy stage, as before
    assert [n for n in local if n.startswith("accuracy") and n != "accuracy_link"] == ["accuracy"]
    assert set(local["accuracy"].dependencies()) == {"adapter-cardiology", "adapter-neurology"}
    assert (
        list(local).index("accuracy") < list(local).index("compare-cardiology") < list(local).index("layers-cardiology")
    )


def _finish_adapters_and_accuracy(tmp_path: Path) -> tuple[RunInputs, Path]:
    """A plan's inputs whose adapter and accuracy stages are marked done (stand-in files); the accuracy folder."""
    from specprobe.app.experiment import accuracy_key, adapter_key
    from specprobe.app.experiment_stages import ACCURACY_CODE, ACCURACY_FILE, ADAPTER_CODE, ADAPTER_DIR, slug
    from specprobe.app.stages import run_stage

    cfg = config(tmp_path, tmp_path, tmp_path)
    tmp_path.mkdir(exist_ok=True)
    for name in ("train.json", "test.json"):
        (tmp_path / name).write_text("[]")
    targets: list[tuple[str, str | None]] = [(s, s) for s in SPECIALTIES]
    run = RunInputs(cfg, tmp_path, "h", {}, tmp_path / "train.json", tmp_path / "test.json", targets)
    adapters = {}
    for name, spec in targets:

        def produce(folder: Path, name: str = name) -> None:
            (folder / ADAPTER_DIR).mkdir()
            (folder / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps({"r": 2}))
            (folder / ADAPTER_DIR / "adapter_model.safetensors").write_bytes(name.encode())
            (folder / ADAPTER_DIR / "training_manifest.json").write_text("{}")

        key = adapter_key("h", {}, run.train_path, spec, cfg.train)
        folder = run_stage(tmp_path, f"adapter-{slug(name)}", key, produce, code=ADAPTER_CODE, say=lambda s: None)
        adapters[name] = str(folder / ADAPTER_DIR)
    key = accuracy_key("h", {}, adapters, cfg.train, run.test_path)
    write = lambda f: (f / ACCURACY_FILE).write_text("{}")  # noqa: E731
    return run, run_stage(tmp_path, "accuracy", key, write, code=ACCURACY_CODE, say=lambda s: None)


def _accuracy_kinds(run: RunInputs) -> dict[str, str]:
    steps = plan_steps(run, in_process=False, progress=False)
    return {s.name: s.kind for s in steps if s.name.startswith("accuracy") and s.name != "accuracy_link"}


def test_a_damaged_accuracy_or_adapter_stage_is_measured_in_parts_with_the_accuracy_resources(tmp_path):
    """Done and intact, the accuracy stage is one step that only checks its files (`report` resources);
    damaged, it is measured again, so per adapter with the `accuracy` resources (GPUs), not in one report task."""
    run, accuracy = _finish_adapters_and_accuracy(tmp_path)
    assert _accuracy_kinds(run) == {"accuracy": "report"}
    parts = {"accuracy-cardiology": "accuracy", "accuracy-neurology": "accuracy", "accuracy": "report"}
    (accuracy / "accuracy.json").write_text('{"damaged": true}')
    assert _accuracy_kinds(run) == parts
    run, _ = _finish_adapters_and_accuracy(tmp_path / "two")  # a damaged adapter is retrained, then measured
    next((tmp_path / "two").glob("stages/adapter-neurology-*/adapter/training_manifest.json")).write_text("[]")
    assert _accuracy_kinds(run) == parts


def test_the_local_executor_runs_steps_in_order_and_refuses_a_step_before_its_input():
    calls: list[str] = []

    def step(tag: str, **inputs) -> str:
        calls.append(tag)
        return tag + "".join(sorted(str(v) for v in inputs.values()))

    steps = [Step("a", "lexicon", step, {"tag": "a"}), Step("b", "train", step, {"tag": "b"}, {"x": "a"})]
    assert LocalExecutor().run(steps) == {"a": "a", "b": "ba"} and calls == ["a", "b"]
    with pytest.raises(ValueError, match="step 'b' reads \\['a'\\], which do not run before it"):
        LocalExecutor().run(steps[::-1])


def test_ray_task_options_come_from_the_resources_table():
    require_ray()
    from specprobe.app.executors_ray import task_options

    resources = {"train": {"gpus": 1, "cpus": 2, "custom": {"a100": 1}}, "compare": {"gpus": 0.5, "memory_gb": 2}}
    assert task_options(Step("adapter-x", "train", print), resources) == {
        "name": "adapter-x",
        "num_cpus": 2,
        "num_gpus": 1,
        "resources": {"a100": 1},
    }
    compare = task_options(Step("compare-x", "compare", print), resources)
    assert compare["num_gpus"] == 0.5 and compare["memory"] == 2 * 1024**3 and compare["num_cpus"] == 1
    assert task_options(Step("lexicon", "lexicon", print), resources) == {
        "name": "lexicon",
        "num_cpus": 1,
        "num_gpus": 0,
    }


# -- on Ray ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module (2 CPUs, no dashboard); its GCS address. Tests name it first,
    so that without Ray they skip before the local run is made."""
    ray = require_ray()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, runtime_env={"env_vars": dict(ENV)})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(tiny_llama, tmp_path_factory):
    """(work folder, base, data, the local run's output folder): an uninterrupted local run."""
    work = tmp_path_factory.mktemp("ray-executor")
    base, data = tiny_llama[0], write_data(work / "qa.json")
    run_experiment(config(base, data, work / "local"), progress=False, say=lambda s: None)
    return work, base, data, work / "local"


@pytest.fixture(scope="module")
def ray_run(ray_address, setup):
    """The same experiment run by the Ray executor (connected to the module's instance); its output folder."""
    work, base, data, _ = setup
    run_experiment(config(base, data, work / "ray"), progress=False, executor=make_executor("ray"))
    return work / "ray"


@pytest.mark.slow
def test_a_stage_no_node_can_run_is_refused_before_anything_runs(ray_address, monkeypatch, caplog):
    """Ray keeps a task that asks for more than any node has pending for ever (a GPU on a machine
    without one): the run that started its own Ray instance refuses in one line; on a cluster, which
    an autoscaler may grow, it says why it waits."""
    import ray

    from specprobe.app import executors_ray

    calls: list[str] = []
    steps = [Step("lexicon", "lexicon", calls.append, {"s": "lexicon"}), Step("adapter-x", "train", calls.append)]
    resources = {"train": {"gpus": 1, "cpus": 2}, "lexicon": {"memory_gb": 0.5}}
    assert executors_ray.unschedulable(steps[:1], resources) is None
    expected = (
        "stage adapter-x asks Ray for CPU 2, GPU 1 (resources.train), but no node of the Ray cluster has that "
        "(the most any node has: CPU 2, GPU 0)"
    )
    assert executors_ray.unschedulable(steps, resources) == expected
    monkeypatch.setenv("RAY_ADDRESS", ray_address)  # `ray.init()` would join this cluster: not its own instance
    assert not executors_ray._starts_own_instance()
    monkeypatch.delenv("RAY_ADDRESS")
    # as if no Ray ran yet and the run started its own instance (the module's stays up)
    monkeypatch.setattr(executors_ray, "_starts_own_instance", lambda: True)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(executors_ray.RayExecutor, "_connect", lambda self: True)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(
        ValueError, match=r"^stage adapter-x asks Ray for CPU 2, GPU 1 .* lower it in the \[resources\]"
    ):
        make_executor("ray", resources=resources).run(steps)
    assert calls == [], "nothing ran"
    with caplog.at_level(logging.WARNING, logger="specprobe.app.executors_ray"):
        executors_ray._check_schedulable(steps, resources, refuse=False)
    assert "it waits until such a node joins" in caplog.text


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "specprobe.app.cli", *args]


@pytest.mark.slow
def test_a_ray_run_writes_the_local_runs_csvs_and_stages(ray_address, setup, ray_run):
    local = setup[3]
    assert csvs(ray_run) == csvs(local)
    parts = {"accuracy-cardiology", "accuracy-neurology"}  # Ray measures each adapter's accuracy in its own task
    ray_stages = {name.rsplit("-", 1)[0]: name for name in markers(ray_run)}
    assert set(ray_stages) - parts == {name.rsplit("-", 1)[0] for name in markers(local)}
    assert {v for k, v in ray_stages.items() if k not in parts} == set(markers(local)), "the same stage folders"
    analyses = {"seen-unseen-cardiology", "trajectory-neurology", "general-text-cardiology", "accuracy_link"}
    assert analyses <= set(ray_stages), "the analyses run as Ray tasks too"
    paths = json.loads((ray_run / "experiment.json").read_text(encoding="utf-8"))["extras"]["paths"]
    assert {k for k in ("seen_unseen", "accuracy_link", "trajectory", "general_text") if paths.get(k)} == {
        "seen_unseen",
        "accuracy_link",
        "trajectory",
        "general_text",
    }


@pytest.mark.slow
def test_each_executor_reuses_the_others_stages(ray_address, setup, ray_run, tmp_path):
    work, base, data, local = setup
    log: list[str] = []  # the local executor reuses every stage the Ray run finished
    run_experiment(config(base, data, ray_run), progress=False, say=log.append)
    assert log and not [line for line in log if not line.startswith(("[skip]", "[note]"))]
    assert csvs(ray_run) == csvs(local)

    out = tmp_path / "out"  # and Ray every stage of a local run: no accuracy measured again per adapter
    shutil.copytree(local / "stages", out / "stages")
    before = markers(out)
    run_experiment(config(base, data, out), progress=False, executor=make_executor("ray"))
    assert markers(out) == before and csvs(out) == csvs(local)


def _start_ray_run(toml: Path, ray_address: str, err) -> subprocess.Popen:
    """`specprobe run TOML --executor ray` on the test cluster, in the background, stderr into `err`."""
    return subprocess.Popen(
        _cli("run", str(toml), "--no-progress", "--executor", "ray", "--address", ray_address),
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=err,
    )


@pytest.mark.slow
def test_sigkill_of_the_driver_then_a_rerun_gives_the_uninterrupted_csvs(ray_address, setup, tmp_path):
    work, base, data, local = setup
    out = tmp_path / "out"
    toml = write_toml(tmp_path / "exp.toml", config(base, data, out))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = _start_ray_run(toml, ray_address, err)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list(out.glob("stages/adapter-*/adapter/checkpoints/step-*")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before training was seen: {(tmp_path / 'stderr.txt').read_text()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "compare_matrix.csv").exists(), "killed before the end"
    assert not all((p / DONE).exists() for p in out.glob("stages/adapter-*")), "killed during training"

    run_experiment(config(base, data, out), progress=False, executor=make_executor("ray"))
    assert csvs(out) == csvs(local)


@pytest.mark.slow
def test_sigterm_stops_a_ray_run_with_143_and_one_line(ray_address, setup, tmp_path):
    """Ray turns an exception raised by a signal handler while it waits into a bare KeyboardInterrupt;
    the driver still ends as under the local executor."""
    work, base, data, local = setup
    out = tmp_path / "out"
    toml = write_toml(tmp_path / "exp.toml", config(base, data, out))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = _start_ray_run(toml, ray_address, err)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not list(out.glob("stages/adapter-*")):
            time.sleep(0.02)  # a task has started: the driver waits in Ray
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "specprobe: stopped after SIGTERM; finished stages are kept; rerun the same command to resume"
    )


@pytest.mark.slow
def test_a_failed_stage_names_itself_and_finished_stages_are_reused(ray_address, setup, ray_run, tmp_path):
    work, base, data, local = setup
    out = tmp_path / "out"
    shutil.copytree(ray_run / "stages", out / "stages")  # stage keys hold content: a copy is reused
    for stage in out.glob("stages/*"):
        if not stage.name.startswith(("split-", "lexicon-", "adapter-neurology-")):
            shutil.rmtree(stage)
    bad = config(base, data, out, compare={"long_texts": "error", "max_length": 4})  # an error when compare runs
    toml = write_toml(tmp_path / "exp.toml", bad)
    res = subprocess.run(
        _cli("run", str(toml), "--no-progress", "--executor", "ray", "--address", ray_address),
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert last.startswith("specprobe run: error: stage ") and "more than max_length=4" in last, last
    assert any(
        f"stage {kind}-{spec} failed" in last for kind in ("compare", "layers") for spec in ("cardiology", "neurology")
    )
    done = markers(out)
    names = {name.rsplit("-", 1)[0] for name in done}
    assert {"adapter-cardiology", "accuracy-cardiology", "accuracy-neurology", "accuracy"} <= names, names
    assert not names & {"compare-cardiology", "compare-neurology"} and not (out / "compare_matrix.csv").exists()

    run_experiment(config(base, data, out), progress=False, executor=make_executor("ray"))
    after = markers(out)
    assert {name: after[name] for name in done} == done, "the stages finished before the failure were reused"
    assert csvs(out) == csvs(local)
