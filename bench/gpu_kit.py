"""Helpers of the GPU check kit (`bench/gpu_check.sh`, `bench/fetch_gpu_wheels.sh`); see docs/gpu.md.

    python -m bench.gpu_kit env --out FILE           machine, GPU, driver and library versions (prints one line)
    python -m bench.gpu_kit wheels                   distributions the GPU path imports that the GPU image lacks
    python -m bench.gpu_kit check-site --site DIR    import every module the carried wheels installed in DIR
    python -m bench.gpu_kit lexicon --data D --out F the benchmark's term lexicon, precomputed (needs spacy)
    python -m bench.gpu_kit bench [--lexicon F] [--cache DIR] -- ARGS
                                                     `python -m bench ARGS`, with a precomputed lexicon
    python -m bench.gpu_kit summary --work DIR --out-dir DIR --mode cuda|cpu [--interim]
                                                     the kit's JSON summary (gpu_check.json); --interim: the
                                                     steps so far, status "incomplete", written after each step

Why a precomputed lexicon: the benchmark scores the terms of the lexicon that `specprobe terms build`
makes from the S-MedQA file, and building it imports spacy and scispacy (about 60 MB of wheels, more
than the GPU machine's 64 MiB carry limit leaves room for). The GPU path itself never needs them, so
the fetch script builds the lexicon here, once, and the kit hands the same term list to the benchmark.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# The GPU machines' image ('cuda', read 2026-11-17; /work/.library/device/KINDS.md): everything in it
# needs no wheel. Names normalised as in PEP 503.
IMAGE_PACKAGES = set(
    """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split()
)

