"""`specprobe finetune` and `specprobe evaluate` (heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS
from specprobe.utils.argtypes import add_mapping_argument, non_negative_int, positive_int


def register(subparsers) -> None:
    _register_finetune(subparsers)
    _register_evaluate(subparsers)


def _register_finetune(subparsers) -> None:
    """`specprobe finetune`: a training option left unset (None) keeps its `TrainOptions` default."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a LoRA adapter on one specialty's questions (resumable)",
        description="Supervised LoRA fine-tuning on the multiple-choice questions of one specialty (or several, or "
        "all), loss on the answer tokens only. Re-run the same command to resume after an interruption. "
        "Works under `accelerate launch` for several GPUs.",
    )
    p.add_argument("--base", required=True, help="base model: hub id or local directory")
    p.add_argument("--data", required=True, help="QA file (S-MedQA JSON, MedQA, MedMCQA, instruction; --mapping)")
    add_mapping_argument(p, "; recorded in the manifest and the run's identity")
    p.add_argument(
        "--specialty",
        action="append",
        default=None,
        help="specialty to train on; repeat or comma-separate for several; 'all' (default) for every question",
    )
    p.add_argument("--out", required=True, help="output adapter directory")
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    p.add_argument("--revision", default=None, help="base model revision (hub)")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="run the model repository's own Python code (hub models)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_training_options(p)
    p.set_defaults(handler=run_finetune)


def _add_training_options(p) -> None:
    """The `finetune` parser's "training options" group (each defaults to None: the `TrainOptions` default)."""
    g = p.add_argument_group("training options")
    g.add_argument("--max-steps", type=positive_int, default=None, help="optimizer steps (overrides --epochs)")
    g.add_argument("--epochs", type=positive_int, default=None, help="epochs (default 3)")
    g.add_argument(
        "--batch-size", type=positive_int, default=None, help="examples per process per micro-batch (default 4)"
    )
    g.add_argument("--grad-accum", type=positive_int, default=None, help="micro-batches per optimizer step (default 1)")
    g.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=None, help="default 2e-4")
    g.add_argument("--scheduler", choices=("linear", "cosine", "constant"), default=None, help="default cosine")
    g.add_argument("--warmup-ratio", type=float, default=None, help="default 0.03")
    g.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0)")
    g.add_argument("--max-grad-norm", type=float, default=None, help="default 1.0 (0 disables clipping)")
    g.add_argument("--rank", type=positive_int, default=None, help="LoRA rank (default 8)")
    g.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 16)")
    g.add_argument("--dropout", type=float, default=None, help="LoRA dropout (default 0.05)")
    g.add_argument(
        "--target-modules",
        default=None,
        help="comma-separated module names (default: every linear layer in the decoder layers)",
    )
    g.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="max tokens per example (default: 1024, or the model's context if shorter; more than the "
        "context is an error)",
    )
    g.add_argument("--seed", type=non_negative_int, default=None, help="default 0")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=None,
        help="auto: bf16 (fp16) on GPU, fp32 on CPU; bf16 also runs on a CPU, fp16 needs a GPU",
    )
    g.add_argument("--load-in-4bit", action="store_true", default=None, help="QLoRA (needs CUDA and bitsandbytes)")
    g.add_argument(
        "--gradient-checkpointing", action="store_true", default=None, help="recompute activations: less memory, slower"
    )
    g.add_argument("--template", default=None, help="prompt template with {question} and {options}")
    g.add_argument("--option-format", default=None, help="option line format with {letter} and {option}")
    g.add_argument(
        "--continuation",
        choices=("letter", "text"),
        default=None,
        help="answer continuation: ' A' (letter, default) or ' <option text>'",
    )
    g.add_argument(
        "--no-eos", dest="append_eos", action="store_false", default=None, help="do not train an EOS after the answer"
    )
    g.add_argument("--save-every", type=positive_int, default=None, help="checkpoint every N steps (default 50)")
    g.add_argument(
        "--save-steps",
        default=None,
        help="keep the adapter after these optimizer steps, e.g. 0,10,20,40 (0: before training), as PEFT "
        "folders OUT/snapshots/step-N listed in the manifest, for `specprobe analyze trajectory`",
    )
    g.add_argument(
        "--report-to",
        choices=("none", "tensorboard", "wandb", "mlflow"),
        default=None,
        help="log loss, learning rate, grad norm and tokens/s to this tracker, in OUT/logs (default none; "
        "needs the extra of the same name: pip install 'specprobe[tensorboard]')",
    )


