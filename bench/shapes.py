"""Real-size shapes: `python -m bench --shape llama-3.2-3b` (or `llama-3.1-8b`).

The architecture is built from its config alone (below; nothing is downloaded) on the meta device,
then materialised in bfloat16 with `to_empty` and filled in place with seeded random weights
(normal(0, 0.02), norms at 1): no float32 copy of the weights ever exists. A rank-16 LoRA with
random, non-zero B goes on every projection (q, k, v, o, gate, up, down), so the tuned view differs.
`specprobe.probe.compare` and the logit lens (`specprobe.probe.layers`) then run on S-MedQA
questions, and the report gives

- the peak model-attributable memory as a multiple of one copy of the weights: on a CPU, the peak
  resident set (`VmHWM`, reset per phase through `/proc/self/clear_refs`) minus the resident set
  just before the model was built; on CUDA, `torch.cuda.max_memory_allocated` minus the memory
  allocated before;
- tokens/s of compare and of the lens (both views), the seconds of each view, and whether the
  tuned view ran folded or unmerged; where it runs unmerged (16-bit weights), compare runs again
  with `fold_mode="fold"` for the cost of unmerged LoRA and the largest |logp| difference;
- on a reduced-layer copy of the shape (`--fold-check-layers`), how folding into a bf16 weight per
  batch compares with peft's merged model (`merge_and_unload`, in place, last), with the unmerged
  forward, and with a float32 reference;
- on CUDA (or with `--baseline on`), the plain way for scale: two full copies, one merged.

The tokenizer is a local BPE (`specprobe.testing.tiny_models.train_tokenizer("llama")`) trained
on the S-MedQA questions: a stand-in, so token counts differ from the real Llama-3 tokenizer's.
Each measurement runs in its own process, so that the memory it reports is its own.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# The published configs (config.json of meta-llama/Llama-3.2-3B and meta-llama/Llama-3.1-8B), as LlamaConfig keywords.
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-3b": {
        "hidden_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
    "llama-3.1-8b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
}

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_VOCAB = 32000  # the stand-in tokenizer's target size (its ids must fit the shape's vocabulary)
INIT_STD = 0.02


# --------------------------------------------------------------------------- the model
def shape_dict(name: str, layers: int | None = None, hidden: int | None = None) -> dict[str, Any]:
    """The shape's config keywords; `layers` truncates the stack, `hidden` narrows it (head size kept at
    128 where it fits, heads, kv heads and the MLP scaled in proportion)."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {sorted(SHAPES)}")
    d = copy.deepcopy(SHAPES[name])
    if layers is not None:
        if layers < 1:
            raise ValueError(f"--layers must be >= 1, got {layers}")
        d["num_hidden_layers"] = layers
    if hidden is not None and hidden != d["hidden_size"]:
        head_dim = min(d["head_dim"], hidden)
        if hidden % head_dim:
            raise ValueError(f"--hidden {hidden} is not a multiple of the head size {head_dim}")
        heads = hidden // head_dim
        group = d["num_attention_heads"] // d["num_key_value_heads"]
        kv = max(1, heads // group)
        while heads % kv:
            kv -= 1
        inter = max(64, round(hidden * d["intermediate_size"] / d["hidden_size"] / 64) * 64)
        d.update(
            hidden_size=hidden,
            head_dim=head_dim,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=inter,
        )
    return d


def shape_config(name: str, layers: int | None = None, hidden: int | None = None):
    from transformers import LlamaConfig

    return LlamaConfig(**shape_dict(name, layers, hidden))


def _rebuild_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """`to_empty` leaves buffers uninitialised (on meta they never had values): rebuild each module
    that owns buffers (in Llama, the rotary embedding's inverse frequencies) from its config."""
    for name, module in list(model.named_modules()):
        if not module._buffers:
            continue
        config = getattr(module, "config", None)
        if config is None:
            raise RuntimeError(f"cannot rebuild the buffers of {name} ({type(module).__name__}): no config")
        with torch.device(device):
            fresh = type(module)(config)
        for key in list(module._buffers):
            module._buffers[key] = fresh._buffers[key].to(device)
        for key, value in vars(fresh).items():  # e.g. attention_scaling, computed beside the buffers
            if not key.startswith("_") and key not in ("training", "config"):
                setattr(module, key, value)


@torch.no_grad()
def init_weights_(model: torch.nn.Module, seed: int = 0, std: float = INIT_STD) -> None:
    """Seeded in place: normal(0, std) for every matrix and embedding, 1 for norm gains. In chunks of
    16M elements, so no temporary larger than that exists whatever the kernel does inside."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():  # tied parameters are listed once
        if "norm" in name.rsplit(".", 2)[-2]:
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            for chunk in p.view(-1).split(1 << 24):
                chunk.normal_(0.0, std, generator=gen)


def materialise(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The causal LM of `config`: built on meta, allocated on `device` in `dtype`, seeded random weights."""
    from transformers import AutoModelForCausalLM

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # as the parameters will report it
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to_empty(device=device)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # to_empty gives each of the tied modules its own tensor
    _rebuild_buffers(model, device)
    init_weights_(model, seed)
    bad = [n for n, p in model.named_parameters() if p.device != device or p.dtype != dtype]
    if bad:
        raise RuntimeError(f"parameters not on {device} in {dtype}: {bad[:3]}")
    return model.eval()


def add_lora(model, rank: int = 16, seed: int = 1):
    """A rank-`rank` LoRA on every projection with random A and B (peft's `init_lora_weights=False`),
    so the tuned view differs from the base. peft keeps adapter weights in float32 by default."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS, init_lora_weights=False)
    # for inference, as ModelPair.load loads an adapter directory (is_trainable=False): nothing requires grad
    return get_peft_model(model, cfg).requires_grad_(False).eval()


def param_bytes(module: torch.nn.Module, lora: bool | None = None) -> int:
    """Bytes of the (deduplicated) parameters; `lora` True: only LoRA's, False: all but LoRA's."""
    total = 0
    for name, p in module.named_parameters():
        is_lora = "lora_" in name
        if lora is None or lora == is_lora:
            total += p.numel() * p.element_size()
    return total


# --------------------------------------------------------------------------- memory
def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class MemoryMeter:
    """Peak memory per phase, relative to the reading taken at construction.

    CPU: the kernel's resident-set high-water mark (VmHWM), reset at each phase's start by writing 5
    to /proc/self/clear_refs; where that is not allowed, a thread sampling VmRSS every 2 ms.
    CUDA: torch.cuda.max_memory_allocated, reset per phase."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.method = "VmHWM (reset per phase via /proc/self/clear_refs)" if self._clear_refs() else None
        if self.method is None:
            self.method = "VmRSS sampled every 2 ms (clear_refs not allowed)"
            self._max, self._stop = 0, threading.Event()
            threading.Thread(target=self._sample, daemon=True).start()
        self.before = self.now()
        self.peaks: dict[str, int] = {}

    @staticmethod
    def _clear_refs() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _status("VmRSS"))
            time.sleep(0.002)

    def now(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else _status("VmRSS")

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif self.method.startswith("VmHWM"):
            self._clear_refs()
        else:
            self._max = self.now()

    def _peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status("VmHWM") if self.method.startswith("VmHWM") else max(self._max, self.now())

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._reset()
        try:
            yield
        finally:
            self.peaks[name] = self._peak() - self.before

    @property
    def peak(self) -> int:
        return max(self.peaks.values()) if self.peaks else 0


# --------------------------------------------------------------------------- scoring helpers
@contextlib.contextmanager
def timed_views(pair) -> Iterator[dict[str, float]]:
    """Seconds spent inside each of `pair`'s views (compare and the lens score one view at a time)."""
    times: dict[str, float] = {}
    original = pair.view

    @contextlib.contextmanager
    def view(variant: str):
        t0 = time.perf_counter()
        with original(variant) as split:
            yield split
        times[variant] = times.get(variant, 0.0) + time.perf_counter() - t0

    pair.view = view
    try:
        yield times
    finally:
        del pair.view


def _timed(fn, pair, repeats: int, device: torch.device, **kwargs) -> tuple[Any, dict]:
    """`fn(pair, ...)` `repeats` times: the last result, and the median seconds in all and per view."""
    runs = []
    for _ in range(max(1, repeats)):
        with timed_views(pair) as views:
            t0 = time.perf_counter()
            result = fn(pair, controls=None, progress=False, **kwargs)
            _sync(device)
            runs.append({"seconds": time.perf_counter() - t0, "views": {v: views[v] for v in ("base", "tuned")}})
    seconds = statistics.median(r["seconds"] for r in runs)
    per_view = {v: statistics.median(r["views"][v] for r in runs) for v in ("base", "tuned")}
    return result, {"runs": runs, "seconds": seconds, "views": per_view}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rows(comparison) -> dict[tuple[str, str, int], tuple[float, float]]:
    df = comparison.scored()
    return {(r.text_id, r.term, int(r.start)): (float(r.logp_base), float(r.logp_tuned)) for r in df.itertuples()}


def _max_diff(a: dict, b: dict, col: int) -> float | None:
    diffs = [abs(a[k][col] - b[k][col]) for k in a.keys() & b.keys()]
    return max(diffs) if diffs else None


def warm_texts(texts: list[str], terms: list[str]) -> list[str]:
    """The first text in which a term occurs (a warm-up must have something to score)."""
    from specprobe.probe.occurrences import find_spans

    return next(([t] for t in texts if any(find_spans(t, term) for term in terms)), texts[:1])


def _pair(model, tok, device: torch.device, dtype: torch.dtype, fold_mode: str = "auto", check: bool = True):
    from specprobe.core import ModelPair

    return ModelPair.load(None, model, tokenizer=tok, device=str(device), dtype=dtype, fold_mode=fold_mode, check=check)


# --------------------------------------------------------------------------- workers (one process each)
def _imports() -> None:
    """Everything the measurement uses, imported before the 'before' reading."""
    import pandas  # noqa: F401
    import peft.tuners.lora  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import specprobe.probe.layers  # noqa: F401
    from specprobe.probe import compare  # noqa: F401


def _warm_up(spec: dict, tok, device: torch.device, dtype: torch.dtype) -> None:
    """A 1-layer, 128-wide model of the same architecture through the same code (compare, the lens,
    folded and unmerged): code pages and one-time allocations are in place before the reading."""
    from specprobe.probe import compare, layers

    model = add_lora(materialise(shape_config(spec["shape"], 1, 128), device, dtype), spec["lora_rank"])
    texts, terms = warm_texts(spec["texts"], spec["terms"]), spec["terms"]
    for mode in ("auto", "fold"):
        compare(_pair(model, tok, device, dtype, mode), terms=terms, texts=texts, controls=None, progress=False)
    layers(_pair(model, tok, device, dtype), terms=terms, texts=texts, controls=None, progress=False)
    del model
    gc.collect()


def _measure(spec: dict) -> dict:
    """The real-size run: build, adapt, compare (as loaded, and folded where that differs), lens."""
    from transformers import AutoTokenizer

    from specprobe.core.encoding import encode
    from specprobe.probe import compare, layers
    from specprobe.probe.occurrences import token_span

    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    texts, terms = spec["texts"], spec["terms"]
    batch = {"batch_size": spec["batch_size"]} if spec.get("batch_size") else {}
    _warm_up(spec, tok, device, dtype)

    meter = MemoryMeter(device)
    _progress(f"before the model: {meter.before / 2**30:.2f} GiB ({meter.method}); materialising")
    res: dict[str, Any] = {"memory_method": meter.method, "before_bytes": meter.before}
    t0 = time.perf_counter()
    with meter.phase("materialise"):
        model = materialise(shape_config(spec["shape"], spec["layers"], spec["hidden"]), device, dtype, spec["seed"])
        _sync(device)
    res["materialise_seconds"] = time.perf_counter() - t0
    res["after_weights_bytes"] = meter.now() - meter.before
    _progress(
        f"materialised in {res['materialise_seconds']:.0f} s, {res['after_weights_bytes'] / 2**30:.2f} GiB above before"
    )
    res["weights_bytes"] = param_bytes(model)
    res["n_params"] = sum(p.numel() for p in model.parameters())
    with meter.phase("lora"):
        model = add_lora(model, spec["lora_rank"], spec["seed"] + 1)
    res["lora_bytes"] = param_bytes(model, lora=True)
    res["lora_dtype"] = str(next(p.dtype for n, p in model.named_parameters() if "lora_" in n)).replace("torch.", "")
    with meter.phase("load"):
        pair = _pair(model, tok, device, dtype)  # self-check included
        res["lora_forward"] = pair.lora_forward
        compare(
            pair, terms=terms, texts=warm_texts(texts, terms), controls=None, progress=False, **batch
        )  # warm-up at size

    encs = [encode(tok, t) for t in texts]
    res["text_tokens"] = sum(len(e.ids) for e in encs)
    _progress(f"compare on {len(texts)} texts ({res['text_tokens']} tokens), {pair.lora_forward} tuned view")
    with meter.phase("compare"):
        comp, timing = _timed(compare, pair, spec["repeats"], device, terms=terms, texts=texts, **batch)
    res["compare_runs"] = timing["runs"]
    res["compare_seconds"], res["compare_view_seconds"] = timing["seconds"], timing["views"]
    df = comp.scored()
    res["occurrences"] = len(df)
    res["scored_tokens"] = int(df["n_tokens"].sum())
    rows = []
    for r in df.itertuples():
        ti = int(str(r.text_id)[4:])
        span = token_span(encs[ti], texts[ti], r.start, r.end)
        rows.append((ti, r.term, span.first if span else -1, r.logp_base, r.logp_tuned))
    res["rows"] = rows

    if pair.lora_forward == "unmerged":  # the cost of running unmerged: the same compare, folded
        _progress(f"compare done in {res['compare_seconds']:.0f} s; again with the tuned view folded")
        fold_pair = _pair(model, tok, device, dtype, fold_mode="fold", check=False)
        with meter.phase("compare_folded"):
            compare(
                fold_pair, terms=terms, texts=warm_texts(texts, terms), controls=None, progress=False, **batch
            )  # warm-up
            folded, timing = _timed(compare, fold_pair, spec["repeats"], device, terms=terms, texts=texts, **batch)
        res["folded_runs"] = timing["runs"]
        res["folded_seconds"], res["folded_view_seconds"] = timing["seconds"], timing["views"]
        a, b = _rows(comp), _rows(folded)
        res["folded_vs_unmerged_max_abs_logp"] = _max_diff(a, b, 1)
        res["folded_base_view_max_abs_logp"] = _max_diff(a, b, 0)  # the base view does not fold: 0
        del fold_pair, folded

    _progress("logit lens")
    with meter.phase("lens"):
        lens, timing = _timed(layers, pair, spec["repeats"], device, terms=terms, texts=texts, **batch)
        res["lens_runs"] = timing["runs"]
        res["lens_seconds"], res["lens_view_seconds"] = timing["seconds"], timing["views"]
        res["lens_layers"] = lens.n_layers
        res["lens_rows"] = len(lens.to_pandas())
    res["peaks"] = dict(meter.peaks)
    res["peak_bytes"] = meter.peak
    return res


def _fold_check(spec: dict) -> dict:
    """On `fold_check_layers` layers of the shape: compare's logps with the tuned view unmerged,
    folded per batch, in float32 (the same weights upcast: the reference the 16-bit variants
    approximate), and as peft's merged model (`merge_and_unload`, last, in place of a copy)."""
    from transformers import AutoTokenizer

    from specprobe.probe import compare

    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    texts, terms = spec["texts"], spec["terms"]
    n_layers = min(spec["fold_check_layers"], spec["layers"] or SHAPES[spec["shape"]]["num_hidden_layers"])
    config = shape_config(spec["shape"], n_layers, spec["hidden"])
    model = add_lora(materialise(config, device, dtype, spec["seed"]), spec["lora_rank"], spec["seed"] + 1)

    def run(m, mode="auto", tuned=None):
        from specprobe.core import ModelPair

        if tuned is None:  # a PeftModel: base view with the adapter disabled, tuned view as `mode` says
            pair = ModelPair.load(None, m, tokenizer=tok, device=str(device), fold_mode=mode, check=False)
        else:
            pair = ModelPair.load(m, tuned, tokenizer=tok, device=str(device), check=False)
        return _rows(compare(pair, terms=terms, texts=texts, controls=None, progress=False))

    _progress(f"{n_layers} layers: unmerged, folded, float32, merged")
    unmerged = run(model, "unmerged")
    folded = run(model, "fold")
    # float32: the base weights upcast in place (exact: they are bf16 values; the LoRA is float32 already),
    # then cast back (exact again), so at most one float32 copy of the (reduced) weights exists
    base_params = [p for n, p in model.named_parameters() if "lora_" not in n]
    for p in base_params:
        p.data = p.data.float()
    reference = run(model, "unmerged")
    for p in base_params:
        p.data = p.data.to(dtype)
    gc.collect()
    merged_model = model.merge_and_unload().eval()  # in place, as peft merges (W += B @ A * scaling); no copy
    merged = run(merged_model, tuned=merged_model)  # its "tuned" column is the merged model's
    deltas = sorted(abs(t - b) for b, t in unmerged.values() if math.isfinite(t - b))
    return {
        "layers": n_layers,
        "occurrences": len(unmerged),
        "folded_vs_unmerged": _max_diff(folded, unmerged, 1),
        "folded_vs_merged": _max_diff(folded, merged, 1),
        "unmerged_vs_float32": _max_diff(unmerged, reference, 1),
        "folded_vs_float32": _max_diff(folded, reference, 1),
        "merged_vs_float32": _max_diff(merged, reference, 1),
        "base_view_vs_float32": _max_diff(unmerged, reference, 0),
        "median_abs_delta": deltas[len(deltas) // 2] if deltas else None,
    }


def _baseline(spec: dict) -> dict:
    """The plain way at this size: two full copies (base, and base + LoRA merged), `bench.baseline.score`."""
    from transformers import AutoTokenizer

    from bench import baseline

    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    texts, terms = spec["texts"], spec["terms"]
    config = shape_config(spec["shape"], spec["layers"], spec["hidden"])
    small = add_lora(materialise(shape_config(spec["shape"], 1, 128), device, dtype), spec["lora_rank"])
    small_base = materialise(shape_config(spec["shape"], 1, 128), device, dtype)
    baseline.score(
        small_base, small.merge_and_unload().eval(), tok, warm_texts(texts, terms), terms
    )  # warm-up of the code path
    del small, small_base
    meter = MemoryMeter(device)
    with meter.phase("two copies"):
        base = materialise(config, device, dtype, spec["seed"])
        tuned = add_lora(materialise(config, device, dtype, spec["seed"]), spec["lora_rank"], spec["seed"] + 1)
        tuned = tuned.merge_and_unload().eval()
    with meter.phase("score"):
        baseline.score(base, tuned, tok, warm_texts(texts, terms), terms)  # warm-up at size
        t0 = time.perf_counter()
        rows = baseline.score(base, tuned, tok, texts, terms)
        _sync(device)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "peak_bytes": meter.peak,
        "peaks": meter.peaks,
        "rows": rows,
        "memory_method": meter.method,
    }


WORKERS = {"measure": _measure, "fold-check": _fold_check, "baseline": _baseline}


def worker(kind: str, spec_path: str) -> None:
    _imports()
    spec = json.loads(Path(spec_path).read_text())
    print(json.dumps(WORKERS[kind](spec)))


def _progress(message: str) -> None:
    """A line on stderr that the parent passes on (the workers' other stderr is kept for errors)."""
    print(f"{PROGRESS}{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


PROGRESS = "  [shape] "


def _run_worker(kind: str, spec: Path) -> dict:
    print(f"{PROGRESS}{time.strftime('%H:%M:%S')} starting the {kind} worker", flush=True)
    cmd = [sys.executable, "-m", "bench", "--shape-worker", kind, "--spec", str(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    tail: list[str] = []

    def relay() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(PROGRESS):
                print(f"{line.rstrip()} ({kind})", flush=True)
            else:
                tail.append(line)
                del tail[:-200]

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait()
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"shape worker {kind} failed (exit {proc.returncode}):\n{''.join(tail)[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the run
def stand_in_tokenizer(data: Path, cache: Path, vocab: int):
    """The local BPE tokenizer trained on every question of the data file (and the tiny corpus), cached."""
    from transformers import AutoTokenizer

    from specprobe.terms.datasets import load_qa
    from specprobe.testing.tiny_models import corpus_lines, train_tokenizer

    texts = [r.context_text() for r in load_qa(data)]
    key = hashlib.sha256(json.dumps([TOKENIZER_VOCAB, texts]).encode()).hexdigest()[:12]
    path = cache / f"shape-tokenizer-{key}"
    if not (path / "tokenizer.json").exists():
        tok = train_tokenizer("llama", vocab_size=TOKENIZER_VOCAB, lines=texts + corpus_lines())
        tok.save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    if len(tok) > vocab:
        raise ValueError(f"the stand-in tokenizer has {len(tok)} ids, more than the shape's vocabulary {vocab}")
    return path, len(tok)


def _gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def run(args) -> int:
    """`python -m bench --shape NAME`: the parent, which prepares the workload and runs the workers."""
    from bench import workload
    from specprobe.core.scoring import batch_rows
    from specprobe.terms.datasets import default_data_path
    from specprobe.utils.io import write_json

    data = Path(args.data) if args.data else default_data_path()
    if not data.exists():
        print(
            f"S-MedQA data not found at {data} (set SPECPROBE_SMEDQA or pass --data): the {args.shape} shape "
            f"was not run"
        )
        return 0
    device = torch.device(args.device)
    dtype = args.dtype or "bfloat16"
    cfg = shape_dict(args.shape, args.layers, args.hidden)
    n_texts = args.n_texts or 8
    repeats = args.repeats or 1
    texts = workload.load_texts(data, n_texts)
    terms, terms_note = workload.workload_terms(data, texts)  # a module attribute: bench.gpu_kit may replace it
    workload.CACHE.mkdir(parents=True, exist_ok=True)
    tok_path, tok_size = stand_in_tokenizer(data, workload.CACHE, cfg["vocab_size"])
    baseline = args.baseline == "on" or (args.baseline == "auto" and device.type == "cuda")
    spec = {
        "shape": args.shape,
        "layers": args.layers,
        "hidden": args.hidden,
        "device": str(device),
        "dtype": dtype,
        "texts": texts,
        "terms": terms,
        "tokenizer": str(tok_path),
        "batch_size": args.batch_size,
        "repeats": repeats,
        "seed": 0,
        "lora_rank": args.lora_rank,
        "fold_check_layers": args.fold_check_layers,
    }
    spec_path = workload.CACHE / f"shape-spec-{args.shape}.json"
    spec_path.write_text(json.dumps(spec))
    desc = (
        f"{args.shape}: hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
        f"{cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads, MLP {cfg['intermediate_size']}, "
        f"vocab {cfg['vocab_size']}, {'tied' if cfg['tie_word_embeddings'] else 'untied'} embeddings"
    )
    print(
        f"workload: {len(texts)} S-MedQA texts; terms: {terms_note}; {desc}; rank-{args.lora_rank} LoRA on "
        f"{', '.join(p[:-5] for p in LORA_TARGETS)}; {device} {dtype}, {torch.get_num_threads()} threads; tokenizer: "
        f"a locally trained stand-in BPE ({tok_size} ids, trained on the S-MedQA questions), so token counts differ "
        f"from the real Llama-3 tokenizer's",
        flush=True,
    )

    m = _run_worker("measure", spec_path)
    print(
        f"  measured: weights {_gib(m['weights_bytes'])} GiB, compare {m['compare_seconds']:.1f} s, "
        f"lens {m['lens_seconds']:.1f} s",
        flush=True,
    )
    fold = None
    if args.fold_check_layers and dtype != "float32":
        fold = _run_worker("fold-check", spec_path)
        print(f"  fold check on {fold['layers']} layers done", flush=True)
    base_run = _run_worker("baseline", spec_path) if baseline else None
    if base_run:
        print("  baseline (two copies) done", flush=True)

    weights = m["weights_bytes"]
    ratio = m["peak_bytes"] / weights
    tokens = m["text_tokens"]
    views = m["compare_view_seconds"]
    unmerged_cost = None
    if m.get("folded_seconds"):
        fv = m["folded_view_seconds"]
        unmerged_cost = {
            "tuned_unmerged_over_base": views["tuned"] / views["base"],
            "tuned_folded_over_base": fv["tuned"] / fv["base"],
            "tuned_unmerged_over_folded": views["tuned"] / fv["tuned"],
            "compare_unmerged_over_folded": m["compare_seconds"] / m["folded_seconds"],
        }
    results: dict[str, Any] = {
        "machine": {
            "threads": torch.get_num_threads(),
            "device": str(device),
            "dtype": dtype,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        },
        "workload": {
            "shape": args.shape,
            "config": cfg,
            "n_texts": len(texts),
            "n_terms": len(terms),
            "terms": terms_note,
            "text_tokens": tokens,
            "occurrences": m["occurrences"],
            "scored_tokens": m["scored_tokens"],
            "lora_rank": args.lora_rank,
            "lora_targets": LORA_TARGETS,
            "tokenizer": f"locally trained stand-in BPE, {tok_size} ids (token counts differ from Llama-3's)",
            "lora_forward": m["lora_forward"],
            "batch_size": batch_rows(device, args.batch_size),  # the rows compare ran with
            "repeats": repeats,
        },
        "memory": {
            "method": m["memory_method"],
            "weights_bytes": weights,
            "weights_gib": weights / 2**30,
            "n_params": m["n_params"],
            "lora_bytes": m["lora_bytes"],
            "lora_dtype": m["lora_dtype"],
            "after_weights_bytes": m["after_weights_bytes"],
            "peak_bytes": m["peak_bytes"],
            "peaks_by_phase_bytes": m["peaks"],
            "peak_ratio": ratio,
            "target_ratio": 1.15,
            "target_met": ratio <= 1.15,
        },
        "peak_memory_ratio": ratio,
        "lora_forward": m["lora_forward"],
        "compare": {
            "seconds": m["compare_seconds"],
            "runs": m["compare_runs"],
            "view_seconds": views,
            "tokens_per_s": tokens / m["compare_seconds"],
        },
        "lens": {
            "seconds": m["lens_seconds"],
            "view_seconds": m["lens_view_seconds"],
            "runs": m["lens_runs"],
            "n_layers": m["lens_layers"],
            "rows": m["lens_rows"],
            "tokens_per_s": tokens / m["lens_seconds"],
        },
        "compare_tokens_per_s": tokens / m["compare_seconds"],
        "lens_tokens_per_s": tokens / m["lens_seconds"],
        "materialise_seconds": m["materialise_seconds"],
        "folded": None
        if not m.get("folded_seconds")
        else {
            "seconds": m["folded_seconds"],
            "view_seconds": m["folded_view_seconds"],
            "runs": m["folded_runs"],
            "max_abs_logp_vs_unmerged": m["folded_vs_unmerged_max_abs_logp"],
            "base_view_max_abs_logp": m["folded_base_view_max_abs_logp"],
        },
        "unmerged_cost": unmerged_cost,
        "fold_check": fold,
        "texts_per_s": {"compare": len(texts) / m["compare_seconds"]},
        "peak_minus_import_bytes": {"compare": m["peak_bytes"]},
        "logit_lens": {
            "seconds": m["lens_seconds"],
            "n_layers": m["lens_layers"],
            "relative_to_compare": m["lens_seconds"] / m["compare_seconds"],
        },
    }
    if base_run:
        from bench.__main__ import agreement

        max_diff, matched, missed = agreement(m["rows"], base_run["rows"])
        results["baseline"] = {
            "seconds": base_run["seconds"],
            "peak_bytes": base_run["peak_bytes"],
            "peaks_by_phase_bytes": base_run["peaks"],
            "peak_ratio": base_run["peak_bytes"] / weights,
            "agreement": {"max_abs_diff": max_diff, "matched": matched, "missed_by_baseline": missed},
        }
        results["texts_per_s"]["baseline"] = len(texts) / base_run["seconds"]
        results["speedup"] = base_run["seconds"] / m["compare_seconds"]
        results["peak_minus_import_bytes"]["baseline"] = base_run["peak_bytes"]
        results["memory_ratio"] = m["peak_bytes"] / base_run["peak_bytes"]
        results["agreement"] = results["baseline"]["agreement"]
    out = Path(args.out) if args.out else REPO / "out" / f"bench-{args.shape}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    _print(results, m, fold, base_run)
    print(f"\nwrote {out}")
    return 0


def _print(res: dict, m: dict, fold: dict | None, base_run: dict | None) -> None:
    mem, cmp_, lens = res["memory"], res["compare"], res["lens"]
    wl = res["workload"]
    cost = res["unmerged_cost"]
    folded = res["folded"]
    print(
        "\n| shape | layers | weights GiB | peak model memory / weights | compare tokens/s | lens tokens/s | tuned view "
        "| unmerged cost | fold vs unmerged max abs dlogp |\n|---|---|---|---|---|---|---|---|---|"
    )
    cost_txt = "-" if not cost else f"tuned view {cost['tuned_unmerged_over_folded']:.2f}x its folded time"
    fold_txt = "-" if not folded else f"{folded['max_abs_logp_vs_unmerged']:.3g}"
    print(
        f"| {wl['shape']} | {wl['config']['num_hidden_layers']} | {mem['weights_gib']:.2f} | {mem['peak_ratio']:.3f}x | "
        f"{cmp_['tokens_per_s']:.1f} | {lens['tokens_per_s']:.1f} | {wl['lora_forward']} | {cost_txt} | {fold_txt} |"
    )
    phases = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in mem["peaks_by_phase_bytes"].items())
    print(
        f"\nmemory ({mem['method']}): weights {mem['weights_gib']:.2f} GiB ({mem['n_params'] / 1e9:.2f} B parameters, "
        f"bf16 copy only); LoRA {mem['lora_bytes'] / 2**20:.0f} MiB in {mem['lora_dtype']}; after materialising "
        f"{_gib(mem['after_weights_bytes'])} GiB; peak above the pre-model reading by phase (GiB): {phases}; "
        f"peak {mem['peak_ratio']:.3f}x the weights (target <= 1.15: {'met' if mem['target_met'] else 'NOT met'})"
    )
    v = cmp_["view_seconds"]
    print(
        f"scored tokens: {wl['text_tokens']} text tokens, {wl['occurrences']} occurrences; compare "
        f"{cmp_['seconds']:.1f} s = {cmp_['tokens_per_s']:.1f} text tokens/s through both views (base {v['base']:.1f} s, "
        f"tuned {v['tuned']:.1f} s, {wl['lora_forward']})"
    )
    print(
        f"logit lens over all {lens['n_layers']} layers: {lens['seconds']:.1f} s = {lens['tokens_per_s']:.1f} text "
        f"tokens/s (base {lens['view_seconds']['base']:.1f} s, tuned {lens['view_seconds']['tuned']:.1f} s); "
        f"{lens['seconds'] / cmp_['seconds']:.2f} x compare's time"
    )
    if folded and cost:
        fv = folded["view_seconds"]
        print(
            f"unmerged cost: tuned view unmerged {v['tuned']:.1f} s vs base {v['base']:.1f} s "
            f"({cost['tuned_unmerged_over_base']:.2f}x); folded per batch {fv['tuned']:.1f} s vs base {fv['base']:.1f} s "
            f"({cost['tuned_folded_over_base']:.2f}x); compare unmerged/folded {cost['compare_unmerged_over_folded']:.2f}x; "
            f"folded vs unmerged max |dlogp| {folded['max_abs_logp_vs_unmerged']:.3g} (all layers), base view "
            f"{folded['base_view_max_abs_logp']:.3g}"
        )
    if fold:
        print(
            f"fold check on {fold['layers']} layers, {fold['occurrences']} occurrences, max |dlogp| of the tuned view: "
            f"folded vs unmerged {fold['folded_vs_unmerged']:.3g}, folded vs peft merged {fold['folded_vs_merged']:.3g}; "
            f"against float32: unmerged {fold['unmerged_vs_float32']:.3g}, folded {fold['folded_vs_float32']:.3g}, "
            f"merged {fold['merged_vs_float32']:.3g}, base view {fold['base_view_vs_float32']:.3g}; median "
            f"|tuned - base| {fold['median_abs_delta']:.3g}"
        )
    if base_run:
        b = res["baseline"]
        print("\n| metric | compare | baseline | ratio |\n|---|---|---|---|")
        print(
            f"| texts/s | {res['texts_per_s']['compare']:.2f} | {res['texts_per_s']['baseline']:.2f} | "
            f"{res['speedup']:.2f}x |"
        )
        print(
            f"| peak memory above the pre-model reading (MB) | {m['peak_bytes'] / 2**20:.0f} | "
            f"{b['peak_bytes'] / 2**20:.0f} | {res['memory_ratio']:.2f} |"
        )
        a = b["agreement"]
        print(
            f"agreement: max |logp diff| {a['max_abs_diff']:.2e} over {a['matched']} occurrences (bf16: the baseline's "
            f"tuned copy is merged, compare's is {wl['lora_forward']})"
        )
