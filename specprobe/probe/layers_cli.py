"""`specprobe layers`: logit lens per layer (and optionally activation patching and direct logit
attribution) of base vs tuned, written like `specprobe compare`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _layer_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers, got {value!r}") from exc


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
        help="comma-separated layer indices (default all; negative from the end)",
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
    from specprobe.utils.io import atomic_write_text

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
        view = layers(pair, terms=terms, texts=texts, layer_ids=args.layers, options=opts, engine=engine)
    if not is_main():
        return 0
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folder
    view.save(out / "layers.json.gz")
    atomic_write_text(out / "layers_by_specialty.csv", view.by_specialty().to_csv(index=False))
    written = ["layers.json.gz", "layers_by_specialty.csv"]
    print(view.summary())
    if pair is not None:
        written += _patch_and_attribute(args, pair, terms, texts, opts, out, engine)
    print(f"\nwrote {', '.join(str(out / w) for w in written)}")
    _remove_replaced(out, written)
    return 0


def _remove_replaced(out: Path, written: list[str]) -> None:
    """After an --overwrite run: the earlier run's outputs that this one did not write (its --patch or
    --attribution files) are removed, so that the folder holds one run, not a mix of two."""
    for name in LAYERS_OUTPUTS:
        if name not in written and (out / name).exists():
            (out / name).unlink()
            print(f"removed {out / name}, from the earlier run this one replaces")


def _patch_and_attribute(args: argparse.Namespace, pair, terms, texts, opts, out: Path, engine: str) -> list[str]:
    """--patch and --attribution: run and write them; the names of the files written."""
    from dataclasses import replace

    from specprobe.probe.patching import logit_attribution, patch
    from specprobe.utils.io import atomic_write_text

    # patching and attribution run without control words (their own default), whatever --controls says
    opts = replace(opts, controls=None)
    written = []
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
        pat.save(out / "patching.json.gz")
        atomic_write_text(out / "patching_by_site.csv", pat.by_site().to_csv(index=False))
        written += ["patching.json.gz", "patching_by_site.csv"]
        print("\n" + pat.summary())
    if args.attribution:
        dla = logit_attribution(pair, terms=terms, texts=texts, options=opts, engine=engine)
        dla.save(out / "logit_attribution.json.gz")
        atomic_write_text(out / "logit_attribution_by_specialty.csv", dla.by_specialty().to_csv(index=False))
        written += ["logit_attribution.json.gz", "logit_attribution_by_specialty.csv"]
    return written
