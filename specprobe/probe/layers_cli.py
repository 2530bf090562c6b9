"""`specprobe layers`: logit lens per layer (and optionally activation patching and direct logit
attribution) of base vs tuned, written like `specprobe compare`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from specprobe.core.checkpoint import PARTIAL_SCORES

if TYPE_CHECKING:
    from specprobe.core.results import Result


def _layer_list(value: str) -> list[int]:
    """--layers: at least one integer (an empty list ran no layer and wrote empty results)."""
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers, got {value!r}")
    return out


LAYERS_OUTPUTS = (
    "layers.json.gz",
    "layers_by_specialty.csv",
    "patching.json.gz",
    "patching_by_site.csv",
    "logit_attribution.json.gz",
    "logit_attribution_by_specialty.csv",
)


def register(sub: argparse._SubParsersAction) -> None:
    from specprobe.probe.options import add_probe_arguments

    p = sub.add_parser(
        "layers",
        help="logit lens per layer, activation patching and logit attribution, base vs tuned",
        description="Per layer: each term token's log-probability read through the final norm and head "
        "(logit lens), for base and tuned; optionally which components carry the change.",
    )
    add_probe_arguments(p)
    p.add_argument("--out", required=True, help="output directory (layers.json.gz, layers_by_specialty.csv, ...)")
    p.add_argument(
        "--layers",
        type=_layer_list,
        default=None,
        help="comma-separated layer indices (default all; negative from the end: a list that starts with a "
        "minus as --layers=-2,-1)",
    )
    p.add_argument(
        "--patch", action="store_true", help="also run activation patching (attn, mlp, layer output; both directions)"
    )
    p.add_argument("--positions", choices=["all", "scored"], default="all", help="positions patched (with --patch)")
    p.add_argument("--attribution", action="store_true", help="also compute direct logit attribution")
    p.add_argument(
        "--remote",
        choices=["no", "ndif", "local"],
        default="no",
        help="lens through nnsight: 'ndif' runs on NDIF servers (untested against the live service), "
        "'local' is nnsight's serverless dry run",
    )
    p.add_argument(
        "--engine",
        choices=["hooks", "transformer_lens"],
        default="hooks",
        help="how layer states are read: 'hooks' (torch hooks on the Hugging Face modules; default, fastest) or "
        "'transformer_lens' (TransformerBridge hook points on the same weights; pip install specprobe[tl])",
    )
    p.set_defaults(handler=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    """Under `accelerate launch`/`torchrun` the ranks share the lens; rank 0 alone writes, prints, and
    runs --patch/--attribution (which are not data-parallel)."""
    from specprobe.core.distributed import init_from_env, is_main
    from specprobe.probe.cli import read_terms_and_texts
    from specprobe.probe.layers import layers
    from specprobe.probe.options import ProbeOptions, check_out_dir
    from specprobe.probe.tl_bridge import check_engine

    opts = ProbeOptions.from_args(args)
    remote = {"no": False, "ndif": True, "local": "local"}[args.remote]
    engine = getattr(args, "engine", "hooks")
    try:
        check_engine(engine)  # before any model loads: a missing extra is bad input, not a crash
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if remote and engine != "hooks":
        raise ValueError("--remote runs the lens through nnsight; it takes no --engine")
    if remote and (args.patch or args.attribution):
        raise ValueError("--patch and --attribution run locally only; leave them out with --remote")
    if remote is True and Path(args.base).exists():  # was the hub client's "Repo id must be in the form ..."
        raise ValueError(
            f"--remote ndif runs a model NDIF hosts, named by its hub id; --base {args.base} is a local folder "
            "(--remote local runs the nnsight lens on this machine)"
        )
    if args.positions != "all" and not args.patch:
        raise ValueError(f"--positions {args.positions} chooses the positions --patch patches; add --patch")
    if init_from_env(opts.device)[1] > 1 and (remote or engine != "hooks"):
        raise ValueError(
            f"--{'remote' if remote else 'engine ' + engine} runs in one process; do not start it data-parallel"
        )
    out = check_out_dir(args.out, LAYERS_OUTPUTS, args.overwrite)
    terms, texts = read_terms_and_texts(args)
    if remote:
        view = layers(args.base, args.tuned, terms, texts, layer_ids=args.layers, remote=remote, options=opts)
        pair = None
    else:
        from specprobe.core.models import ModelPair

        pair = ModelPair.load(
            args.base, args.tuned, device=opts.device, dtype=opts.dtype, force_adapter=args.force_adapter
        )
        # the default engine keeps finished batches under --out while it runs: a rerun after a kill resumes
        resume = {"checkpoint": out / PARTIAL_SCORES, "keep_checkpoint": True} if engine == "hooks" else {}
        view = layers(pair, terms=terms, texts=texts, layer_ids=args.layers, options=opts, engine=engine, **resume)
    if not is_main():
        return 0
    print(view.summary())
    outputs: dict[str, Result | str] = {
        "layers.json.gz": view,
        "layers_by_specialty.csv": view.by_specialty().to_csv(index=False),
    }
    if pair is not None:
        outputs.update(_patch_and_attribute(args, pair, terms, texts, opts, engine))
    _write_outputs(out, outputs)
    shutil.rmtree(out / PARTIAL_SCORES, ignore_errors=True)  # written: no resume needs the batches
    return 0


def _write_outputs(out: Path, outputs: dict[str, Result | str]) -> None:
    """Write every output once all of them are computed: a run that fails on the way (in --patch, say, or
    Ctrl-C) writes nothing, and one with --overwrite leaves the earlier run's files as they were."""
    from specprobe.utils.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folder
    for name, value in outputs.items():
        if isinstance(value, str):
            atomic_write_text(out / name, value)
        else:
            value.save(out / name)
    print(f"\nwrote {', '.join(str(out / name) for name in outputs)}")
    _remove_replaced(out, list(outputs))


def _remove_replaced(out: Path, written: list[str]) -> None:
    """After an --overwrite run: the earlier run's outputs that this one did not write (its --patch or
    --attribution files) are removed, so that the folder holds one run, not a mix of two."""
    for name in LAYERS_OUTPUTS:
        if name not in written and (out / name).exists():
            (out / name).unlink()
            print(f"removed {out / name}, from the earlier run this one replaces")


def _patch_and_attribute(args: argparse.Namespace, pair, terms, texts, opts, engine: str) -> dict[str, Result | str]:
    """--patch and --attribution: run them; their outputs by file name (written with the lens's)."""
    from dataclasses import replace

    from specprobe.probe.patching import logit_attribution, patch

    # patching and attribution run without control words (their own default), whatever --controls says
    opts = replace(opts, controls=None)
    outputs: dict[str, Result | str] = {}
    if args.patch:
        pat = patch(
            pair,
            terms=terms,
            texts=texts,
            layer_ids=args.layers,
            positions=args.positions,
            options=opts,
            engine=engine,
        )
        outputs["patching.json.gz"] = pat
        outputs["patching_by_site.csv"] = pat.by_site().to_csv(index=False)
        print("\n" + pat.summary())
    if args.attribution:
        dla = logit_attribution(pair, terms=terms, texts=texts, options=opts, engine=engine)
        outputs["logit_attribution.json.gz"] = dla
        outputs["logit_attribution_by_specialty.csv"] = dla.by_specialty().to_csv(index=False)
    return outputs
