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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="logit lens per layer, activation patching and logit attribution, base vs tuned",
                       description="Per layer: each term token's log-probability read through the final norm and head "
                                   "(logit lens), for base and tuned; optionally which components carry the change.")
    p.add_argument("--base", required=True, help="hub id or local directory of the base model")
    p.add_argument("--tuned", required=True, help="PEFT adapter directory, or a full fine-tuned model")
    p.add_argument("--terms", required=True, help="lexicon JSON, JSON mapping term -> specialties, or one term per line")
    p.add_argument("--data", help="QA file (S-MedQA JSON) whose questions are the contexts; default: the lexicon's own")
    p.add_argument("--out", required=True, help="output directory (layers.json.gz, layers_by_specialty.csv, ...)")
    p.add_argument("--layers", type=_layer_list, default=None, help="comma-separated layer indices (default all; negative from the end)")
    p.add_argument("--controls", default="auto", help="'auto', 'none', or a file with one word per line")
    p.add_argument("--patch", action="store_true", help="also run activation patching (attn, mlp, layer output; both directions)")
    p.add_argument("--positions", choices=["all", "scored"], default="all", help="positions patched (with --patch)")
    p.add_argument("--attribution", action="store_true", help="also compute direct logit attribution")
    p.add_argument("--remote", choices=["no", "ndif", "local"], default="no",
                   help="lens through nnsight: 'ndif' runs on NDIF servers (untested against the live service), "
                        "'local' is nnsight's serverless dry run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--long-texts", choices=["window", "error"], default="window")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or shard (spread over all GPUs)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    from specprobe.probe.cli import read_inputs
    from specprobe.probe.layers import layers
    from specprobe.utils.io import atomic_write_text

    terms, texts, controls = read_inputs(args)
    remote = {"no": False, "ndif": True, "local": "local"}[args.remote]
    common = dict(max_length=args.max_length, long_texts=args.long_texts, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if remote:
        view = layers(args.base, args.tuned, terms, texts, layer_ids=args.layers, controls=controls, remote=remote,
                      max_length=args.max_length, long_texts=args.long_texts)
        pair = None
    else:
        from specprobe.core.models import ModelPair

        pair = ModelPair.load(args.base, args.tuned, device=args.device, dtype=args.dtype)
        view = layers(pair, terms=terms, texts=texts, layer_ids=args.layers, controls=controls,
                      batch_size=args.batch_size, **common)
    view.save(out / "layers.json.gz")
    atomic_write_text(out / "layers_by_specialty.csv", view.by_specialty().to_csv(index=False))
    written = ["layers.json.gz", "layers_by_specialty.csv"]
    print(view.summary())
    if args.patch and pair is not None:
        from specprobe.probe.patching import patch

        pat = patch(pair, terms=terms, texts=texts, layer_ids=args.layers, positions=args.positions, **common)
        pat.save(out / "patching.json.gz")
        atomic_write_text(out / "patching_by_site.csv", pat.by_site().to_csv(index=False))
        written += ["patching.json.gz", "patching_by_site.csv"]
        print("\n" + pat.summary())
    if args.attribution and pair is not None:
        from specprobe.probe.patching import logit_attribution

        dla = logit_attribution(pair, terms=terms, texts=texts, **common)
        dla.save(out / "logit_attribution.json.gz")
        atomic_write_text(out / "logit_attribution_by_specialty.csv", dla.by_specialty().to_csv(index=False))
        written += ["logit_attribution.json.gz", "logit_attribution_by_specialty.csv"]
    if (args.patch or args.attribution) and pair is None:
        print("\n--patch/--attribution run locally only; skipped with --remote")
    print(f"\nwrote {', '.join(str(out / w) for w in written)}")
    return 0
