"""The `specprobe` command: each package registers its own subcommands; heavy imports happen in handlers."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

# Modules exposing `register(subparsers)`; each adds one or more subcommands.
COMMAND_MODULES = (
    "specprobe.probe.cli",
    "specprobe.probe.layers_cli",
    "specprobe.terms.cli",
    "specprobe.finetune.cli",
    "specprobe.app.demo_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The `specprobe` parser with every subcommand of `COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="specprobe",
        description="Probe what clinical-specialty fine-tuning put into a language model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:  # a module that is missing or fails to import is an error, not a skipped command
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `specprobe` subcommand; user errors print one line and return 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Hugging Face's per-load progress bars and a transformers deprecation notice raised inside peft/accelerate
    # drown specprobe's own progress output; -v brings them back.
    if not args.verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        # User errors: one clear line, no traceback (use -v for one).
        if args.verbose:
            raise
        print(f"specprobe {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
