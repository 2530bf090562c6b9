"""Data-parallel scoring (`specprobe.core.distributed`): 2 CPU processes with gloo give the single-process
result, row for row, through the Python API (compare, evaluate, layers) and the command line (compare, evaluate,
analyze trajectory and general-text: rank 0 alone writes)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.multiprocessing.spawn import spawn

from specprobe.core.distributed import agree, all_gather_indexed, balanced_shares, world

TERMS = {"seizure": ["Neurology"], "chest pain": ["Cardiology"], "fever": ["Infectious"]}
OPTIONS = ["chest pain", "seizure", "fever", "none"]
STEMS = [
    "A man with chest pain and a seizure. What is the diagnosis?",
    "After the seizure the patient slept. Chest pain was absent.",
    "The child had a fever and a seizure last night.",
    "Fever, chest pain and cough for three days in an older woman who smokes.",
]


def write_qa(path: Path, n: int = 16) -> Path:
    """`n` questions of varied length (so the batches differ in size) over three specialties."""
    rows = [
        {
            "Question": STEMS[i % 4] + " The fever came back." * (i % 5),
            "Specialty": ["Cardiology", "Neurology", "Infectious"][i % 3],
            "Options": OPTIONS,
            "Answer": OPTIONS[i % 4],
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(rows))
    return path


# -- the deal and the gather, in one process -----------------------------------------------------------------
def test_balanced_shares_cover_every_index_once_and_balance():
    costs = [90, 10, 40, 40, 30, 30, 20, 5]
    shares = balanced_shares(costs, 2)
    assert sorted(i for s in shares for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in shares)
    loads = [sum(costs[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= max(costs)  # greedy largest-first: within one item of even
    assert loads == [135, 130]
    assert balanced_shares(costs, 2) == shares  # deterministic
    assert balanced_shares(costs, 1) == [list(range(len(costs)))]
    assert balanced_shares([], 3) == [[], [], []]
    assert balanced_shares([1.0], 3) == [[0], [], []]  # fewer batches than ranks: the rest idle
    with pytest.raises(ValueError):
        balanced_shares(costs, 0)


def test_without_a_process_group_everything_is_local():
    assert world() == (0, 1)
    assert all_gather_indexed({1: "b", 0: "a"}, 2) == ["a", "b"]
    assert agree(3) == 3
    with pytest.raises(RuntimeError, match="1 of 2 results came from no rank"):
        all_gather_indexed({0: "a"}, 2)


# -- 2 processes, the Python API ------------------------------------------------------------------------------
def _api_worker(rank: int, world_size: int, base: str, adapter: str, qa: str, out: str) -> None:
    """One rank: join the gloo group, run compare, evaluate and layers; rank 0 saves the results. Every rank
    records how many forward passes it ran and whether it got the whole result."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{out}/pg", rank=rank, world_size=world_size)
    try:
        from specprobe.core.models import ModelPair
        from specprobe.finetune.evaluation import evaluate
        from specprobe.probe.compare import compare
        from specprobe.probe.layers import layers
        from specprobe.terms.datasets import load_qa

        texts = [r.as_text_record() for r in load_qa(qa)]
        pair = ModelPair.load(base, adapter, device="cpu")
        passes = [0]
        with pair.view("base") as split:
            handle = split.backbone.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
        results = {
            "compare": compare(pair, terms=TERMS, texts=texts, batch_size=4, progress=False).to_pandas(),
            "evaluate": evaluate(pair, qa, batch_size=4, progress=False).to_pandas(),
            "layers": layers(pair, terms=TERMS, texts=texts, batch_size=4, controls=None, progress=False).to_pandas(),
        }
        handle.remove()
        Path(out, f"passes{rank}.json").write_text(
            json.dumps({"passes": passes[0], "world": list(world()), "rows": {k: len(v) for k, v in results.items()}})
        )
        if rank == 0:
            Path(out, "results.pkl").write_bytes(pickle.dumps(results))
    finally:
        torch.distributed.destroy_process_group()


