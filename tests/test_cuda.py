"""CUDA checks: the engine on a GPU gives the CPU's float32 answers (and bf16 within a stated tolerance).

Every test here is marked `cuda`. `tests/conftest.py` skips them, with the reason, when CUDA is not
available, unless SPECPROBE_GPU_CHECK_CPU=1: then they run on the CPU (same code, tiny models), which
is how the kit `bench/gpu_check.sh` is tested without a GPU. On a GPU machine run them with
`bash bench/gpu_check.sh` (or `pytest -m cuda tests/test_cuda.py`).

Each test prints its observed errors as `GPUCHECK {json}` lines and appends them to the JSON-lines
file named by $SPECPROBE_GPU_CHECK_RECORD (if set): the kit copies them into its summary.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from specprobe.core import ModelPair
from specprobe.probe import compare, layers, patch
from specprobe.testing.tiny_models import ARCHITECTURES, build_tiny_adapter, build_tiny_model

pytestmark = pytest.mark.cuda

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # cpu only under SPECPROBE_GPU_CHECK_CPU=1 (conftest skips otherwise)
REPO = Path(__file__).resolve().parents[1]

# float32 on the GPU against float32 on the CPU: the same arithmetic in another summation order.
F32_TOL = 1e-4
# bfloat16 against the float32 CPU reference, in nats per scored token (an occurrence of n tokens
# may differ by n x this). Why 0.01: bf16 keeps 8 significant bits, so every stored weight, every
# activation and the logits carry a relative rounding error of up to 2^-9 ~ 0.002. A token's logp is
# a logit minus a logsumexp of logits of size O(1) (about -log V ~ -6.4 for these near-uniform tiny
# models), so a few such roundings through two layers give errors of a few 1e-3: measured with the
# CPU's bf16 kernels, at most 0.002 per token over the three architectures. 0.01 leaves 5x headroom
# for the GPU's kernels (flash attention, other accumulation orders), and it is still below the
# median per-token LoRA delta of these fixtures (0.05-0.19 nats), so a tuned view that lost its
# adapter, or applied it twice, fails: each bf16 test asserts that margin too.
BF16_TOL_PER_TOKEN = 0.01

TEXTS = [
    "Myocardial infarction is suspected; myocardial INFARCTION again, and chest pain.",
    "The patient (45-year-old) had a seizure, then another seizure! Chest pain?",
    "Cirrhosis, nephrotic syndrome and psoriasis: three words, many tokens.",
    # longer than the tiny models' 128-token context: scored in windows
    " ".join(["The committee discussed the new budget and agreed to meet again next month."] * 12)
    + " Finally the patient had chest pain and a seizure.",
]
TERMS = {
    "myocardial infarction": ["Cardiology"],
    "chest pain": ["Cardiology", "Emergency medicine"],
    "seizure": ["Neurology"],
    "cirrhosis": ["Gastroenterology"],
    "nephrotic syndrome": ["Nephrology"],
    "psoriasis": ["Dermatology"],
}
# explicit control words: "auto" ones need spacy and wordfreq, which the GPU image lacks (and which would
# make every repeated word of the long text its own windowed item)
CONTROLS = ["words", "patient"]
# the three tokenizer conventions on a GPU; Llama alone in the CPU mode, which tests the kit, not the engine
ARCHS = ARCHITECTURES if CUDA else ("llama",)
KEYS = ["text_id", "term", "start", "is_control"]


def observe(check: str, **values) -> None:
    """Print an observation (lands in the log) and append it to $SPECPROBE_GPU_CHECK_RECORD (lands in the summary)."""
    rec = {
        "check": check,
        "device": DEVICE,
        **{k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in values.items()},
    }
    line = json.dumps(rec, default=str)
    print(f"GPUCHECK {line}")
    path = os.environ.get("SPECPROBE_GPU_CHECK_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def run_compare(pair: ModelPair, **kw) -> pd.DataFrame:
    return compare(pair, terms=TERMS, texts=TEXTS, controls=CONTROLS, progress=False, **kw).to_pandas()


def errors(df: pd.DataFrame, ref: pd.DataFrame, cols=("logp_base", "logp_tuned")) -> tuple[float, float]:
    """(max abs error, max abs error per scored token) of df against ref, rows aligned; NaNs must agree."""
    assert df[KEYS].reset_index(drop=True).equals(ref[KEYS].reset_index(drop=True)), "same occurrences, same order"
    worst, per_token = 0.0, 0.0
    n = ref["n_tokens"].to_numpy(float)
    for col in cols:
        a, b = df[col].to_numpy(float), ref[col].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        ok = ~np.isnan(b)
        if ok.any():
            err = np.abs(a[ok] - b[ok])
            worst, per_token = max(worst, float(err.max())), max(per_token, float((err / n[ok]).max()))
    return worst, per_token


def median_delta_per_token(ref: pd.DataFrame) -> float:
    d = (ref["logp_tuned"] - ref["logp_base"]).abs() / ref["n_tokens"]
    return float(d.dropna().median())


def load(base, adapter, dtype="float32", device=DEVICE, **kw) -> ModelPair:
    return ModelPair.load(str(base), str(adapter), device=device, dtype=dtype, **kw)


@pytest.fixture(scope="module", params=ARCHS)
def arch_pair(request, tiny_dir) -> tuple[str, Path, Path]:
    """(architecture, base, adapter): conftest's tiny models (same directories), for the architectures of ARCHS."""
    arch = request.param
    base, adapter = tiny_dir / f"{arch}-base", tiny_dir / f"{arch}-lora"
    if not base.exists():
        build_tiny_model(arch, base)
        build_tiny_adapter(base, arch, adapter)
    return arch, base, adapter


