"""The `specprobe` command: each package registers its own subcommands; heavy imports happen in handlers."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import select
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from specprobe.utils.interrupts import SignalInterrupt
from specprobe.utils.progress import level as progress_level
from specprobe.utils.progress import quiet_stdout, set_level

# Modules exposing `register(subparsers)`; each adds one or more subcommands.
COMMAND_MODULES = (
    "specprobe.probe.cli",
    "specprobe.probe.layers_cli",
    "specprobe.probe.analyze_cli",
    "specprobe.terms.cli",
    "specprobe.finetune.cli",
    "specprobe.app.demo_cli",
)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other bad input's (argparse printed its usage
    block first: 8 to 21 lines before "argument --batch-size: must be a positive integer, got 0"); its
    subcommand parsers are of this class too (`add_subparsers` makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `specprobe` parser with every subcommand of `COMMAND_MODULES`."""
    parser = OneLineParser(
        prog="specprobe",
        description="Probe what clinical-specialty fine-tuning put into a language model.",
    )
    _add_output_flags(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:  # a module that is missing or fails to import is an error, not a skipped command
        importlib.import_module(name).register(sub)
    for command in _subcommand_parsers(parser):  # `specprobe -q terms stats ...`, `... terms stats ... -q` alike
        _add_output_flags(command, argparse.SUPPRESS)
    return parser


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (nested) subcommand parser below `parser`: `evaluate`, `terms`, `terms stats`, ..."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found += [child, *_subcommand_parsers(child)]
    return found


def _add_output_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """--quiet, --verbose and --debug (given before or after the subcommand; SUPPRESS: unset unless given)."""
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print only errors and the result's path"
    )
    out.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log debug messages and library progress bars"
    )
    parser.add_argument("--debug", action="store_true", default=default, help="show the full traceback of an error")


#: what counts as bad input (a one-line error, exit 2): the library raises ValueError subclasses
#: (ModelLoadError, DataError, ConfigError, OutputLockedError, UnsupportedArchitectureError, ...),
#: TypeError for inputs of the wrong kind, and OSError for files it cannot read or write.
USER_ERRORS = (ValueError, TypeError, OSError, LookupError)
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


class Terminated(SignalInterrupt):
    """SIGTERM (a scheduler's pre-emption, `kill`) as an interruption: atomic writes clean up, the CLI exits 143."""

    @property
    def message(self) -> str:
        return "stopped by SIGTERM; rerun the same command to resume (finished outputs are kept)"


class Interrupted(SignalInterrupt):
    """Ctrl-C (SIGINT) as our own exception, not a bare KeyboardInterrupt: CPython remembers a bare one that
    crossed a C-level `PyRun_*` call (pybind11/PyO3 code does that) and then dies by SIGINT at exit,
    overriding the exit code 130 the CLI returns."""

    @property
    def message(self) -> str:
        return "interrupted (Ctrl-C); rerun the same command to resume"


_STOPS = {signal.SIGINT: Interrupted, signal.SIGTERM: Terminated}


def _raise_stop(signum: int, frame: object) -> None:
    raise _STOPS[signal.Signals(signum)](signum)


def _redeliver_swallowed_stop(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook: a stop raised where Python cannot propagate it (a weakref callback,
    a `__del__`) would be printed as "Exception ignored" and lost; it is sent again instead, from another
    thread a moment later, so that it lands in ordinary code. Everything else goes to `hook`."""

    def handle(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, SignalInterrupt):
            resend = threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum))
            resend.daemon = True
            resend.start()
        else:
            hook(unraisable)

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `specprobe` subcommand. Bad input prints one line naming the file, field or value and
    returns 2; an interruption (Ctrl-C, SIGTERM) returns 128 + the signal; `--debug` shows tracebacks."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _raise_stop) for sig in _STOPS} if in_main_thread else {}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_swallowed_stop(previous_hook)
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except KeyboardInterrupt as exc:  # Interrupted, Terminated, TrainingInterrupted, RunInterrupted carry their code
        if debug:
            raise
        print(f"specprobe: {str(exc) or 'interrupted (Ctrl-C); rerun the same command to resume'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: Sequence[str] | None) -> int:
    """Parse the arguments and run the handler; errors become one line (see `main`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("quiet", "verbose", "debug"):
        setattr(args, flag, bool(getattr(args, flag, False)))
    if args.quiet and args.verbose:
        parser.error("--quiet and --verbose exclude each other")
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = progress_level()
    _set_output_level(args)
    shown = {k: v for k, v in vars(args).items() if k != "handler"}
    logging.getLogger(__name__).debug("specprobe %s, options %s", args.command, shown)
    try:
        # a display command's standard output is its result (`terms show`): --quiet keeps it
        keep_stdout = not args.quiet or getattr(args, "prints_result", False)
        with contextlib.nullcontext() if keep_stdout else quiet_stdout():
            code = int(args.handler(args) or 0)
            if getattr(args, "prints_result", False):
                sys.stdout.flush()  # here, not at exit, where a closed pipe could not be told apart
            return code
    except USER_ERRORS as exc:
        if args.debug:
            raise
        if isinstance(exc, BrokenPipeError) and getattr(args, "prints_result", False) and _stdout_reader_gone():
            return _reader_gone()  # `specprobe stages OUT | head`: the reader had what it wanted
        print(f"specprobe {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug, not bad input: still no traceback unless asked for
        if args.debug:
            raise
        print(
            f"specprobe {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        set_level(previous)  # main() called in-process (tests, notebooks) leaves the level as it was


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll reports an error on it), so that
    a broken pipe elsewhere (a socket, a file) is not taken for it."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _reader_gone() -> int:
    """A display command's reader closed the pipe: not an error. Standard output goes to /dev/null, so
    that flushing it at exit raises nothing (as the Python docs advise for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _set_output_level(args: argparse.Namespace) -> None:
    """Progress and log levels: --quiet (errors only), default (info, specprobe's progress), --verbose (debug,
    and the Hugging Face download bars and library warnings that otherwise drown specprobe's own output)."""
    set_level("quiet" if args.quiet else "verbose" if args.verbose else "normal")
    if not args.verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # the hub client's retry warnings (5 per file for a name that is no local folder and no reachable
        # hub id) buried the one error line; --verbose shows them
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if "transformers" in sys.modules:  # imported before (main() called in-process): the env var came too late
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    if args.quiet:
        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (KeyError quotes its key; multi-line messages are joined)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