def _single(base: Path, adapter: Path, qa: Path) -> tuple[dict[str, pd.DataFrame], int]:
    from specprobe.core.models import ModelPair
    from specprobe.finetune.evaluation import evaluate
    from specprobe.probe.compare import compare
    from specprobe.probe.layers import layers
    from specprobe.terms.datasets import load_qa

    texts = [r.as_text_record() for r in load_qa(qa)]
    pair = ModelPair.load(str(base), str(adapter), device="cpu")
    passes = [0]
    with pair.view("base") as split:
        handle = split.backbone.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    try:
        return {
            "compare": compare(pair, terms=TERMS, texts=texts, batch_size=4, progress=False).to_pandas(),
            "evaluate": evaluate(pair, qa, batch_size=4, progress=False).to_pandas(),
            "layers": layers(pair, terms=TERMS, texts=texts, batch_size=4, controls=None, progress=False).to_pandas(),
        }, passes[0]
    finally:
        handle.remove()


def _max_logp_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest absolute difference over every log-probability column (scalar or per token / option)."""
    worst = 0.0
    for col in a.columns:
        if "logp" not in col:
            continue
        for x, y in zip(a[col], b[col]):
            x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            assert x.shape == y.shape and np.array_equal(np.isnan(x), np.isnan(y)), col
            if x.size:
                worst = max(worst, float(np.nanmax(np.abs(x - y), initial=0.0)))
    return worst


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    keys = [c for c in a.columns if "logp" not in c and c not in ("delta", "delta_per_token")]
    pd.testing.assert_frame_equal(a[keys].reset_index(drop=True), b[keys].reset_index(drop=True))


@pytest.mark.slow
def test_two_gloo_ranks_reproduce_the_single_process_results(tiny_llama, tmp_path):
    base, adapter = tiny_llama
    qa = write_qa(tmp_path / "qa.json")
    spawn(_api_worker, args=(2, str(base), str(adapter), str(qa), str(tmp_path)), nprocs=2, join=True)
    parallel = pickle.loads((tmp_path / "results.pkl").read_bytes())
    single, single_passes = _single(base, adapter, qa)
    for name in ("compare", "evaluate", "layers"):
        _same_rows(single[name], parallel[name])
        diff = _max_logp_difference(single[name], parallel[name])
        assert diff <= 1e-6, (name, diff)
        assert diff == 0.0, (name, diff)  # the very batches one process runs: bit-identical
    ranks = [json.loads((tmp_path / f"passes{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [[0, 2], [1, 2]]
    assert (
        ranks[0]["rows"] == ranks[1]["rows"] == {k: len(v) for k, v in single.items()}
    )  # every rank: the whole result
    # the ranks shared the forward passes: each ran some, none ran them all
    assert all(0 < r["passes"] < single_passes for r in ranks), (ranks, single_passes)


# -- 2 processes, the command line -----------------------------------------------------------------------------
def _launch(
    nproc: int, args: list[str], cwd: Path, entry: tuple[str, ...] = ("-m", "specprobe.app.cli"), **env_extra: str
) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N -m specprobe.app.cli ...` (what `accelerate launch --multi_gpu` runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env_extra}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        *entry,
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_cli_compare_and_evaluate_under_two_processes(tiny_llama, tmp_path):
    from specprobe.app.cli import main
    from specprobe.core.results import Result
    from specprobe.finetune.evaluation import MCEvaluation
    from specprobe.probe import Comparison

    base, adapter = tiny_llama
    qa = write_qa(tmp_path / "qa.json", n=8)
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    for n in (1, 2):
        compare_args = [
            "compare",
            "--base",
            str(base),
            "--tuned",
            str(adapter),
            "--terms",
            str(terms),
            "--data",
            str(qa),
            "--out",
            str(tmp_path / f"compare{n}"),
            "--no-progress",
        ]
        evaluate_args = [
            "evaluate",
            "--model",
            str(base),
            "--adapter",
            str(adapter),
            "--data",
            str(qa),
            "--out",
            str(tmp_path / f"evaluate{n}.json"),
            "--no-progress",
        ]
        if n == 1:  # the reference: one process, in this one
            assert main(compare_args) == 0 and main(evaluate_args) == 0
            continue
        for args in (compare_args, evaluate_args):
            assert _launch(n, args, tmp_path).stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    for name in ("by_specialty.csv", "by_term.csv"):
        assert (tmp_path / "compare1" / name).read_bytes() == (tmp_path / "compare2" / name).read_bytes()
    one = Comparison.load(tmp_path / "compare1" / "comparison.json.gz").to_pandas()
    two = Comparison.load(tmp_path / "compare2" / "comparison.json.gz").to_pandas()
    _same_rows(one, two)
    assert _max_logp_difference(one, two) == 0.0
    ev1, ev2 = (Result.load(tmp_path / f"evaluate{n}.json") for n in (1, 2))
    assert isinstance(ev1, MCEvaluation) and isinstance(ev2, MCEvaluation)
    pd.testing.assert_frame_equal(ev1.to_pandas(), ev2.to_pandas())


def _counted_launch(nproc: int, args: list[str], cwd: Path, name: str) -> list[dict]:
    """`_launch` through tests/rank_counter.py: per rank, the batches and items it scored and the files it wrote."""
    counts = cwd / f"counts-{name}"
    counts.mkdir()
    _launch(
        nproc,
        args,
        cwd,
        ("--no-python", sys.executable, str(Path(__file__).with_name("rank_counter.py"))),
        COUNT_DIR=str(counts),
    )
    return [json.loads((counts / f"rank{r}.json").read_text()) for r in range(nproc)]


def _analyses_args(tmp_path: Path, base: str) -> dict[str, list[str]]:
    """`analyze trajectory` (an adapter with snapshots at steps 0 and 2) and `analyze general-text` arguments."""
    from specprobe.finetune import train
    from tests.test_analyses_trajectory import TERMS, TRAIN, probe_texts
    from tests.test_analyses_trajectory import write_qa as write_training_qa

    run = train(base, write_training_qa(tmp_path / "train.json"), "Cardiology", tmp_path / "snaps",
                save_steps=[0, 2], **{**TRAIN, "max_steps": 4})  # fmt: skip
    qa = tmp_path / "probe.json"
    qa.write_text(json.dumps([{"Question": t["text"], "Options": ["a", "b"], "Answer": "a"} for t in probe_texts()]))
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    texts = tmp_path / "general.txt"
    texts.write_text("".join(f"{STEMS[i % 4]}{' The fever came back.' * (i % 5)}\n" for i in range(12)))
    common = ["--base", base, "--adapter", str(run.path), "--batch-size", "2", "--no-progress"]
    return {
        "trajectory": ["analyze", "trajectory", *common, "--terms", str(terms), "--data", str(qa)],
        "general-text": ["analyze", "general-text", *common, "--texts", str(texts)],
    }


@pytest.mark.slow
def test_cli_analyses_that_run_models_share_out_under_two_processes(tiny_llama, tmp_path, monkeypatch):
    """`analyze trajectory` and `analyze general-text` under torchrun: each rank scores a share of the batches
    (it was all of them, on every rank), rank 0 alone writes (every rank wrote the same files), and the outputs
    are those of one process."""
    from specprobe.app.cli import main
    from specprobe.core import scoring
    from specprobe.core.results import Result
    from specprobe.probe.analyze_cli import GENERAL_TEXT_OUTPUTS, TRAJECTORY_OUTPUTS

    runs = _analyses_args(tmp_path, str(tiny_llama[0]))
    batches = [0]
    score_batch = scoring._score_batch

    def counted(*args, **kwargs):
        batches[0] += 1
        return score_batch(*args, **kwargs)

    for name, outputs in (("trajectory", TRAJECTORY_OUTPUTS), ("general-text", GENERAL_TEXT_OUTPUTS)):
        one, two = tmp_path / f"{name}1", tmp_path / f"{name}2"
        batches[0] = 0
        with monkeypatch.context() as patch:
            patch.setattr(scoring, "_score_batch", counted)
            assert main([*runs[name], "--out", str(one)]) == 0  # the reference: one process, in this one
        ranks = _counted_launch(2, [*runs[name], "--out", str(two)], tmp_path, name)
        written = sorted(o for o in outputs if not o.endswith(".html"))  # no --report
        assert sorted(ranks[0]["writes"]) == written and ranks[1]["writes"] == [], (name, ranks)
        assert ranks[0]["batches"] + ranks[1]["batches"] == batches[0], (name, ranks, batches)
        assert all(0 < r["batches"] <= 0.65 * batches[0] for r in ranks), (name, ranks, batches)  # about half each
        for csv in (o for o in written if o.endswith(".csv")):
            assert (one / csv).read_bytes() == (two / csv).read_bytes(), (name, csv)
        a, b = (Result.load(next(d.glob("*.json.gz"))).to_pandas() for d in (one, two))
        _same_rows(a, b)
        assert _max_logp_difference(a, b) == 0.0, name
