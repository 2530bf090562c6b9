"""`python -m bench`: probe.compare vs the plain approach, speed and memory, in one run.

Every number is measured in this run: methods alternate over several repeats (median reported),
each run in its own process so that peak memory is attributable. Prints a table and writes
bench/results.json.

`python -m bench --shape llama-3.2-3b` (or llama-3.1-8b) runs a real-size shape instead, built from its
config with random bfloat16 weights and a rank-16 LoRA: peak memory as a multiple of the weights,
tokens/s, and how the tuned view runs (bench/shapes.py; writes out/bench-SHAPE.json).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import shapes as real_shapes
from bench.shapes import SHAPES

HERE = Path(__file__).resolve().parent


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (Linux), in bytes; None where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def rss_bytes() -> int:
    return _status_bytes("VmRSS") or 0


def peak_bytes(device: str = "cpu") -> int:
    """Peak memory so far: resident set size on a CPU, allocated GPU memory on CUDA.

    On Linux the process's own high-water mark (VmHWM), not getrusage's ru_maxrss: a worker started by
    a large parent inherits the parent's resident set as its ru_maxrss, so every worker of a bench whose
    main process had built the lexicon (~0.7 GB) read the same peak, whatever it allocated."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    own = _status_bytes("VmHWM")
    return own if own is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_now(device: str = "cpu") -> int:
    return torch.cuda.memory_allocated() if device.startswith("cuda") else rss_bytes()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- the machine's limit
def projection_shapes(cfg) -> dict[str, tuple[int, int]]:
    """(in, out) of every weight matrix a Llama-style layer multiplies each token by."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    return {
        "q": (d, d),
        "k": (d, kv),
        "v": (d, kv),
        "o": (d, d),
        "gate": (d, inter),
        "up": (d, inter),
        "down": (inter, d),
    }


def matmul_rates(
    shapes: dict[str, tuple[int, int]], rows: int = 1024, repeats: int = 5, device: str = "cpu", dtype: str = "float32"
) -> dict[str, float]:
    """Best FLOP/s of torch.matmul for (rows x in) @ (in x out) on `device` in `dtype`, per distinct shape."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rates: dict[tuple[int, int], float] = {}
    for k, n in set(shapes.values()):
        a = torch.randn(rows, k, device=device, dtype=DTYPES[dtype])
        b = torch.randn(k, n, device=device, dtype=DTYPES[dtype])
        torch.matmul(a, b)
        sync()
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(5):
                torch.matmul(a, b)
            sync()
            best = max(best, 2 * rows * k * n * 5 / (time.perf_counter() - t0))
        rates[(k, n)] = best
    return {name: rates[shape] for name, shape in shapes.items()}


def mix_peak(shapes: dict[str, tuple[int, int]], rates: dict[str, float]) -> float:
    """The rate at which this machine does the model's own mix of matmuls: total FLOPs over the time
    each shape's share takes at its measured best rate (a FLOP-weighted harmonic mean)."""
    flops = {name: k * n for name, (k, n) in shapes.items()}
    return sum(flops.values()) / sum(flops[name] / rates[name] for name in shapes)


