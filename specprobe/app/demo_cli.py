"""`specprobe demo` (the whole study, offline, on the built-in default) and `specprobe run experiment.toml`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from specprobe.app.config import REUSABLE_STAGES
from specprobe.utils.argtypes import add_mapping_argument
from specprobe.utils.pvalues import holm

if TYPE_CHECKING:
    import pandas as pd

    from specprobe.app.experiment_result import ExperimentResult


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo`, `run` and `stages` subcommands."""
    _register_demo(sub)
    _register_run(sub)
    _register_stages(sub)


def _register_demo(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="run the whole study offline on the built-in model and questions, write an HTML report",
        description="Fine-tune one LoRA adapter per specialty of the built-in (or given) questions, "
        "measure accuracy and term log-probabilities, run the analyses (seen vs unseen terms, accuracy link, "
        "trajectory over adapter snapshots, general-text control), and write a report.",
    )
    d.add_argument("--data", default="", help="a QA file (S-MedQA JSON) instead of the built-in questions")
    add_mapping_argument(d, " (with --data)")
    d.add_argument("--base", default="", help="a base model (hub id or directory) instead of the built-in one")
    d.add_argument("--out", default="specprobe-demo", help="output folder (reruns skip finished stages)")
    d.add_argument(
        "--specialties", nargs="+", default=None, metavar="SPECIALTY", help="specialties to fine-tune on (default: all)"
    )
    d.add_argument("--max-steps", type=positive_int, default=None, help="training steps per adapter")
    d.add_argument(
        "--max-texts",
        type=positive_int,
        default=None,
        help="cap on the test questions that compare, layers and trajectory score (accuracy scores all)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(handler=run_demo)


def _register_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run an experiment described by a TOML file (cached, resumable stages)")
    r.add_argument(
        "config",
        help="experiment.toml (keys: base, data, mapping, out, specialties, include_all, test_fraction, seed, "
        "train, compare, max_texts, layers, analyses, trajectory_adapters, reuse_older, resources). analyses: a "
        "list of seen_unseen, accuracy_link, trajectory, general_text (default: all; trajectory only with "
        "train.save_steps); trajectory_adapters: the adapters a trajectory is computed for (default: all)",
    )
    r.add_argument(
        "--reuse-older",
        type=stage_kinds,
        default=None,
        metavar="STAGE[,STAGE...]",
        help="reuse the finished stages of these kinds (of: " + ", ".join(REUSABLE_STAGES) + ") that another "
        "specprobe version or other code wrote with the same inputs, instead of redoing them (e.g. adapter "
        "after an upgrade); overrides the config's reuse_older; each reuse is printed",
    )
    add_mapping_argument(r, "; for the config's data file, in place of its mapping key (a table there)")
    r.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: every stage in this process, one after another (default); ray: every stage as a Ray task "
        "with the resources of the [resources] table (needs pip install 'specprobe[ray]' and an output folder "
        "on a filesystem all nodes share)",
    )
    r.add_argument(
        "--address",
        default=None,
        help="the Ray cluster to run on: auto (the one started with `ray start` on this machine) or HOST:PORT; "
        "default: start Ray on this machine for the run",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(handler=run_toml)


def _register_stages(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser(
        "stages",
        help="list an experiment folder's stages (done, unfinished or damaged; seconds; the version that wrote "
        "each) and whether a run holds it; runs nothing",
    )
    st.add_argument("out", help="the experiment's output folder (its `out` key)")
    st.add_argument("--json", action="store_true", help="print the table as JSON records")
    st.set_defaults(handler=show_stages, prints_result=True)


def show_stages(args: argparse.Namespace) -> int:
    """`specprobe stages OUT [--json]`: the stage table (`stage_status.stage_table`) and a summary."""
    from specprobe.app.stage_status import holder_line, stage_table, summary_line

    table = stage_table(args.out)
    if args.json:
        print(table.to_json(orient="records", indent=1))
        return 0
    shown = table.drop(columns=["problem"]).assign(seconds=table["seconds"].round(1))
    print(shown.to_string(index=False, na_rep="-") if len(table) else "(no stages yet)")
    for problem in table.loc[table["status"] == "damaged", "problem"].tolist():
        print(f"damaged: {problem}")
    print(summary_line(table))
    print(holder_line(args.out))
    return 0


def stage_kinds(text: str) -> list[str]:
    """--reuse-older's value: comma-separated kinds of stage, each one of `REUSABLE_STAGES`."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in REUSABLE_STAGES]
    if unknown or not kinds:
        what = f"unknown stage kind {unknown[0]!r}" if unknown else "no stage kind given"
        raise argparse.ArgumentTypeError(f"{what}; choose from {', '.join(REUSABLE_STAGES)}")
    return kinds


def run_and_finish(cfg: Any, started: float, **run_options: Any) -> int:
    """`run_experiment`, then the report and findings (`_finish`), under one hold of the output folder's
    lock: released in between, another run could write its results into the folder before this run's
    report, which then described the other run's data."""
    from specprobe.app.experiment import run_experiment
    from specprobe.utils.locks import output_lock

    with output_lock(Path(cfg.resolved().out).expanduser().resolve()):
        return _finish(run_experiment(cfg, **run_options), started)


def _finish(result: ExperimentResult, started: float) -> int:
    """Write the report and print the two findings."""
    from specprobe.finetune.accuracy_matrix import contrast_line

    path = result.report()
    acc = result.accuracy
    matrix = result.compare_matrix
    print("\nAccuracy (rows: fine-tuned on; columns: tested on):")
    print(acc.table("acc").to_string(float_format=lambda v: f"{v:.2f}"))
    c = acc.contrast().attrs
    if c.get("n_specialties") and "mean_diff" in c:
        print(contrast_line(c))
    if not matrix.empty:
        wide = matrix.pivot_table(index="finetune_specialty", columns="specialty", values="mean_delta_per_token")
        print(
            "\nMean delta log-prob per token (rows: fine-tuned on; columns: term specialty; 'control' = ordinary words):"
        )
        print(wide.to_string(float_format=lambda v: f"{v:+.3f}"))
        print(shift_line(matrix))
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    print(f"report: {path}")
    return 0


def shift_line(matrix: pd.DataFrame) -> str:
    """The terms-vs-control summary of a compare matrix (one `by_specialty` table per adapter), counted as the
    report's finding counts it: Holm across every tested (adapter, specialty) cell, not within each adapter."""
    terms = matrix[matrix["specialty"] != "control"]
    control = matrix[matrix["specialty"] == "control"]
    tested = cast("pd.DataFrame", terms[cast("pd.Series", terms["p_value"]).notna()])
    rose = int(((tested["minus_control"] > 0) & (holm(tested["p_value"]) < 0.05)).sum())
    untested = f", {len(terms) - len(tested)} untested" if len(terms) > len(tested) else ""
    return (
        f"\nclinical terms: mean delta/token {terms['mean_delta_per_token'].mean():+.3f} over "
        f"{len(terms)} (adapter, specialty) cells; control words {control['mean_delta_per_token'].mean():+.3f}; "
        f"terms rose above control words (texts and words random, Holm across cells, p < 0.05) in "
        f"{rose}/{len(tested)} tested cells{untested}"
    )


def run_demo(args: argparse.Namespace) -> int:
    """`specprobe demo`: the study on the built-in (or given) model and questions."""
    from specprobe.app.config import demo_save_steps
    from specprobe.app.experiment import ExperimentConfig

    refuse_launcher("demo")
    started = time.perf_counter()
    if args.mapping and not args.data:  # the built-in questions are S-MedQA JSON
        raise ValueError("--mapping says how to read --data; give --data, or leave --mapping out")
    cfg = ExperimentConfig(
        base=args.base,
        data=args.data,
        out=args.out,
        specialties=args.specialties or None,
        max_texts=args.max_texts,
        mapping=args.mapping,
    )
    if args.max_steps is not None:
        cfg.train = {**cfg.train, "max_steps": args.max_steps}
    cfg.train = {**cfg.train, "save_steps": demo_save_steps(cfg.train["max_steps"])}  # for the trajectory
    return run_and_finish(cfg, started, progress=not args.no_progress)


def refuse_launcher(command: str) -> None:
    """Refuse a data-parallel launch (torchrun, accelerate launch: WORLD_SIZE > 1) of `run` or `demo`: every
    process would run the whole study on the same folder, and all but one fail on its lock."""
    size = os.environ.get("WORLD_SIZE", "1")
    if size.isdigit() and int(size) > 1:
        raise ValueError(
            f"specprobe {command} runs as one process, not under torchrun or accelerate launch (WORLD_SIZE={size}); "
            "start it directly: --executor ray spreads its stages over GPUs and nodes"
        )


def run_toml(args: argparse.Namespace) -> int:
    """`specprobe run experiment.toml [--executor local|ray] [--address auto|HOST:PORT]`."""
    from specprobe.app.executors import make_executor
    from specprobe.app.experiment import ExperimentConfig

    refuse_launcher("run")
    started = time.perf_counter()
    cfg = ExperimentConfig.from_toml(args.config)
    if args.reuse_older is not None:
        cfg.reuse_older = list(args.reuse_older)
    if args.mapping is not None:
        cfg.mapping = args.mapping
    executor = make_executor(args.executor, address=args.address, resources=cfg.resources)
    return run_and_finish(cfg, started, progress=not args.no_progress, executor=executor)