@pytest.fixture(scope="module")
def cpu_reference(arch_pair):
    """compare() on the CPU in float32: the reference (itself checked against a plain forward in test_probe_compare)."""
    arch, base, adapter = arch_pair
    return arch, base, adapter, run_compare(load(base, adapter, device="cpu"))


# --------------------------------------------------------------------------- compare: float32 and bf16
def test_compare_float32_equals_cpu_reference(cpu_reference):
    arch, base, adapter, ref = cpu_reference
    pair = load(base, adapter)
    assert pair.device.type == DEVICE and pair.lora_forward == "folded"
    worst, _ = errors(run_compare(pair), ref)
    observe("compare_float32_vs_cpu", arch=arch, max_abs_err=worst, tol=F32_TOL)
    assert worst < F32_TOL, (arch, worst)


def test_compare_bfloat16_within_tolerance(cpu_reference):
    arch, base, adapter, ref = cpu_reference
    pair = load(base, adapter, "bfloat16")
    assert pair.metadata["dtype"] == "bfloat16" and pair.lora_forward == "unmerged"  # auto: 16-bit runs unmerged
    df = run_compare(pair)
    worst, per_token = errors(df, ref)
    margin = median_delta_per_token(ref)
    observe(
        "compare_bfloat16_vs_cpu_float32",
        arch=arch,
        max_abs_err=worst,
        max_abs_err_per_token=per_token,
        tol_per_token=BF16_TOL_PER_TOKEN,
        median_delta_per_token=margin,
    )
    assert BF16_TOL_PER_TOKEN < margin, "the tolerance must stay below the LoRA effect it should detect"
    assert per_token < BF16_TOL_PER_TOKEN, (arch, per_token)


# --------------------------------------------------------------------------- folded and unmerged tuned views
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_folded_and_unmerged_tuned_views(cpu_reference, dtype):
    arch, base, adapter, ref = cpu_reference
    results = {}
    for mode, expected in (("fold", "folded"), ("unmerged", "unmerged")):
        pair = load(base, adapter, dtype, fold_mode=mode)
        assert pair.lora_forward == expected
        results[mode] = run_compare(pair)
        worst, per_token = errors(results[mode], ref)
        observe(
            "tuned_view_vs_cpu_float32",
            arch=arch,
            dtype=dtype,
            lora_forward=expected,
            max_abs_err=worst,
            max_abs_err_per_token=per_token,
        )
        if dtype == "float32":
            assert worst < F32_TOL, (arch, mode, worst)
        else:
            assert per_token < BF16_TOL_PER_TOKEN, (arch, mode, per_token)
    # the two ways of running the adapter agree with each other (base rows are the same computation)
    between, between_tok = errors(results["fold"], results["unmerged"], cols=("logp_tuned",))
    observe("folded_vs_unmerged", arch=arch, dtype=dtype, max_abs_err=between, max_abs_err_per_token=between_tok)
    assert (between < F32_TOL) if dtype == "float32" else (between_tok < BF16_TOL_PER_TOKEN)
    base_diff, _ = errors(results["fold"], results["unmerged"], cols=("logp_base",))
    assert base_diff == 0.0, "the base view does not depend on how the tuned view runs its LoRA"