def _register_evaluate(subparsers) -> None:
    e = subparsers.add_parser(
        "evaluate",
        help="multiple-choice accuracy per specialty (base and adapter), or the adapter x specialty matrix",
        description="Multiple-choice accuracy by log-likelihood of each option given the prompt (summed: acc; per "
        "character: acc_norm), per specialty with Wilson 95% intervals. With --matrix: every adapter "
        "and the base on every specialty.",
    )
    e.add_argument("--model", default=None, help="base model: hub id or local directory (not with --from-lm-eval)")
    e.add_argument(
        "--from-lm-eval",
        metavar="[NAME=]SAMPLES.jsonl|DIR",
        action="append",
        default=None,
        help="read option log-likelihoods from lm-evaluation-harness --log_samples output instead of running a "
        "model: its samples_<task>_<date>.jsonl, or a folder (its --output_path) holding exactly one "
        "(repeat for several models; with --matrix a NAME equal to a specialty, in any case, counts as trained on it, "
        "'base' is the base)",
    )
    e.add_argument(
        "--lm-eval-out",
        metavar="DIR",
        default=None,
        help="also write lm-eval's results.json and samples jsonl per model into DIR/<model>/",
    )
    e.add_argument(
        "--adapter",
        action="append",
        default=None,
        help="adapter directory (with --matrix: repeat, or give a folder of adapter directories)",
    )
    e.add_argument("--data", required=True, help="QA file (S-MedQA JSON, MedQA, MedMCQA, instruction; --mapping)")
    add_mapping_argument(e, "; recorded in the result")
    e.add_argument("--out", required=True, help="result file (.json, .json.gz or .parquet)")
    e.add_argument("--matrix", action="store_true", help="evaluate every adapter and the base on every specialty")
    e.add_argument(
        "--specialty", action="append", default=None, help="restrict to these specialties (repeat or comma-separate)"
    )
    e.add_argument(
        "--variant",
        choices=("base", "tuned"),
        action="append",
        default=None,
        help="score only this variant (default: base and tuned)",
    )
    _add_scoring_arguments(e)
    e.set_defaults(handler=run_evaluate)


def _add_scoring_arguments(e: argparse.ArgumentParser) -> None:
    """evaluate's options for scoring the answer options: prompt format, batch size, device, dtype, output."""
    e.add_argument(
        "--template",
        default=None,
        help="prompt template with {question} and {options} (default: the adapter's training format, else finetune's)",
    )
    e.add_argument(
        "--option-format",
        default=None,
        help="option line format with {letter} and {option} (default: as --template)",
    )
    e.add_argument(
        "--continuation",
        choices=("letter", "text"),
        default=None,
        help="what is scored after the prompt: ' A' (letter) or ' <option text>' (default: as --template)",
    )
    e.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"at most this many sequences per forward pass (default {DEFAULT_BATCH_ROWS['cpu']} on a CPU, "
        f"{DEFAULT_BATCH_ROWS['cuda']} on a GPU; the token budget binds too)",
    )
    e.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="max tokens per prompt+option (default: the model's context; more is an error)",
    )
    e.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, or shard (spread over all GPUs)")
    e.add_argument("--dtype", default=None, help="auto (default: fp32 on CPU, bf16/fp16 on GPU), fp32, bf16 or fp16")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")


_TRAIN_OPTS = (
    "max_steps",
    "epochs",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "scheduler",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "rank",
    "alpha",
    "dropout",
    "target_modules",
    "max_length",
    "seed",
    "precision",
    "load_in_4bit",
    "gradient_checkpointing",
    "template",
    "option_format",
    "continuation",
    "append_eos",
    "save_every",
    "report_to",
    "save_steps",
)


