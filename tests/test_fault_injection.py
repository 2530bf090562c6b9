"""Fault injection (issue 15, "Tests that keep it so"): SIGKILL, SIGINT and SIGTERM at seeded random
points of `specprobe run`, `finetune`, `terms build`, `compare --out` and `evaluate --out`, then a
rerun. After the rerun the outputs equal an uninterrupted run's, and a reader polling the output
folder never sees a half-written final-named file."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from specprobe import load_result

pytestmark = pytest.mark.slow

SEED = 15
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
DEMO_QUESTIONS = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "demo" / "questions.json"
PARSED = (".json", ".json.gz", ".csv", ".safetensors")
VOLATILE = ("created", "time", "timing", "duration", "elapsed", "seconds", "wall")


def _env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "specprobe.app.cli", *args]


# -- the reader that must never see a half-written file ---------------------------------------------------
def _temporary(name: str) -> bool:
    """`.name.XXXX.tmp` (atomic writes), `.tmp-step-N` (checkpoints), `.final-tmp` (the final adapter)."""
    return name.endswith("tmp") or name.startswith(".tmp")


def _parse(path: Path) -> None:
    name = path.name
    if name.endswith(".json.gz"):
        with gzip.open(path, "rb") as fh:
            json.loads(fh.read())
    elif name.endswith(".json"):
        json.loads(path.read_bytes())
    elif name.endswith(".csv"):
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise ValueError("a CSV that does not end with a newline (cut short)")
        pd.read_csv(path)
    elif name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                fh.get_tensor(key)


class Reader(threading.Thread):
    """Lists `root` every ~20 ms and parses every final-named file that is new or changed."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stopping = root, threading.Event()
        self.bad: list[str] = []
        self.seen: dict[Path, tuple] = {}

    def run(self) -> None:
        while not self.stopping.is_set():
            self.scan()
            self.stopping.wait(0.02)
        self.scan()

    def stop(self) -> list[str]:
        self.stopping.set()
        self.join(timeout=60)
        return self.bad

    def scan(self) -> None:
        """Parse every final-named file that is new or changed since the last scan."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not _temporary(d)]
            for name in filenames:
                if _temporary(name) or not name.endswith(PARSED):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                    key = (st.st_ino, st.st_size, st.st_mtime_ns)
                    if self.seen.get(path) == key:
                        continue
                    _parse(path)
                except FileNotFoundError:
                    continue  # removed (an old checkpoint pruned) between the listing and the read
                except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
                    if _stat_key(path) != key:
                        continue  # pruned or replaced while being read (safetensors says RuntimeError then)
                    self.bad.append(f"{path.relative_to(self.root)}: {type(exc).__name__}: {exc}"[:300])
                self.seen[path] = key


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of `path`, or None once it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# -- the commands -----------------------------------------------------------------------------------------
@dataclass
class Command:
    name: str
    argv: list[str]  # run with cwd = the case's work folder "w"; outputs go under "w/out"
    rerun_extra: list[str]  # what the rerun adds (--overwrite where an existing output needs it)
    files: list[str]  # output files compared with the reference, relative to "w"
    toml: str | None = None  # written to "w/../exp.toml" for `run`


@dataclass
class Case:
    signal: str
    delay: float
    rc: int | None = None
    finished_first: bool = False
    rerun_rc: int | None = None
    compared: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def inputs(tiny_llama, tmp_path_factory) -> dict:
    base, adapter = tiny_llama
    root = tmp_path_factory.mktemp("fault-inputs")
    rows = json.loads(DEMO_QUESTIONS.read_text(encoding="utf-8"))
    questions = root / "questions.json"
    questions.write_text(json.dumps(rows[::20]), encoding="utf-8")  # 35 questions, every specialty
    terms = root / "terms.txt"
    terms.write_text("seizure\nangina\nheart\npain\n", encoding="utf-8")
    two = [r for r in rows if r["Specialty"] in ("Cardiology", "Neurology")]
    run_data = root / "run-qa.json"
    run_data.write_text(
        json.dumps(
            [r for r in two if r["Specialty"] == "Cardiology"][:8]
            + [r for r in two if r["Specialty"] == "Neurology"][:8]
        ),
        encoding="utf-8",
    )
    return {"base": base, "adapter": adapter, "questions": questions, "terms": terms, "run_data": run_data}


def _commands(i: dict) -> dict[str, Command]:
    q = str(i["questions"])
    toml = "\n".join(
        [
            f'base = "{i["base"]}"',
            f'data = "{i["run_data"]}"',
            'out = "out"',
            'specialties = ["Cardiology", "Neurology"]',
            "include_all = false",
            "layers = false",
            "max_texts = 4",
            "[train]",
            "max_steps = 6",
            "batch_size = 2",
            "learning_rate = 1e-3",
            "rank = 2",
            "max_length = 128",
            "save_every = 1",
        ]
    )
    return {
        "terms build": Command(
            "terms build",
            ["terms", "build", q, "--out", "out/lexicon.json", "--no-progress"],
            ["--overwrite"],
            ["out/lexicon.json"],
        ),
        "compare --out": Command(
            "compare --out",
            ["compare", "--base", str(i["base"]), "--tuned", str(i["adapter"]), "--terms", str(i["terms"])]
            + ["--data", q, "--out", "out/cmp", "--no-progress"],
            ["--overwrite"],
            ["out/cmp/by_specialty.csv", "out/cmp/by_term.csv", "out/cmp/comparison.json.gz"],
        ),
        "evaluate --out": Command(
            "evaluate --out",
            ["evaluate", "--model", str(i["base"]), "--adapter", str(i["adapter"]), "--data", q]
            + ["--out", "out/eval.json", "--no-progress"],
            ["--overwrite"],
            ["out/eval.json"],
        ),
        "finetune": Command(
            "finetune",
            ["finetune", "--base", str(i["base"]), "--data", q, "--out", "out/adapter", "--max-steps", "8"]
            + ["--save-every", "1", "--batch-size", "2", "--rank", "2", "--max-length", "128", "--no-progress"],
            [],
            ["out/adapter/adapter_model.safetensors"],
        ),
        "run": Command(
            "run",
            ["run", "../exp.toml", "--no-progress"],
            [],
            ["out/compare_matrix.csv", "out/accuracy_matrix.csv", "out/experiment.json"],
            toml=toml + "\n",
        ),
    }


def _prepare(folder: Path, cmd: Command) -> Path:
    work = folder / "w"
    (work / "out").mkdir(parents=True)
    if cmd.toml:
        (folder / "exp.toml").write_text(cmd.toml, encoding="utf-8")
    return work


def _stable(obj, root: str):
    """JSON without time stamps and durations, and with the work folder's path replaced."""
    if isinstance(obj, dict):
        return {k: _stable(v, root) for k, v in obj.items() if not any(w in k.lower() for w in VOLATILE)}
    if isinstance(obj, list):
        return [_stable(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<work>")
    return obj


def _same(got: Path, ref: Path, got_root: Path, ref_root: Path) -> str | None:
    """None when `got` equals `ref` (bytes, or the tables and stable metadata of a result/JSON file)."""
    if got.read_bytes() == ref.read_bytes():
        return None
    if not got.name.endswith((".json", ".json.gz")):
        return f"{got.name}: the bytes differ"
    try:
        a, b = load_result(got), load_result(ref)
    except ValueError:  # not a Result (the lexicon): compare the JSON
        a_raw, b_raw = json.loads(got.read_bytes()), json.loads(ref.read_bytes())
        if _stable(a_raw, str(got_root)) != _stable(b_raw, str(ref_root)):
            return f"{got.name}: the JSON differs beyond time stamps"
        return None
    try:
        pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas(), check_exact=True)
    except AssertionError as exc:
        return f"{got.name}: the tables differ: {str(exc)[:300]}"
    if _stable(a.extras, str(got_root)) != _stable(b.extras, str(ref_root)):
        return f"{got.name}: the extras differ"
    if _stable(a.metadata, str(got_root)) != _stable(b.metadata, str(ref_root)):
        return f"{got.name}: the metadata differ beyond time stamps"
    return None


def _run(argv: list[str], work: Path, log: Path) -> tuple[int, str, list[str], float]:
    """Run to the end with a reader polling `work`; (exit code, stderr, reader failures, seconds)."""
    reader = Reader(work)
    reader.start()
    t0 = time.perf_counter()
    with open(log, "w") as err:
        rc = subprocess.run(argv, env=_env(), cwd=work, stdout=subprocess.DEVNULL, stderr=err, timeout=600).returncode
    took = time.perf_counter() - t0
    return rc, log.read_text(), reader.stop(), took


@pytest.mark.parametrize("name", ["terms build", "compare --out", "evaluate --out", "finetune", "run"])
def test_signals_then_rerun_give_the_uninterrupted_outputs(name, inputs, tmp_path):
    cmd = _commands(inputs)[name]
    ref_work = _prepare(tmp_path / "reference", cmd)
    rc, err, bad, wall = _run(_cli(*cmd.argv), ref_work, tmp_path / "reference" / "stderr.txt")
    assert rc == 0, err[-3000:]
    assert not bad, f"unreadable files in an uninterrupted run: {bad}"
    rng = random.Random(f"{SEED}-{name}")
    print(f"\n[{name}] seed {SEED!r}, reference {wall:.1f} s")

    problems: list[str] = []
    cases: list[Case] = []
    for sig in SIGNALS:
        case = Case(sig.name, round(rng.uniform(0.2, 0.9) * wall, 2))
        cases.append(case)
        folder = tmp_path / sig.name
        work = _prepare(folder, cmd)
        reader = Reader(work)
        reader.start()
        log = folder / "stderr.txt"
        with open(log, "w") as errf:
            proc = subprocess.Popen(_cli(*cmd.argv), env=_env(), cwd=work, stdout=subprocess.DEVNULL, stderr=errf)
            time.sleep(case.delay)
            case.finished_first = proc.poll() is not None
            if not case.finished_first:
                proc.send_signal(sig)
            try:
                case.rc = proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                problems.append(f"{sig.name}: no exit within 300 s of the signal (a hang)")
        bad = reader.stop()
        stderr = log.read_text()
        allowed = {signal.SIGKILL: {-9}, signal.SIGINT: {130}, signal.SIGTERM: {143}}[sig] | {0}
        outputs_done = all((work / rel).exists() for rel in cmd.files)
        if case.rc == -sig and (outputs_done or not stderr.strip()):
            # the signal landed outside `main`: at interpreter shutdown (every output already written) or
            # start-up (nothing printed yet), where no handler of ours runs and the default action is right
            allowed = allowed | {-sig}
        if case.rc not in allowed:
            problems.append(f"{sig.name} at {case.delay} s: exit {case.rc}, not one of {sorted(allowed)}")
        if "Traceback" in stderr:
            problems.append(f"{sig.name} at {case.delay} s: a traceback: {stderr[-1500:]}")
        problems += [f"{sig.name} at {case.delay} s, while running: half-written {b}" for b in bad]

        rc, err, bad, _ = _run(_cli(*cmd.argv, *cmd.rerun_extra), work, folder / "rerun-stderr.txt")
        case.rerun_rc = rc
        if rc != 0:
            problems.append(f"{sig.name}: the rerun exited {rc}: {err[-1500:]}")
            continue
        problems += [f"{sig.name}, in the rerun: half-written {b}" for b in bad]
        for rel in cmd.files:
            got, ref = work / rel, ref_work / rel
            if not got.exists():
                problems.append(f"{sig.name}: {rel} is missing after the rerun")
                continue
            diff = _same(got, ref, work, ref_work)
            case.compared.append(rel if diff is None else f"{rel} (DIFFERS)")
            if diff:
                problems.append(f"{sig.name}: {diff}")

    for c in cases:
        state = "finished before the signal" if c.finished_first else "interrupted"
        print(f"[{name}] {c.signal:<7} at {c.delay:5.2f} s: exit {c.rc} ({state}); rerun exit {c.rerun_rc}")
    assert not problems, f"{name}:\n" + "\n".join(problems)