# --------------------------------------------------------------------------- batching, budgets, attention mask
def test_batch_size_invariance(tiny_llama):
    base, adapter = tiny_llama
    for dtype in ("float32", "bfloat16"):
        pair = load(base, adapter, dtype)
        one = run_compare(pair, batch_size=1)
        many = run_compare(pair, batch_size=16)
        worst, per_token = errors(many, one)
        observe("batch_size_1_vs_16", dtype=dtype, max_abs_err=worst, max_abs_err_per_token=per_token)
        if dtype == "float32":
            assert worst < F32_TOL
        else:
            assert per_token < BF16_TOL_PER_TOKEN


def test_token_and_head_budgets_change_nothing(tiny_llama, monkeypatch):
    """The device's batch-token and unembedding-chunk budgets (CUDA's entries on a GPU) cut work, not results."""
    from specprobe.core import scoring

    base, adapter = tiny_llama
    pair = load(base, adapter)
    whole = run_compare(pair, batch_size=16)
    vocab = pair.base_model.get_output_embeddings().weight.shape[0]
    monkeypatch.setitem(scoring.HEAD_CHUNK_ELEMENTS, DEVICE, vocab * 3)  # 3 rows per head matmul
    monkeypatch.setitem(scoring.DEFAULT_BATCH_TOKENS, DEVICE, 64)  # a few short texts per batch; long ones alone
    cut = run_compare(pair, batch_size=16)
    worst, _ = errors(cut, whole)
    observe("small_budgets_vs_default", max_abs_err=worst)
    assert worst < F32_TOL


def test_default_rows_fill_the_device_budget(tiny_llama):
    """Rows per batch by device: on a GPU (64 rows, 16,384 tokens) forty short questions go through in one
    forward pass per view, with the numbers 8-row batches give; on a CPU, 8 rows a pass."""
    from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS

    base, adapter = tiny_llama
    pair = load(base, adapter)
    texts = [f"Patient {i} had chest pain and a seizure after the {i}th dose." for i in range(40)]
    calls = []
    hook = pair.base_model.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    try:
        wide = compare(pair, terms=TERMS, texts=texts, controls=None, progress=False).to_pandas()
        passes = len(calls)
        narrow = compare(pair, terms=TERMS, texts=texts, controls=None, progress=False, batch_size=8).to_pandas()
    finally:
        hook.remove()
    worst, _ = errors(wide, narrow)
    rows = DEFAULT_BATCH_ROWS["cuda" if CUDA else "cpu"]
    observe("default_rows_vs_8", rows=rows, forward_passes=passes, max_abs_err=worst)
    assert passes == 2 * math.ceil(len(texts) / rows)
    assert worst < F32_TOL


def test_unmasked_right_padding_equals_masked(arch_pair):
    """No attention mask (SDPA's causal kernel) gives the masked scores on this device."""
    from specprobe.core.scoring import score_items
    from specprobe.probe.prepare import prepare

    arch, base, adapter = arch_pair
    for dtype in ("float32", "bfloat16"):
        pair = load(base, adapter, dtype)
        prep = prepare(pair, TERMS, TEXTS, controls=None)
        assert len({len(i.ids) for i in prep.items}) > 1, "items of different lengths, so batches are padded"
        worst = 0.0
        for variant in pair.variants:
            with pair.view(variant) as split:
                masked = score_items(split, prep.items, batch_size=8, attention_mask=True)
                plain = score_items(split, prep.items, batch_size=8)
            worst = max(worst, max(float(np.abs(a.logps - b.logps).max()) for a, b in zip(masked, plain)))
        observe("unmasked_vs_masked", arch=arch, dtype=dtype, max_abs_err=worst)
        assert worst < (F32_TOL if dtype == "float32" else BF16_TOL_PER_TOKEN), (arch, dtype, worst)