def run_finetune(args: argparse.Namespace) -> int:
    """Train; on SIGINT/SIGTERM print where it stopped (one line) and return 128 + the signal number."""
    from specprobe.core.models import refuse_adapter_as_model
    from specprobe.finetune.train_signals import TrainingInterrupted
    from specprobe.finetune.training import train
    from specprobe.utils.io import check_writable

    refuse_adapter_as_model(args.base, "--base")
    check_writable(args.out, "--out")  # before the model loads, not at the first write
    options = {k: getattr(args, k) for k in _TRAIN_OPTS if getattr(args, k) is not None}
    if options.get("max_grad_norm") == 0:
        options["max_grad_norm"] = None
    try:
        run = train(
            args.base,
            args.data,
            args.specialty,
            args.out,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
            mapping=args.mapping,
            **options,
        )
    except TrainingInterrupted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(str(stop), file=sys.stderr)
        return stop.exit_code
    m = run.manifest
    if int(os.environ.get("RANK", "0")) == 0:
        done = (
            f"returned the finished run in {run.path}, nothing trained" if run.reused else f"wrote adapter {run.path}"
        )
        print(f"{done}: {m.get('steps')} steps, final loss {m.get('final_loss'):.4f}, {m.get('wall_time_s', 0):.1f} s")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Under `accelerate launch`/`torchrun` the ranks share the scoring; rank 0 alone writes and prints."""
    from specprobe.core.distributed import init_from_env, is_main

    out = _check_evaluate_outputs(args)
    if args.from_lm_eval:
        return _evaluate_lm_eval(args, out)
    if not args.model:
        raise ValueError("--model is required (or --from-lm-eval SAMPLES.jsonl to read lm-eval's scores)")
    init_from_env(args.device)
    common = dict(
        specialty=args.specialty,
        template=args.template,
        option_format=args.option_format,
        continuation=args.continuation,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
        mapping=args.mapping,
    )
    if args.matrix:
        from specprobe.finetune.accuracy_matrix import expand_adapter_dirs, matrix

        adapters = expand_adapter_dirs(args.adapter or [])
        result = matrix(args.model, adapters, args.data, **common)
        if not is_main():
            return 0
        result.save(out)
        print(result.summary())
    else:
        from specprobe.finetune.evaluation import evaluate

        if args.adapter and len(args.adapter) > 1:
            raise ValueError("several --adapter values need --matrix")
        adapter = args.adapter[0] if args.adapter else None
        result = evaluate(args.model, args.data, adapter, variants=args.variant, **common)
        if not is_main():
            return 0
        result.save(out)
        print(result.table())
        if args.lm_eval_out:
            _write_lm_eval(result, Path(args.lm_eval_out), args.data, args.mapping)
    print(f"wrote {out}")
    return 0


RESULT_SUFFIXES = (".json", ".gz", ".parquet")


def _check_evaluate_outputs(args: argparse.Namespace) -> Path:
    """--out and --lm-eval-out, and the options that exclude each other, checked before any model loads:
    a folder, another format's suffix, a read-only place or an option that would be ignored is an error."""
    from specprobe.utils.io import check_writable

    out = Path(args.out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; --out names the result file (.json or .json.gz)")
    if not out.name.lower().endswith(RESULT_SUFFIXES):
        raise ValueError(f"--out {out}: the result is JSON (name it .json or .json.gz) or parquet (.parquet)")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    check_writable(out, "--out")
    if args.matrix and args.variant:
        raise ValueError("--variant scores one adapter's base or tuned side; --matrix scores them all (leave one out)")
    if args.lm_eval_out:
        if args.matrix:
            raise ValueError("--lm-eval-out writes one evaluation's lm-eval files; it does not go with --matrix")
        if Path(args.lm_eval_out).exists() and not Path(args.lm_eval_out).is_dir():
            raise NotADirectoryError(f"--lm-eval-out {args.lm_eval_out} is a file; it names a folder")
        check_writable(args.lm_eval_out, "--lm-eval-out")
    if not args.from_lm_eval:
        from specprobe.core.models import refuse_adapter_as_model

        if args.model is not None:
            refuse_adapter_as_model(args.model, "--model", "--adapter")
        if not args.adapter and args.matrix:  # a matrix of the base alone: --adapter forgotten
            raise ValueError("--matrix scores adapters beside the base: give --adapter (repeat, or a folder of them)")
        if not args.adapter and args.variant and "tuned" in args.variant:
            raise ValueError("--variant tuned scores an adapter: give it as --adapter")
    return out


def _evaluate_lm_eval(args: argparse.Namespace, out: Path) -> int:
    """`--from-lm-eval`: the same result as a model run, from lm-eval's per-sample log-likelihoods."""
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix
    from specprobe.finetune.lm_eval import from_lm_eval

    if args.model or args.adapter:
        raise ValueError("--from-lm-eval reads scores instead of running a model: leave out --model and --adapter")
    result = from_lm_eval(
        args.from_lm_eval, args.data, specialty=args.specialty, matrix=args.matrix, mapping=args.mapping
    )
    result.save(out)
    if isinstance(result, AccuracyMatrix):
        print(result.summary())
    else:
        print(result.table())
        if args.lm_eval_out:
            _write_lm_eval(result, Path(args.lm_eval_out), args.data, args.mapping)
    print(f"wrote {out}")
    return 0


def _write_lm_eval(result: Any, folder: Path, data: str, mapping: dict | None) -> None:
    """`--lm-eval-out DIR`: DIR/<model>/results.json and DIR/<model>/samples_specprobe_mc.jsonl per model."""
    from specprobe.finetune.lm_eval_export import TASK

    for model in dict.fromkeys(result.to_pandas()["model"]):
        result.to_lm_eval(folder / model / "results.json", model=model)
        result.to_lm_eval_samples(folder / model / f"samples_{TASK}.jsonl", model=model, data=data, mapping=mapping)
    print(f"wrote lm-eval files to {folder}")