# What the GPU path imports at module level: the engine, the analyses, training, the benchmark and the tests.
GPU_PATH_MODULES = (
    "specprobe.core",
    "specprobe.probe",
    "specprobe.probe.layers",
    "specprobe.probe.patching",
    "specprobe.finetune",
    "specprobe.finetune.training",
    "specprobe.finetune.evaluation",
    "specprobe.terms",
    "specprobe.terms.datasets",
    "specprobe.testing.tiny_models",
    "bench",
    "bench.__main__",
    "bench.workload",
    "bench.baseline",
    "bench.gpu_pytest",
)
# ... and inside functions on that path (read from the code; confirmed by running the kit's CPU mode with every
# module outside the image made unimportable, `install_image_blocker`): all in the image. Not on the path: spacy, scispacy, wordfreq
# (auto control words and the lexicon build: the cuda tests pass explicit controls, the benchmark gets the
# precomputed lexicon), nnsight (remote lens), altair/vl-convert (reports).
GPU_PATH_LAZY = ("tqdm", "safetensors", "huggingface_hub", "tokenizers", "accelerate", "peft", "transformers")

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "scipy",
    "pytest",
    "bitsandbytes",
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- env
def _driver() -> tuple[str | None, str | None]:
    """(driver version, nvidia-smi's one-line description) or Nones."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            line = out.stdout.strip().splitlines()[0]
            parts = [p.strip() for p in line.split(",")]
            return (parts[1] if len(parts) > 1 else None), line
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return (version.decode() if isinstance(version, bytes) else version), None
    except Exception:  # noqa: BLE001 - no NVML: no driver to report
        return None, None


def machine_info() -> dict:
    from importlib import metadata

    import torch

    info: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "driver": None,
    }
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["libraries"] = versions
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
    info["driver"], info["nvidia_smi"] = _driver()
    return info


def describe(info: dict) -> str:
    if info.get("gpu"):
        gpu = (
            f"GPU: {info['gpu']} (sm_{info['gpu_capability'].replace('.', '')}, {info['gpu_memory_gib']} GiB), "
            f"driver {info['driver'] or 'unknown'}"
        )
    else:
        gpu = f"GPU: none visible to torch (driver {info['driver'] or 'none found'})"
    return (
        f"{gpu}; torch {info['torch']}, CUDA runtime {info['cuda_runtime']}; Python {info['python']}; "
        f"transformers {info['libraries']['transformers']}, peft {info['libraries']['peft']}, "
        f"bitsandbytes {info['libraries']['bitsandbytes'] or 'not installed'}"
    )


def cmd_env(args: argparse.Namespace) -> int:
    info = machine_info()
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=2))
    print(describe(info))
    return 0


# --------------------------------------------------------------------------- wheels
LOCAL_MODULES = {"specprobe", "bench", "tests", "conftest"}


def blocked_modules(allowed: Iterable[str] = ()) -> set[str]:
    """Top-level modules installed here whose distributions are neither in the GPU image nor `allowed`."""
    from importlib import metadata

    keep = IMAGE_PACKAGES | {normalise(a) for a in allowed}
    return {
        top
        for top, dists in metadata.packages_distributions().items()
        if top not in LOCAL_MODULES and not {normalise(d) for d in dists} & keep
    }


def install_image_blocker(allowed: Iterable[str] = ()) -> None:
    """Hide every module outside the GPU image from this process's imports, as on the GPU machine: an import
    of one fails with ModuleNotFoundError, `importlib.util.find_spec` finds nothing (optional imports and
    availability checks then behave as they will there)."""
    blocked = blocked_modules(allowed)

    class Hiding:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                return None
            return self.inner.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.meta_path[:] = [Hiding(f) for f in sys.meta_path]


def cmd_probe_imports(args: argparse.Namespace) -> int:
    """In a fresh process: import the GPU path with everything outside the image (and --allow) blocked."""
    import importlib

    install_image_blocker(set(args.allow))
    try:
        for name in GPU_PATH_MODULES + GPU_PATH_LAZY:
            importlib.import_module(name)
    except ModuleNotFoundError as exc:
        print(json.dumps({"missing": (exc.name or "").split(".")[0], "while": name, "error": str(exc)}))
        return 0
    print(json.dumps({"missing": None}))
    return 0


def needed_distributions(max_rounds: int = 40) -> list[tuple[str, str]]:
    """(distribution, version) of every distribution outside the image that the GPU path cannot import
    without: import it with all of them blocked, unblock what the import stops at, and again."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    allowed: dict[str, str] = {}
    for _ in range(max_rounds):
        out = subprocess.run(
            [sys.executable, "-m", "bench.gpu_kit", "_probe-imports", "--allow", *allowed],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if out.returncode != 0:
            raise SystemExit(f"gpu_kit: importing the GPU path failed:\n{out.stderr[-3000:]}")
        found = json.loads(out.stdout.strip().splitlines()[-1])
        missing = found["missing"]
        if missing is None:
            return sorted(allowed.items())
        dists = owners.get(missing)
        if not dists:
            raise SystemExit(
                f"gpu_kit: the GPU path imports {missing!r} ({found['while']}), which no installed "
                f"distribution provides: {found['error']}"
            )
        for dist in dists:
            allowed[normalise(dist)] = metadata.version(dist)
    raise SystemExit("gpu_kit: too many rounds finding the needed distributions")


def cmd_wheels(args: argparse.Namespace) -> int:
    needed = needed_distributions()
    for dist, version in needed:
        print(f"{dist}=={version}")
    print(
        f"{len(needed)} distribution(s) beyond the GPU image: {', '.join(d for d, _ in needed) or 'none'}",
        file=sys.stderr,
    )
    return 0


def site_modules(site: Path) -> list[str]:
    """The top-level modules pip installed into `site` (--target): its packages and plain modules."""
    skip = {"bin", "__pycache__"}
    names = {
        entry.name if entry.is_dir() else entry.name.split(".")[0]
        for entry in site.iterdir()
        if entry.name not in skip
        and not entry.name.endswith((".dist-info", ".data"))
        and (entry.is_dir() or entry.suffix in (".py", ".so"))
    }
    return sorted(n for n in names if n.isidentifier())


def cmd_check_site(args: argparse.Namespace) -> int:
    """Import every module the carried wheels installed (this process has `--site` on its path). Why: a
    carried wheel that fails to import here breaks more than its own test: peft imports bitsandbytes
    whenever it is installed, for every LoRA layer it builds, so a bitsandbytes whose import raises on
    this machine would fail every test and the benchmark, not only the QLoRA test."""
    import importlib

    failed = []
    modules = site_modules(Path(args.site))
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - whatever the import raised, the kit must go on without it
            failed.append(f"{name}: {type(exc).__name__}: {_last_line(str(exc)) or repr(exc)}")
    if failed:
        print(f"gpu_kit: carried module(s) that do not import here: {'; '.join(failed)}", flush=True)
        return 1
    print(f"gpu_kit: the carried modules import: {', '.join(modules) or 'none'}", flush=True)
    return 0


# --------------------------------------------------------------------------- lexicon and bench
def terms_code_digest() -> str:
    """A sha256 of the code and data that decide the lexicon (specprobe/terms, specprobe/data/terms): a
    precomputed lexicon from other code lists other terms (the GPU machine cannot rebuild it: no spacy)."""
    digest = hashlib.sha256()
    for folder in (REPO / "specprobe" / "terms", REPO / "specprobe" / "data" / "terms"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cmd_lexicon(args: argparse.Namespace) -> int:
    from specprobe.terms.build import build_lexicon

    t0 = time.time()
    lexicon = build_lexicon(Path(args.data))
    record = {
        "data": Path(args.data).name,
        "data_sha256": sha256_file(args.data),
        "n_lexicon_terms": len(lexicon),
        "terms": sorted(lexicon.term_specialties()),
        "built_with": "specprobe.terms.build.build_lexicon (offline)",
        "terms_code_sha256": terms_code_digest(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record))
    print(
        f"lexicon of {record['data']}: {len(lexicon)} terms, {len(record['terms'])} specific, "
        f"{time.time() - t0:.1f} s -> {args.out}"
    )
    return 0


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    from bench import workload

    argv = list(args.bench_args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.cache:
        workload.CACHE = Path(args.cache)
        workload.CACHE.mkdir(parents=True, exist_ok=True)
    if args.lexicon and Path(args.lexicon).exists():
        lex = json.loads(Path(args.lexicon).read_text())
        data = _option(argv, "--data")
        if data and Path(data).exists() and sha256_file(data) != lex["data_sha256"]:
            print(
                f"gpu_kit: {args.lexicon} was built from another data file than {data}; building the lexicon afresh",
                flush=True,
            )
        else:
            stale = lex.get("terms_code_sha256") != terms_code_digest()
            if stale:
                print(
                    f"gpu_kit: warning: {args.lexicon} was built by other terms code than this checkout's; "
                    "rerun bench/fetch_gpu_wheels.sh before the GPU run (the term list may differ a little)",
                    flush=True,
                )

            def precomputed_terms(data, texts):
                from specprobe.probe.occurrences import find_spans

                terms = sorted(t for t in lex["terms"] if any(find_spans(x, t) for x in texts))
                return terms, (
                    f"lexicon of {Path(data).name} ({lex['n_lexicon_terms']} terms, precomputed"
                    f"{' by other terms code' if stale else ''}), {len(terms)} occurring in these texts"
                )

            workload.workload_terms = precomputed_terms
            print(f"gpu_kit: terms from the precomputed lexicon {args.lexicon}", flush=True)
    else:
        try:
            import scispacy  # noqa: F401
            import spacy  # noqa: F401
        except ImportError as exc:
            raise SystemExit(
                f"gpu_kit: the benchmark's lexicon needs spacy and scispacy ({exc}), which this machine "
                f"lacks; run bench/fetch_gpu_wheels.sh where they are installed: it writes the "
                f"precomputed lexicon to .whl/data/bench-lexicon.json"
            ) from exc
    from bench.__main__ import main

    return main(argv)


# --------------------------------------------------------------------------- summary
def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _tail(path: Path, n: int = 25) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]


def bench_section(out_dir: Path, name: str) -> dict | None:
    results_path, log_path = out_dir / f"{name}.json", out_dir / f"{name}.log"
    if not results_path.exists() and not log_path.exists():
        return None
    section: dict = {"results_file": results_path.name if results_path.exists() else None, "log": log_path.name}
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
    section["table"] = [ln for ln in lines if ln.startswith("|")]
    section["notes"] = [
        ln
        for ln in lines
        if ln.startswith(
            (
                "workload:",
                "scored tokens",
                "matmul rate",
                "agreement:",
                "logit lens",
                "activation patching",
                "scaling",
                "checkpointed compare",
                "vocab ",
            )
        )
    ]
    if results_path.exists():
        res = json.loads(results_path.read_text())
        section["results"] = res
        section["complete"] = res.get("complete", True)  # False: stopped after the repeats, later parts missing
        tps, mem = res.get("texts_per_s", {}), res.get("peak_minus_import_bytes", {})
        section["rows"] = [
            {
                "metric": "texts/s",
                "compare": tps.get("compare"),
                "baseline": tps.get("baseline"),
                "ratio": res.get("speedup"),
            },
            {
                "metric": "peak memory minus import (MiB)",
                "compare": (mem.get("compare") or 0) / 2**20,
                "baseline": (mem.get("baseline") or 0) / 2**20,
                "ratio": res.get("memory_ratio"),
            },
        ]
        speedup = res.get("speedup")
        section["targets"] = {
            "compare_speedup": speedup,
            "compare_speedup_target": 10.0,
            "compare_speedup_met": bool(speedup is not None and speedup >= 10.0),
            "useful_flops_per_s": res.get("useful_flops_per_s"),
            "fraction_of_matmul_rate": res.get("fraction_of_peak"),
            "fraction_of_best_shape_rate": res.get("fraction_of_best_shape_rate"),
            "agreement_max_abs_diff": (res.get("agreement") or {}).get("max_abs_diff"),
            # the --shape run's own target: peak model memory as a multiple of one copy of the weights
            "peak_memory_ratio": res.get("peak_memory_ratio"),
            "peak_memory_ratio_target": (res.get("memory") or {}).get("target_ratio"),
            "peak_memory_ratio_met": (res.get("memory") or {}).get("target_met"),
        }
    return section


def build_summary(
    work: Path, out_dir: Path, mode: str, started: float | None, refused: str | None, interim: bool = False
) -> dict:
    env_path = work / "env.json"
    machine = json.loads(env_path.read_text()) if env_path.exists() else None
    steps = _jsonl(work / "steps.jsonl")
    for step in steps:
        if step.get("status") in ("failed", "timeout") and step.get("log"):
            step["tail"] = _tail(out_dir / step["log"])
    test_lines = _jsonl(work / "tests.jsonl")
    tests = [t for t in test_lines if "test" in t]
    imported = next((t["imported_modules"] for t in test_lines if "imported_modules" in t), None)
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    counts["total"] = len(tests)
    ran = {s.get("step") for s in steps if s.get("status") != "skipped"}  # a left-out step's files are older
    benches = {name: bench_section(out_dir, name) if name in ran else None for name in ("bench", "bench-shape")}
    failures = [
        f"{t['test']}: {t['outcome']}: {_last_line(t.get('message'))}"
        for t in tests
        if t["outcome"] in ("failed", "error")
    ]
    failures += [
        f"step {s['step']}: {s['status']} (rc {s.get('rc')}): {s.get('message', '')}"
        for s in steps
        if s.get("status") in ("failed", "timeout")
    ]
    pytest_step = next((s for s in steps if s.get("step") == "pytest-cuda"), None)
    if pytest_step and pytest_step.get("status") != "skipped" and counts["total"] == 0:
        failures.append("no cuda test outcomes were recorded")
    status = "refused" if refused else ("incomplete" if interim else ("passed" if not failures else "failed"))
    summary = {
        "kit": "specprobe bench/gpu_check.sh",
        "schema": 1,
        "mode": mode,
        "status": status,
        "refused": refused,
        "incomplete": (
            f"written while the kit ran, after its step {steps[-1]['step'] if steps else 'setup'}: the kit was "
            "stopped before its final summary (e.g. the run's own time limit); later steps are missing"
            if interim
            else None
        ),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.time() - started, 1) if started else None,
        "machine": machine,
        "gpu": (machine or {}).get("gpu"),
        "driver": (machine or {}).get("driver"),
        "torch": (machine or {}).get("torch"),
        "cuda": (machine or {}).get("cuda_runtime"),
        "steps": steps,
        "tests": {"counts": counts, "results": tests},
        "observations": _jsonl(work / "observations.jsonl"),
        "bench": benches["bench"],
        "bench_shape": benches["bench-shape"],
        "imported_modules": imported,
        "imported_not_in_image": _not_in_image(imported),
        "failures": failures,
    }
    return summary


def _not_in_image(modules: list[str] | None) -> list[str] | None:
    """Distributions outside the GPU image behind the modules the tests imported (here, optional imports of
    other libraries show up too: on the GPU machine they are simply absent)."""
    if modules is None:
        return None
    from importlib import metadata

    owners = metadata.packages_distributions()
    out = set()
    for m in modules:
        dists = {normalise(d) for d in owners.get(m, [])}
        if m not in LOCAL_MODULES and dists and not dists & IMAGE_PACKAGES:
            out.update(dists)
    return sorted(out)


def _targets_line(t: dict) -> str:
    """A bench section's targets in words; a number the run did not measure (the --shape run measures no
    matmul rate, the plain bench no peak/weights ratio) is said to be missing, not printed as 0."""
    speedup = t.get("compare_speedup")
    parts = [
        f"compare {speedup:.2f}x the baseline's texts/s (target 10x: {'met' if t['compare_speedup_met'] else 'not met'})"
        if speedup is not None
        else "no baseline run"
    ]
    rate = t.get("fraction_of_matmul_rate")
    parts.append(f"{100 * rate:.0f}% of the measured matmul rate" if rate is not None else "matmul rate not measured")
    ratio, target = t.get("peak_memory_ratio"), t.get("peak_memory_ratio_target")
    if ratio is not None:
        met = "met" if t.get("peak_memory_ratio_met") else "NOT met"
        parts.append(
            f"peak model memory {ratio:.3f}x the weights" + (f" (target <= {target}: {met})" if target else "")
        )
    return "; ".join(parts)


def cmd_summary(args: argparse.Namespace) -> int:
    work, out_dir = Path(args.work), Path(args.out_dir)
    summary = build_summary(work, out_dir, args.mode, args.started, args.refused, args.interim)
    path = out_dir / "gpu_check.json"
    tmp = path.with_name(path.name + ".tmp")  # replaced whole: a kill while writing leaves the previous one
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, path)
    if args.interim:
        return 0
    c = summary["tests"]["counts"]
    print(f"\n== gpu_check: {summary['status'].upper()} ({args.mode} mode, {summary['wall_s']} s)")
    if summary.get("machine"):
        print(describe(summary["machine"]))
    print(
        f"cuda tests: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped "
        f"(of {c['total']})"
    )
    for t in summary["tests"]["results"]:
        if t["outcome"] == "skipped":
            print(f"  skipped {t['test']}: {t.get('message')}")
    for name in ("bench", "bench_shape"):
        b = summary.get(name)
        if b and b.get("targets"):
            print(f"{name}: {_targets_line(b['targets'])}")
            for row in b.get("table", []):
                print(f"  {row}")
    for s in summary["steps"]:
        if s.get("status") == "skipped":
            print(f"step {s['step']} skipped: {s.get('message')}")
    for f in summary["failures"]:
        print(f"FAILED {f}")
    print(f"wrote {path}")
    return 0 if summary["status"] == "passed" else 1


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu_kit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out")
    e.set_defaults(run=cmd_env)
    w = sub.add_parser("wheels")
    w.set_defaults(run=cmd_wheels)
    cs = sub.add_parser("check-site")
    cs.add_argument("--site", required=True)
    cs.set_defaults(run=cmd_check_site)
    pi = sub.add_parser("_probe-imports")
    pi.add_argument("--allow", nargs="*", default=[])
    pi.set_defaults(run=cmd_probe_imports)
    x = sub.add_parser("lexicon")
    x.add_argument("--data", required=True)
    x.add_argument("--out", required=True)
    x.set_defaults(run=cmd_lexicon)
    b = sub.add_parser("bench")
    b.add_argument("--lexicon")
    b.add_argument("--cache")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(run=cmd_bench)
    s = sub.add_parser("summary")
    s.add_argument("--work", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--mode", choices=("cuda", "cpu"), required=True)
    s.add_argument("--started", type=float, default=None)
    s.add_argument("--refused", default=None)
    s.add_argument("--interim", action="store_true")
    s.set_defaults(run=cmd_summary)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
