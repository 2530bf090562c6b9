"""`specprobe analyze`: analyses of saved results, without a model.

specprobe analyze seen-unseen --comparison C.json.gz --adapter A --out DIR [--train-data D [--mapping M]]
specprobe analyze accuracy-link --evaluation E.json --comparison [NAME=]C.json.gz ... --out DIR
specprobe analyze trajectory --base B --adapter A --terms LEX [--data QA] --out DIR   (runs the models)
specprobe analyze general-text --base B --adapter A [--texts FILE] --out DIR          (runs the models)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specprobe.utils.argtypes import add_mapping_argument

SEEN_UNSEEN_OUTPUTS = (
    "seen_unseen.json.gz",
    "seen_unseen_groups.csv",
    "seen_unseen_tests.csv",
    "seen_unseen_by_specialty.csv",
    "seen_unseen.html",
)
ACCURACY_LINK_OUTPUTS = ("accuracy_link.json.gz", "accuracy_link_correlations.csv", "accuracy_link.html")
TRAJECTORY_OUTPUTS = (
    "trajectory.json.gz",
    "trajectory_curves.csv",
    "trajectory_gap.csv",
    "trajectory_own_advantage.csv",
    "trajectory.html",
)
GENERAL_TEXT_OUTPUTS = ("general_text.json.gz", "general_text.csv", "general_text.html")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyses of saved results: seen vs unseen training terms, term change vs accuracy change",
        description="Analyses of saved comparisons and evaluations; no model is loaded.",
    )
    analyses = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    _seen_unseen_parser(analyses)
    _accuracy_link_parser(analyses)
    from specprobe.probe.analyses.model_cli import general_text_parser, trajectory_parser

    trajectory_parser(analyses, _common, TRAJECTORY_OUTPUTS)
    general_text_parser(analyses, _common, GENERAL_TEXT_OUTPUTS)


def _common(p: argparse.ArgumentParser, outputs: tuple[str, ...]) -> None:
    p.add_argument("--out", required=True, help=f"output directory ({', '.join(outputs[:2])}, ...)")
    p.add_argument("--report", action="store_true", help="also write an HTML report")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _seen_unseen_parser(analyses: argparse._SubParsersAction) -> None:
    p = analyses.add_parser(
        "seen-unseen",
        help="delta of terms seen in the adapter's training questions vs unseen ones (same / other specialty)",
        description="Split a comparison's terms by what the adapter saw in training (read from its manifest.json "
        "and checked by sha256) and compare the groups' deltas, with text-clustered CIs and paired tests.",
    )
    p.add_argument("--comparison", required=True, help="comparison.json.gz written by `specprobe compare`")
    p.add_argument("--adapter", required=True, help="the adapter directory (with the manifest.json of its training)")
    p.add_argument(
        "--train-data",
        default=None,
        help="the training QA file, if the manifest's path is not valid here (its sha256 must match) "
        "or the adapter has no manifest",
    )
    add_mapping_argument(p, "; for --train-data (default: the mapping the manifest records with its data)")
    p.add_argument("--specialty", default=None, help="what an adapter without a manifest was trained on")
    p.add_argument("--name", default=None, help="label of the adapter (default: its training specialties)")
    _common(p, SEEN_UNSEEN_OUTPUTS)
    p.set_defaults(handler=run_seen_unseen)


def _accuracy_link_parser(analyses: argparse._SubParsersAction) -> None:
    p = analyses.add_parser(
        "accuracy-link",
        help="rank correlation of per-question term deltas with accuracy and margin changes",
        description="Per (adapter, question): accuracy change and log-likelihood margin change against the "
        "mean term delta; Spearman's rho with a bootstrap CI and a within-specialty permutation test.",
    )
    p.add_argument(
        "--evaluation",
        required=True,
        help="an evaluation file of base and tuned (`specprobe evaluate`) or an accuracy matrix (--matrix)",
    )
    p.add_argument(
        "--comparison",
        required=True,
        action="append",
        help="comparison.json.gz of the adapter; NAME=PATH names the evaluation's model it belongs to "
        "(repeat for several adapters of an accuracy matrix)",
    )
    p.add_argument("--tuned", default=None, help="the evaluation's label of the adapter (one --comparison PATH)")
    p.add_argument(
        "--metric",
        choices=["delta_per_token", "delta"],
        default="delta_per_token",
        help="a term's change: tuned - base log-probability per token (default) or summed over its tokens",
    )
    p.add_argument("--norm", action="store_true", help="use acc_norm and per-character margins")
    _common(p, ACCURACY_LINK_OUTPUTS)
    p.set_defaults(handler=run_accuracy_link)


def _out(args: argparse.Namespace, outputs: tuple[str, ...]) -> Path:
    from specprobe.probe.options import check_out_dir

    return check_out_dir(args.out, outputs, args.overwrite)


def run_seen_unseen(args: argparse.Namespace) -> int:
    from specprobe.probe.analyses import seen_unseen
    from specprobe.probe.training_data import require_qa_file
    from specprobe.utils.io import atomic_write_text

    out = _out(args, SEEN_UNSEEN_OUTPUTS)
    if args.train_data is not None:  # named as the option, before the comparison and adapter are read
        require_qa_file(args.train_data, "--train-data")
    result = seen_unseen(
        Path(args.comparison),
        args.adapter,
        args.train_data,
        specialty=args.specialty,
        name=args.name,
        mapping=args.mapping,
    )
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "seen_unseen.json.gz")
    atomic_write_text(out / "seen_unseen_groups.csv", result.groups().to_csv(index=False))
    atomic_write_text(out / "seen_unseen_tests.csv", result.tests().to_csv(index=False))
    atomic_write_text(out / "seen_unseen_by_specialty.csv", result.by_specialty().to_csv(index=False))
    if args.report:
        result.report(out / "seen_unseen.html")
    print(result.summary())
    return 0


def _comparisons(values: list[str]) -> Path | dict[str, Path]:
    """One PATH, or {NAME: PATH} from NAME=PATH values (every value named then)."""
    named = [v.split("=", 1) for v in values if "=" in v and not Path(v).exists()]
    if not named:
        if len(values) > 1:
            raise ValueError(
                "several --comparison values need names: --comparison NAME=PATH (NAME: the evaluation's model)"
            )
        return Path(values[0])
    if len(named) != len(values):
        raise ValueError("--comparison: name every value (NAME=PATH) or give one PATH")
    return {name: Path(path) for name, path in named}


def run_accuracy_link(args: argparse.Namespace) -> int:
    from specprobe.probe.analyses import accuracy_link
    from specprobe.utils.io import atomic_write_text

    out = _out(args, ACCURACY_LINK_OUTPUTS)
    comps = _comparisons(args.comparison)
    result = accuracy_link(Path(args.evaluation), comps, tuned=args.tuned, metric=args.metric, norm=args.norm)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "accuracy_link.json.gz")
    table = result.correlations()
    atomic_write_text(out / "accuracy_link_correlations.csv", table.to_csv(index=False))
    if args.report:
        result.report(out / "accuracy_link.html")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