# --------------------------------------------------------------------------- worker (one method, one process)
def worker(args: argparse.Namespace) -> None:

    # every module either method uses is imported before the "after imports" reading, so that the
    # difference to the peak is what the model, its adapter and the scoring allocate
    import peft.tuners.lora  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    from bench import baseline
    from specprobe.core import ModelPair
    from specprobe.core.encoding import encode
    from specprobe.probe import compare
    from specprobe.probe.occurrences import token_span

    spec = json.loads(Path(args.spec).read_text())
    device, dtype = spec.get("device", "cpu"), spec.get("dtype", "float32")
    after_import = memory_now(device)
    terms = spec["terms"]
    texts = _texts_with_terms(spec["texts"], terms)[: args.n]  # a text without a term costs nothing and is refused
    batch = {"batch_size": args.batch_size} if args.batch_size else {}
    result: dict = {"method": args.worker, "n": len(texts), "after_import": after_import}
    if args.launched is not None:  # the process start and imports, which no timed number includes
        result["startup_s"] = time.time() - args.launched
    if args.worker == "scaling":  # seconds only, so one process for every size: a process costs its imports
        pair = ModelPair.load(spec["base"], spec["adapter"], device=device, dtype=dtype)
        compare(pair, terms=terms, texts=_warmup_texts(texts, terms), controls=None, progress=False)  # warm-up
        result["scaling"] = []
        for n in sorted({math.ceil(len(texts) * frac) for frac in (0.25, 0.5, 1.0)}):  # texts that have terms
            t0 = time.perf_counter()
            compare(pair, terms=terms, texts=texts[:n], controls=None, progress=False, **batch)
            result["scaling"].append({"n_texts": n, "seconds": time.perf_counter() - t0})
        result["checkpointed"] = _checkpointed_cost(pair, terms, texts, batch)
        if args.profile:  # after the timed runs, which it does not slow down
            from bench import hotspots

            def call():
                return compare(pair, terms=terms, texts=texts, controls=None, progress=False, **batch)

            try:  # a profiler failure costs the profile, not the scaling numbers
                result["profile"] = {
                    "n_texts": len(texts),
                    "torch": hotspots.torch_ops(call, device),
                    "python": hotspots.python_functions(call),
                }
            except Exception as exc:  # noqa: BLE001 - reported in the results instead
                result["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    elif args.worker == "compare":
        pair = ModelPair.load(spec["base"], spec["adapter"], device=device, dtype=dtype)
        compare(pair, terms=terms, texts=_warmup_texts(texts, terms), controls=None, progress=False)  # warm-up
        t0 = time.perf_counter()
        comp = compare(pair, terms=terms, texts=texts, controls=None, progress=False, **batch)
        result["seconds"] = time.perf_counter() - t0
        result["peak"] = peak_bytes(device)
        df = comp.scored()
        encs = [encode(pair.tokenizer, t) for t in texts]
        rows, needed = [], {}
        for r in df.itertuples():
            ti = int(r.text_id[4:])
            span = token_span(encs[ti], texts[ti], r.start, r.end)
            needed[ti] = max(needed.get(ti, 0), span.last + 1)
            rows.append((ti, r.term, span.first, r.logp_base, r.logp_tuned))
        result.update(
            rows=rows,
            useful_tokens=sum(needed.values()),
            scored_tokens=int(df["n_tokens"].sum()),
            lora_forward=pair.metadata.get("lora_forward"),
        )
        if args.measure_peak:  # right after the timed run, in the same process: the machine as compare saw it
            shapes = projection_shapes(AutoConfig.from_pretrained(spec["base"]))
            rates = matmul_rates(shapes, device=device, dtype=dtype)
            result.update(mix_peak=mix_peak(shapes, rates), best_shape_rate=max(rates.values()))
    elif args.worker in ("layers", "patching"):
        from specprobe.core.architecture import split_model
        from specprobe.probe.layers import layers
        from specprobe.probe.patching import patch

        run, kwargs = (layers, batch) if args.worker == "layers" else (patch, {})
        pair = ModelPair.load(spec["base"], spec["adapter"], device=device, dtype=dtype)
        run(pair, terms=terms, texts=_warmup_texts(texts, terms), controls=None, progress=False)  # warm-up
        t0 = time.perf_counter()
        out = run(pair, terms=terms, texts=texts, controls=None, progress=False, **kwargs)
        result.update(
            seconds=time.perf_counter() - t0,
            peak=peak_bytes(device),
            n_rows=len(out.to_pandas()),
            n_layers=len(split_model(pair.base_model).layers),
        )
    else:
        base, tuned, tok = baseline.load_two_copies(spec["base"], spec["adapter"], device, DTYPES[dtype])
        baseline.score(base, tuned, tok, texts[:2], terms)  # warm-up
        t0 = time.perf_counter()
        rows = baseline.score(base, tuned, tok, texts, terms)
        result.update(seconds=time.perf_counter() - t0, peak=peak_bytes(device), rows=rows)
    print(json.dumps(result))


def _checkpointed_cost(pair, terms: list[str], texts: list[str], batch: dict) -> dict:
    """compare as `specprobe compare` runs it, each finished batch kept on disk for a resume
    (`compare(checkpoint=...)`), and a plain call right after: the seconds of both."""
    import tempfile

    from specprobe.probe import compare

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        compare(pair, terms=terms, texts=texts, controls=None, progress=False, checkpoint=Path(tmp) / "p", **batch)
        seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    compare(pair, terms=terms, texts=texts, controls=None, progress=False, **batch)
    return {"seconds": seconds, "plain_seconds": time.perf_counter() - t0}


def run_worker(
    method: str,
    spec: Path,
    n: int,
    batch_size: int | None,
    measure_peak: bool = False,
    label: str | None = None,
    profile: bool = False,
) -> dict:
    """One method in its own process (its peak memory is its own); with `label`, a progress line with its wall time."""
    launched = time.time()
    cmd = [sys.executable, "-m", "bench", "--worker", method, "--spec", str(spec), "--n", str(n)]
    cmd += ["--batch-size", str(batch_size)] if batch_size else []
    cmd += ["--measure-peak"] if measure_peak else []
    cmd += ["--profile"] if profile else []
    cmd += ["--launched", repr(launched)]
    if label:
        print(f"  {time.strftime('%H:%M:%S')} {label} ...", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"worker {method} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.time() - launched
    if label:
        print(f"  {label}: {result['wall_s']:.1f} s wall, {result.get('startup_s', 0):.1f} s of it imports", flush=True)
    return result


def agreement(compare_rows, baseline_rows) -> tuple[float, int, int]:
    ours = {(ti, term, first): (b, t) for ti, term, first, b, t in compare_rows}
    diffs, found = [], set()
    for ti, term, first, b, t in baseline_rows:
        key = (ti, term, first)
        if key in ours:
            found.add(key)
            diffs += [abs(ours[key][0] - b), abs(ours[key][1] - t)]
    missed = len(set(ours) - found)
    return (max(diffs) if diffs else float("nan")), len(found), missed


def param_counts(base_dir: Path) -> tuple[int, int, int]:
    """Non-embedding parameters (the matrices every token passes through), d_model and vocabulary."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(base_dir)
    per_layer = sum(k * n for k, n in projection_shapes(cfg).values())
    return cfg.num_hidden_layers * per_layer, cfg.hidden_size, cfg.vocab_size


def _warmup_texts(texts: list[str], terms: list[str]) -> list[str]:
    """The texts of a warm-up pass (every text here holds a term)."""
    return texts[:2]


def _texts_with_terms(texts: list[str], terms: list[str]) -> list[str]:
    """The texts in which some term occurs: the only ones a probe scores (it refuses a set without any)."""
    from specprobe.probe.occurrences import find_spans

    return [t for t in texts if any(find_spans(t, term) for term in terms)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--data", default=None, help="S-MedQA JSON (default: $SPECPROBE_SMEDQA or ../shared/data/...)")
    p.add_argument(
        "--n-texts",
        type=int,
        default=None,
        help="texts in the main run (scaling uses 1/4, 1/2, 1x); default 32, with --shape 8",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternating repeats of each method (median reported); default 5, with --shape 1 (timed runs of each)",
    )
    p.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default=None,
        help="run a real-size shape from its config (random bf16 weights, rank-16 LoRA on all projections): "
        "peak memory / weights, tokens/s, folded or unmerged tuned view; see bench/shapes.py",
    )
    p.add_argument(
        "--hidden", type=int, default=None, help="d_model (default 512; with --shape: the shape's, narrowed if given)"
    )
    p.add_argument(
        "--layers", type=int, default=None, help="layers (default 8; with --shape: the shape's, truncated if given)"
    )
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary (not with --shape: the shape's own)")
    p.add_argument("--lora-rank", type=int, default=16, help="with --shape: the LoRA's rank")
    p.add_argument(
        "--fold-check-layers",
        type=int,
        default=4,
        help="with --shape: the shape cut to this many layers, on which folding is compared with peft's merged "
        "model, the unmerged forward and float32 (0 skips it)",
    )
    p.add_argument(
        "--baseline",
        choices=["auto", "on", "off"],
        default="auto",
        help="with --shape: also run the plain two-copies method (auto: on CUDA only)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="compare's batch_size (default: compare's own default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both methods run there)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--patch-texts", type=int, default=4, help="texts for the activation-patching cost (0 skips it)")
    p.add_argument("--no-vocab-scaling", action="store_true", help="skip the 1x vs 8x vocabulary memory test")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one compare call (torch profiler and cProfile, after the timed runs): where the time goes",
    )
    p.add_argument(
        "--out", default=None, help="results JSON (default bench/results.json; with --shape out/bench-SHAPE.json)"
    )
    p.add_argument("--worker", choices=["compare", "baseline", "layers", "patching", "scaling"], help=argparse.SUPPRESS)
    p.add_argument("--launched", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--shape-worker", choices=["measure", "fold-check", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--measure-peak", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.shape_worker:
        real_shapes.worker(args.shape_worker, args.spec)
        return 0
    if args.worker:
        worker(args)
        return 0
    if args.shape:
        return real_shapes.run(args)
    args.n_texts = args.n_texts or 32
    args.repeats = args.repeats or 5
    args.hidden = args.hidden or 512
    args.layers = args.layers or 8
    args.out = args.out or str(HERE / "results.json")

    from bench.workload import CACHE, build_model, load_texts, workload_terms
    from specprobe.core.scoring import batch_rows
    from specprobe.terms.datasets import default_data_path
    from specprobe.utils.io import write_json

    data = Path(args.data) if args.data else default_data_path()
    texts = load_texts(data, args.n_texts)
    terms, terms_note = workload_terms(data, texts)
    base, adapter = build_model(texts, args.hidden, args.layers, args.vocab)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    where = {"device": args.device, "dtype": dtype}
    spec = CACHE / "spec.json"
    spec.write_text(json.dumps({"texts": texts, "terms": terms, "base": str(base), "adapter": str(adapter), **where}))
    print(
        f"workload: {len(texts)} S-MedQA texts; terms: {terms_note}; Llama {args.hidden}x{args.layers} vocab {args.vocab}, "
        f"{torch.get_num_threads()} threads, {args.device} {dtype}",
        flush=True,
    )

    nonembed, d, v = param_counts(base)
    runs = {"compare": [], "baseline": []}
    for r in range(args.repeats):  # alternate the methods
        for method in ("compare", "baseline"):
            runs[method].append(run_worker(method, spec, len(texts), args.batch_size, measure_peak=method == "compare"))
            last = runs[method][-1]
            print(
                f"  repeat {r + 1} {method}: {last['seconds']:.2f} s ({last['wall_s']:.1f} s wall, "
                f"{last.get('startup_s', 0):.1f} s of it imports)",
                flush=True,
            )
    med = {m: statistics.median(x["seconds"] for x in runs[m]) for m in runs}
    mem = {m: statistics.median(x["peak"] - x["after_import"] for x in runs[m]) for m in runs}
    c0 = runs["compare"][0]
    max_diff, n_matched, n_missed = agreement(c0["rows"], runs["baseline"][0]["rows"])

    # useful FLOPs: both models, 2 x non-embedding params per token up to each text's last scored
    # token, plus the unembedding at scored positions only
    useful = 2 * (2 * nonembed * c0["useful_tokens"] + 2 * d * v * c0["scored_tokens"])
    fractions = [useful / x["seconds"] / x["mix_peak"] for x in runs["compare"]]
    fractions_best = [useful / x["seconds"] / x["best_shape_rate"] for x in runs["compare"]]
    peak = statistics.median(x["mix_peak"] for x in runs["compare"])

    results = {
        "machine": {
            "threads": torch.get_num_threads(),
            "device": args.device,
            "dtype": dtype,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
        "workload": {
            "n_texts": len(texts),
            "n_terms": len(terms),
            "terms": terms_note,
            "hidden": args.hidden,
            "layers": args.layers,
            "vocab": args.vocab,
            "nonembedding_params": nonembed,
            "batch_size": batch_rows(torch.device(args.device), args.batch_size),  # the rows compare ran with
            "lora_forward": c0["lora_forward"],
        },
        "seconds": {m: [x["seconds"] for x in runs[m]] for m in runs},
        "worker_wall_s": {m: [x["wall_s"] for x in runs[m]] for m in runs},
        "worker_startup_s": {m: [x.get("startup_s") for x in runs[m]] for m in runs},
        "texts_per_s": {m: len(texts) / med[m] for m in med},
        "scored_tokens_per_s_compare": c0["scored_tokens"] / med["compare"],
        "speedup": med["baseline"] / med["compare"],
        "peak_minus_import_bytes": mem,
        "memory_ratio": mem["compare"] / mem["baseline"],
        "useful_flops": useful,
        "useful_flops_per_s": useful / med["compare"],
        "matmul_mix_peak_flops": [x["mix_peak"] for x in runs["compare"]],
        "matmul_best_shape_flops": [x["best_shape_rate"] for x in runs["compare"]],
        "fraction_of_peak": statistics.median(fractions),
        "fraction_of_peak_per_repeat": fractions,
        "fraction_of_best_shape_rate": statistics.median(fractions_best),
        "agreement": {"max_abs_diff": max_diff, "matched": n_matched, "missed_by_baseline": n_missed},
        "complete": False,  # until the parts below are in: a run stopped after the repeats keeps these
    }
    write_json(args.out, results)
    print(f"  {time.strftime('%H:%M:%S')} repeats done; wrote {args.out} (the parts below are added as they finish)")
    lens = run_worker("layers", spec, len(texts), args.batch_size, label="logit lens")
    lens_cost = {
        "seconds": lens["seconds"],
        "n_layers": lens["n_layers"],
        "relative_to_compare": lens["seconds"] / med["compare"],
        "peak_minus_import_bytes": lens["peak"] - lens["after_import"],
    }
    results["logit_lens"] = lens_cost
    write_json(args.out, results)
    patch_cost = None
    if args.patch_texts:
        pr = run_worker("patching", spec, args.patch_texts, args.batch_size, label="patching")
        per_text = med["compare"] / len(texts)
        patch_cost = {
            "n_texts": args.patch_texts,
            "seconds": pr["seconds"],
            "rows": pr["n_rows"],
            "n_layers": pr["n_layers"],
            "relative_to_compare_per_text": pr["seconds"] / args.patch_texts / per_text,
            "peak_minus_import_bytes": pr["peak"] - pr["after_import"],
        }
    results["patching"] = patch_cost
    write_json(args.out, results)

    scaled = run_worker("scaling", spec, len(texts), args.batch_size, label="scaling", profile=args.profile)
    scaling = results["scaling"] = scaled["scaling"]
    results["checkpointed"] = scaled.get("checkpointed")
    results["profile"] = scaled.get("profile")
    write_json(args.out, results)

    vocab_mem = []
    if not args.no_vocab_scaling:
        for mult in (1, 8):
            b2, a2 = build_model(texts, 128, 2, args.vocab * mult)
            s2 = CACHE / f"spec-v{mult}.json"
            s2.write_text(
                json.dumps({"texts": texts[:8], "terms": terms, "base": str(b2), "adapter": str(a2), **where})
            )
            weights = sum(f.stat().st_size for f in b2.glob("*.safetensors"))
            row = {"vocab": args.vocab * mult, "weights_bytes": weights}
            for method in ("compare", "baseline"):
                res = run_worker(method, s2, 8, args.batch_size, label=f"vocab {args.vocab * mult} {method}")
                row[f"{method}_peak_minus_import"] = res["peak"] - res["after_import"]
            vocab_mem.append(row)
    results["vocab_memory"] = vocab_mem
    results["complete"] = True

    write_json(args.out, results)
    print("\n| metric | compare | baseline | ratio |\n|---|---|---|---|")
    print(
        f"| texts/s | {results['texts_per_s']['compare']:.2f} | {results['texts_per_s']['baseline']:.2f} | {results['speedup']:.2f}x |"
    )
    mem_label = "GPU memory allocated" if args.device.startswith("cuda") else "memory - after import"
    print(
        f"| peak {mem_label} (MB) | {mem['compare'] / 2**20:.0f} | {mem['baseline'] / 2**20:.0f} | {results['memory_ratio']:.2f} |"
    )
    print(
        f"\nscored tokens/s (compare): {results['scored_tokens_per_s_compare']:.0f}; tuned view's LoRA: {c0['lora_forward']}"
    )
    print(
        f"matmul rate for the model's own shapes {peak / 1e9:.1f} GFLOP/s (median; measured in each compare process right "
        f"after its timed run); compare's useful throughput {useful / med['compare'] / 1e9:.1f} GFLOP/s; "
        f"fraction of that rate {100 * results['fraction_of_peak']:.0f}% (median of per-repeat "
        f"{', '.join(f'{100 * f:.0f}%' for f in fractions)}); of the best single shape's rate "
        f"{100 * results['fraction_of_best_shape_rate']:.0f}%"
    )
    print(
        f"agreement: max |logp diff| {max_diff:.2e} over {n_matched} occurrences; "
        f"{n_missed} occurrences found by compare are missed by the re-tokenizing search"
    )
    print(
        f"logit lens over all {lens_cost['n_layers']} layers (one pass per model): {lens_cost['seconds']:.2f} s = "
        f"{lens_cost['relative_to_compare']:.2f} x compare's time"
    )
    if patch_cost:
        print(
            f"activation patching ({patch_cost['n_layers']} layers x attn/mlp/layer + all, both directions) on "
            f"{patch_cost['n_texts']} texts: {patch_cost['seconds']:.2f} s = {patch_cost['relative_to_compare_per_text']:.1f} x "
            f"compare's time per text; peak-import {patch_cost['peak_minus_import_bytes'] / 2**20:.0f} MB"
        )
    print("scaling (compare): " + ", ".join(f"{s['n_texts']} texts {s['seconds']:.2f} s" for s in scaling))
    if cp := results["checkpointed"]:
        print(
            "checkpointed compare (as specprobe compare runs it, every finished batch kept for a resume): "
            f"{cp['seconds']:.2f} s = {cp['seconds'] / cp['plain_seconds']:.2f} x a plain call's {cp['plain_seconds']:.2f} s"
        )
    if results["profile"]:
        from bench import hotspots

        print("\n".join(hotspots.summary_lines(results["profile"])))
    for row in vocab_mem:
        print(
            f"vocab {row['vocab']}: weights {row['weights_bytes'] / 2**20:.0f} MB; peak-import compare "
            f"{row['compare_peak_minus_import'] / 2**20:.0f} MB, baseline {row['baseline_peak_minus_import'] / 2**20:.0f} MB"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