# --------------------------------------------------------------------------- multiple-choice evaluation
def qa_records(n: int = 12):
    from specprobe.terms.datasets import QARecord

    opts = ("aspirin", "heparin", "insulin", "rest")
    return [
        QARecord(
            f"q{i}",
            f"Patient {i} has {'chest' if i % 2 else 'head'} pain. Best drug?",
            opts,
            opts[0] if i % 2 else opts[2],
            ("Cardiology" if i % 2 else "Neurology",),
        )
        for i in range(n)
    ]


def write_qa(path: Path, n: int = 16) -> Path:
    path.write_text(
        json.dumps(
            [
                {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
                for r in qa_records(n)
            ]
        )
    )
    return path


def mc_errors(df: pd.DataFrame, ref: pd.DataFrame) -> tuple[float, float]:
    """(max |option logp difference|, fraction of equal predictions)."""
    a, b = np.array(list(df["option_logp"]), float), np.array(list(ref["option_logp"]), float)
    return float(np.abs(a - b).max()), float((df["pred"].to_numpy() == ref["pred"].to_numpy()).mean())


def test_evaluate_gives_the_cpu_predictions(tiny_llama):
    from specprobe.finetune.evaluation import evaluate

    base, adapter = tiny_llama
    recs = qa_records()
    ref = evaluate(str(base), recs, adapter, device="cpu", dtype="float32", progress=False).to_pandas()
    for continuation in ("letter", "text"):  # letter: options share one prompt row (segment mask); text: longer
        cpu = (
            ref
            if continuation == "letter"
            else evaluate(
                str(base), recs, adapter, device="cpu", dtype="float32", continuation=continuation, progress=False
            ).to_pandas()
        )
        dev = evaluate(
            str(base), recs, adapter, device=DEVICE, dtype="float32", continuation=continuation, progress=False
        ).to_pandas()
        worst, agree = mc_errors(dev, cpu)
        observe("evaluate_float32_vs_cpu", continuation=continuation, max_abs_err=worst, prediction_agreement=agree)
        assert worst < F32_TOL and agree == 1.0
        assert dev["pred_norm"].tolist() == cpu["pred_norm"].tolist()
    bf = evaluate(str(base), recs, adapter, device=DEVICE, dtype="bfloat16", progress=False).to_pandas()
    worst, agree = mc_errors(bf, ref)
    observe("evaluate_bfloat16_vs_cpu_float32", max_abs_err=worst, prediction_agreement=agree)
    # letter continuations are 1-2 tokens (+ EOS is not scored): the per-token tolerance x 2
    assert worst < 2 * BF16_TOL_PER_TOKEN


# --------------------------------------------------------------------------- layer views
def test_lens_last_layer_equals_compare(arch_pair):
    arch, base, adapter = arch_pair
    for dtype in ("float32", "bfloat16"):
        pair = load(base, adapter, dtype)
        comp = run_compare(pair)
        view = layers(pair, terms=TERMS, texts=TEXTS, controls=CONTROLS, progress=False)
        last = view.wide().query(f"layer == {view.n_layers - 1}")
        merged = comp.merge(last, on=KEYS, suffixes=("", "_lens"), validate="one_to_one")
        assert len(merged) == len(comp)
        worst, per_token = 0.0, 0.0
        for col in ("logp_base", "logp_tuned"):
            a, b = merged[col].to_numpy(float), merged[f"{col}_lens"].to_numpy(float)
            assert np.array_equal(np.isnan(a), np.isnan(b))
            err = np.abs(a - b)[~np.isnan(a)]
            worst = max(worst, float(err.max()))
            per_token = max(per_token, float((err / merged["n_tokens"].to_numpy(float)[~np.isnan(a)]).max()))
        observe(
            "lens_last_layer_vs_compare", arch=arch, dtype=dtype, max_abs_err=worst, max_abs_err_per_token=per_token
        )
        assert worst < F32_TOL if dtype == "float32" else per_token < BF16_TOL_PER_TOKEN, (arch, dtype, worst)


def test_patching_recovers_the_delta(arch_pair):
    arch, base, adapter = arch_pair
    pair = load(base, adapter)
    df = patch(pair, terms=TERMS, texts=TEXTS[1:3], progress=False).to_pandas()
    n_layers = int(df["layer"].max()) + 1
    full = df[(df["component"] == "all") | ((df["component"] == "layer") & (df["layer"] == n_layers - 1))]
    assert len(full) > 0
    # denoise (tuned states into base) reaches the tuned logp; noise (base states into tuned) the base logp
    target = full["logp_tuned"].where(full["direction"] == "denoise", full["logp_base"])
    worst = float(np.abs(full["logp_patched"] - target).max())
    rec_err = float(np.abs(full["recovered"] - 1.0).max())
    observe("patching_full_recovery", arch=arch, max_abs_err=worst, max_recovered_err=rec_err)
    assert worst < F32_TOL, (arch, worst)
    assert rec_err < 1e-3, (arch, rec_err)
    # and the patched logps equal the CPU's
    ref = patch(load(base, adapter, device="cpu"), terms=TERMS, texts=TEXTS[1:3], progress=False).to_pandas()
    cpu_err = float(np.nanmax(np.abs(df["logp_patched"].to_numpy(float) - ref["logp_patched"].to_numpy(float))))
    observe("patching_vs_cpu", arch=arch, max_abs_err=cpu_err)
    assert cpu_err < F32_TOL


# --------------------------------------------------------------------------- device="shard"
def test_shard_on_one_device(tiny_llama):
    base, adapter = tiny_llama
    ref = run_compare(load(base, adapter))
    pair = load(base, adapter, device="shard")
    devices = pair.metadata["devices"]
    observe("shard_devices", devices=devices, metadata_device=pair.metadata["device"])
    assert devices == (["cuda:0"] if CUDA else ["cpu"]) and pair.device.type == DEVICE
    worst, _ = errors(run_compare(pair), ref)
    observe("shard_vs_single_device", max_abs_err=worst)
    assert worst < F32_TOL
    view = layers(pair, terms=TERMS, texts=TEXTS[:2], controls=None, progress=False)
    assert len(view) > 0 and view.n_layers == 2


# --------------------------------------------------------------------------- training
def load_adapter_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_bf16_lora_training_save_reload_evaluate(tiny_llama, tmp_path):
    from specprobe.finetune.evaluation import evaluate
    from specprobe.finetune.training import train

    base, _ = tiny_llama
    data = write_qa(tmp_path / "qa.json")
    run = train(
        str(base),
        data,
        None,
        tmp_path / "bf16",
        max_steps=10,
        batch_size=2,
        save_every=5,
        precision="bf16",
        learning_rate=1e-2,
        warmup_ratio=0.0,
        progress=False,
    )
    m = run.manifest
    losses = [p["loss"] for p in m["loss_curve"]]
    observe(
        "bf16_training",
        steps=m["steps"],
        first_loss=losses[0],
        final_loss=losses[-1],
        distributed_type=m["distributed_type"],
        wall_time_s=m["wall_time_s"],
    )
    assert run.completed and m["steps"] == 10 and m["options"]["precision"] == "bf16"
    assert all(math.isfinite(x) for x in losses)
    weights = load_adapter_weights(tmp_path / "bf16")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # trainable LoRA weights stay float32
    assert any(k.endswith("lora_B.weight") and w.abs().max() > 0 for k, w in weights.items())  # it trained
    # reload the saved adapter on the device and evaluate: bf16 runs unmerged, float32 gives the CPU's answers
    pair = load(base, tmp_path / "bf16", "bfloat16")
    assert pair.lora_forward == "unmerged"
    res = evaluate(pair, data, progress=False)
    assert len(res.to_pandas()) == 2 * 16 and res.metadata["dtype"] == "bfloat16"
    dev = evaluate(str(base), data, tmp_path / "bf16", device=DEVICE, dtype="float32", progress=False).to_pandas()
    cpu = evaluate(str(base), data, tmp_path / "bf16", device="cpu", dtype="float32", progress=False).to_pandas()
    worst, agree = mc_errors(dev, cpu)
    acc = res.accuracy()
    observe(
        "trained_adapter_evaluate",
        max_abs_err=worst,
        prediction_agreement=agree,
        bf16_tuned_acc=float(acc[(acc["model"] == "tuned") & (acc["specialty"] == "ALL")]["acc"].iloc[0]),
    )
    assert worst < F32_TOL and agree == 1.0


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from specprobe.finetune.training import train
    base, data, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    def on_step(step, loss):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: as the OOM killer or a lost node
    train(base, data, None, out, max_steps=12, batch_size=2, save_every=3, dropout=0.1, progress=False,
          on_step=on_step if kill_at > 0 else None)
""")


def _train_subprocess(base, data, out, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    }
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(base), str(data), str(out), str(kill_at)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resume_after_sigkill(tiny_llama, tmp_path):
    """A training process killed (SIGKILL) at step 7 resumes from its step-6 checkpoint and ends with the
    adapter an uninterrupted run ends with (default precision: bf16 autocast on a GPU)."""
    base, _ = tiny_llama
    data = write_qa(tmp_path / "qa.json", 24)
    killed = _train_subprocess(base, data, tmp_path / "killed", kill_at=7)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ckdir = tmp_path / "killed" / "checkpoints"
    steps = sorted(int(p.name.split("-")[1]) for p in ckdir.iterdir() if p.name.startswith("step-"))
    assert steps == [6] and not (tmp_path / "killed" / "manifest.json").exists()
    for out in ("killed", "full"):
        res = _train_subprocess(base, data, tmp_path / out)
        assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    b = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert a["steps"] == b["steps"] == 12 and a["resumed_from"] == [6]
    diff = max_diff(load_adapter_weights(tmp_path / "full"), load_adapter_weights(tmp_path / "killed"))
    losses_equal = [c["loss"] for c in a["loss_curve"]] == [c["loss"] for c in b["loss_curve"]]
    control = None
    if diff != 0.0:  # is the GPU itself nondeterministic here? a second uninterrupted run tells
        res = _train_subprocess(base, data, tmp_path / "full2")
        assert res.returncode == 0, res.stderr[-3000:]
        control = max_diff(load_adapter_weights(tmp_path / "full"), load_adapter_weights(tmp_path / "full2"))
    observe(
        "resume_after_sigkill",
        precision=a["options"]["precision"],
        max_abs_diff=diff,
        losses_equal=losses_equal,
        uninterrupted_rerun_diff=control,
    )
    assert diff == 0.0, (
        f"resumed adapter differs from the uninterrupted one by {diff:.3g}; two uninterrupted runs "
        f"differ by {control:.3g}" + (" (the resume loses state)" if control == 0.0 else " (nondeterministic kernels)")
    )
    assert losses_equal


def test_qlora_4bit(tiny_llama, tmp_path):
    if not CUDA:
        pytest.skip("4-bit QLoRA needs a CUDA GPU (bitsandbytes' 4-bit kernels)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"bitsandbytes is not importable ({exc}); carry its wheel in .whl/ (bench/fetch_gpu_wheels.sh)")
    from specprobe.finetune.evaluation import evaluate
    from specprobe.finetune.training import train

    base, _ = tiny_llama
    data = write_qa(tmp_path / "qa.json")
    run = train(
        str(base),
        data,
        None,
        tmp_path / "qlora",
        max_steps=6,
        batch_size=2,
        save_every=3,
        load_in_4bit=True,
        precision="bf16",
        learning_rate=1e-2,
        warmup_ratio=0.0,
        progress=False,
    )
    m = run.manifest
    losses = [p["loss"] for p in m["loss_curve"]]
    observe(
        "qlora_4bit_training",
        steps=m["steps"],
        first_loss=losses[0],
        final_loss=losses[-1],
        bitsandbytes=m.get("versions", {}).get("bitsandbytes"),
    )
    assert run.completed and m["steps"] == 6 and m["options"]["load_in_4bit"] is True
    assert all(math.isfinite(x) for x in losses)
    weights = load_adapter_weights(tmp_path / "qlora")
    assert any(k.endswith("lora_B.weight") and w.abs().max() > 0 for k, w in weights.items())
    # the adapter trained on the 4-bit base loads on the 16-bit base and evaluates
    res = evaluate(str(base), data, tmp_path / "qlora", device=DEVICE, dtype="bfloat16", progress=False)
    assert len(res.to_pandas()) == 2 * 16
