"""`specprobe analyze trajectory` and `specprobe analyze general-text`: the analyses that run models
(registered by `specprobe/probe/analyze_cli.py`, beside the analyses of saved results).

specprobe analyze trajectory --base B --adapter A --terms LEX [--data QA] --out DIR
specprobe analyze general-text --base B --adapter A [--texts FILE] [--comparison C.json.gz] --out DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS
from specprobe.utils.argtypes import add_mapping_argument, positive_int

Common = Callable[[argparse.ArgumentParser, tuple[str, ...]], None]


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="hub id or local directory of the base model")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"at most this many texts per forward pass (default {DEFAULT_BATCH_ROWS['cpu']} on a CPU, "
        f"{DEFAULT_BATCH_ROWS['cuda']} on a GPU; the token budget binds too)",
    )
    p.add_argument("--max-length", type=positive_int, default=None, help="context length (default: the model's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or shard (spread over all GPUs)")
    p.add_argument("--dtype", default="auto", help="auto (default: fp32 on CPU, bf16/fp16 on GPU), fp32, bf16 or fp16")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def trajectory_parser(analyses: argparse._SubParsersAction, common: Common, outputs: tuple[str, ...]) -> None:
    p = analyses.add_parser(
        "trajectory",
        help="term deltas per specialty over training steps (the adapter's snapshots), and when the own "
        "specialty pulls ahead",
        description="Compare every snapshot of an adapter (`specprobe finetune --save-steps`) and its final "
        "adapter with the one loaded base: per-specialty deltas and the gap over control words per step, and "
        "the first step from which the own specialty's delta exceeds the others' (Holm-adjusted), or never.",
    )
    _model_arguments(p)
    p.add_argument("--adapter", required=True, help="adapter directory whose manifest.json lists snapshots")
    p.add_argument("--terms", required=True, help="lexicon JSON, JSON mapping term -> specialties, or a term list")
    p.add_argument("--data", help="QA file whose questions are the contexts; default: the lexicon's own")
    add_mapping_argument(p, " (for --data)")
    p.add_argument("--controls", default="auto", help="'auto', 'none', or a file with one word per line")
    p.add_argument(
        "--long-texts",
        choices=["window", "error"],
        default="window",
        help="a text longer than the context: score it in sliding windows (default) or stop with an error",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N texts")
    p.add_argument("--specialty", default=None, help="the adapter's own specialty (default: from its manifest)")
    p.add_argument("--force-adapter", action="store_true", help="load adapters recorded for another architecture")
    common(p, outputs)
    p.set_defaults(handler=run_trajectory, outputs=outputs)


def general_text_parser(analyses: argparse._SubParsersAction, common: Common, outputs: tuple[str, ...]) -> None:
    p = analyses.add_parser(
        "general-text",
        help="delta per token of general-English text (a domain shift makes it less likely)",
        description="Score whole general-English texts (default: WordNet glosses shipped with specprobe) under "
        "base and tuned; the delta per token with a text-resampling CI, beside a comparison's control words.",
    )
    _model_arguments(p)
    p.add_argument("--adapter", required=True, help="PEFT adapter directory (or a full fine-tuned model)")
    p.add_argument("--texts", default=None, help="a .jsonl file of {id, text} or a text file, one text a line")
    p.add_argument("--comparison", default=None, help="comparison.json.gz to show the row beside its control words")
    common(p, outputs)
    p.set_defaults(handler=run_general_text, outputs=outputs)


def run_trajectory(args: argparse.Namespace) -> int:
    """`specprobe analyze trajectory`: score every snapshot of an adapter; its inputs are checked before any model
    loads. Under `accelerate launch`/`torchrun` the ranks share the scoring; rank 0 alone writes and prints."""
    from specprobe.core.distributed import init_from_env, is_main
    from specprobe.probe.analyses.trajectory import trajectory
    from specprobe.probe.cli import read_terms_and_texts
    from specprobe.probe.options import ProbeOptions, check_out_dir
    from specprobe.utils.io import atomic_write_text

    out = check_out_dir(args.out, args.outputs, args.overwrite)
    opts = ProbeOptions.from_args(args)
    terms, texts = read_terms_and_texts(args)
    _check_own_specialty(args.specialty, terms)  # before any model loads
    init_from_env(opts.device)
    result = trajectory(
        args.base, Path(args.adapter), terms, texts, specialty=args.specialty, force_adapter=args.force_adapter,
        options=opts,
    )  # fmt: skip
    if not is_main():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "trajectory.json.gz")
    atomic_write_text(out / "trajectory_curves.csv", result.curves().to_csv(index=False))
    atomic_write_text(out / "trajectory_gap.csv", result.gap().to_csv(index=False))
    atomic_write_text(out / "trajectory_own_advantage.csv", result.own_advantage().to_csv(index=False))
    if args.report:
        result.report(out / "trajectory.html")
    print(result.summary())
    return 0


def _check_own_specialty(specialty: str | None, terms: Any) -> None:
    """--specialty that no term has: the own-specialty advantage would be empty at every step (and the run
    exit 0 with a table of blanks), so a misspelt name is an error naming it and the terms' specialties."""
    from specprobe.probe.inputs import normalize_terms

    if specialty is None or specialty.strip().lower() in ("", "all"):
        return
    known = sorted({s for specs in normalize_terms(terms).values() for s in specs})
    if specialty.strip().lower() not in {s.lower() for s in known}:
        raise ValueError(
            f"--specialty {specialty!r}: no term has this specialty, so its advantage over the others cannot be "
            f"measured; the terms' specialties: {', '.join(known) or 'none'}"
        )


def run_general_text(args: argparse.Namespace) -> int:
    """`specprobe analyze general-text`: score general-English texts under base and adapter. Under `accelerate
    launch`/`torchrun` the ranks share the scoring; rank 0 alone writes and prints."""
    from specprobe.core.distributed import init_from_env, is_main
    from specprobe.core.models import adapter_weights_sha256
    from specprobe.probe.analyses.general_text import general_text_control, with_general_text
    from specprobe.probe.analyses.model_files import read_general_texts
    from specprobe.probe.comparison import Comparison
    from specprobe.probe.options import check_out_dir
    from specprobe.utils.io import atomic_write_text

    out = check_out_dir(args.out, args.outputs, args.overwrite)
    texts = read_general_texts(args.texts, "--texts") if args.texts else None
    comp = Comparison.load(args.comparison) if args.comparison else None  # before any model loads
    _check_comparison(comp, args, {"adapter_sha256": adapter_weights_sha256(args.adapter)})
    init_from_env(args.device)
    result = general_text_control(
        args.base, texts, tuned=args.adapter, max_length=args.max_length, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, progress=not args.no_progress,
    )  # fmt: skip
    if not is_main():
        return 0
    _check_comparison(comp, args, result.metadata)
    table = with_general_text(comp.by_specialty(), result) if isinstance(comp, Comparison) else None
    if table is not None:  # kept with the result: its report shows the row beside the control words
        result.extras["beside_controls"] = table.to_dict(orient="records")
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "general_text.json.gz")
    frame = table if table is not None else result.to_pandas()
    atomic_write_text(out / "general_text.csv", frame.to_csv(index=False))
    if args.report:
        result.report(out / "general_text.html")
    print(result.summary())
    return 0


def _check_comparison(comp: Any, args: argparse.Namespace, scored: Mapping) -> None:
    """--comparison must be of the base and adapter scored here: its control words stand beside their row."""
    from specprobe.probe.identity import check_same_weights

    if comp is not None:
        check_same_weights(comp.metadata, scored, f"--comparison {args.comparison}", "--base and --adapter here")
