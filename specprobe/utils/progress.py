"""The one progress display of every long specprobe stage, and the CLI's output level.

`progress(total=..., desc=...)` is what scoring, training and term extraction show progress with:

* on a terminal (stderr is a TTY): a tqdm bar, redrawn in place;
* otherwise (a log file, a pipe, a batch job): no redraws at all, which would write hundreds of
  carriage-return lines into the log; one line when the stage ends (``desc: 700/700 seq in 12.3 s
  (56.9 seq/s)``) and, for a long stage, one line every `INTERVAL_S` seconds while it runs;
* nothing under ``--quiet`` (`set_level("quiet")`), or when the caller passes ``enabled=False``.

`set_level` is called once by the `specprobe` command (``--quiet``, ``--verbose``); library users
get the default, "normal". `quiet_stdout()` is how ``--quiet`` keeps a command's standard output to
its result: only the lines that name a written file ("wrote ...", "report: ...") pass.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

LEVELS = ("quiet", "normal", "verbose")
#: seconds between the progress lines of a long stage when stderr is not a terminal
INTERVAL_S = float(os.environ.get("SPECPROBE_PROGRESS_INTERVAL", "30"))
#: the lines `quiet_stdout` lets through: those that name the result
RESULT_PREFIXES = ("wrote ", "report: ")

_level = "normal"


def set_level(level: str) -> None:
    """The output level of this process: "quiet" (no progress), "normal" or "verbose"."""
    global _level
    if level not in LEVELS:
        raise ValueError(f"output level {level!r}: choose from {', '.join(LEVELS)}")
    _level = level


def level() -> str:
    return _level


def is_quiet() -> bool:
    return _level == "quiet"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """A progress display for one stage of `total` units (see the module docstring); a context manager."""

    def __init__(
        self, total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.initial = initial, initial
        self.enabled = enabled and not is_quiet()
        self.stream = sys.stderr
        self.postfix = ""
        self.t0 = self.t_last = time.monotonic()
        self.bar: Any = None
        if self.enabled and _is_tty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.t_last >= INTERVAL_S and not self._finished():
            self.t_last = time.monotonic()
            self._line("")

    def _finished(self) -> bool:
        """Whether the count reached the total (the closing line follows; no interval line before it)."""
        return self.total is not None and self.n >= self.total

    def set_postfix(self, **values: Any) -> None:
        """Values shown beside the count (the loss, the epoch)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def _line(self, state: str) -> None:
        seconds = time.monotonic() - self.t0
        done = self.n - self.initial
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        rate = f" ({done / seconds:.1f} {self.unit}/s)" if seconds > 0 and done else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit}{state} in {seconds:.1f} s{rate}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        """End the stage: the bar goes away; without a terminal, the one line of the stage is printed."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled:
            self.enabled = False
            self._line(" done" if self.total is None or self._finished() else " stopped")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0) -> Progress:
    """A `Progress` for a stage of `total` units (None: unknown); `enabled=False` shows nothing."""
    return Progress(total, desc, unit, enabled=enabled, initial=initial)


def track(items: Iterable, total: int | None, desc: str, unit: str = "it", *, enabled: bool = True) -> Iterator:
    """`items`, showing progress as they are consumed (one `Progress`, closed at the end)."""
    with progress(total, desc, unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)


class _ResultLines(io.TextIOBase):
    """A text stream that passes on only the complete lines starting with `RESULT_PREFIXES`."""

    def __init__(self, target: TextIO) -> None:
        self.target, self.pending = target, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.lstrip().startswith(RESULT_PREFIXES):
                self.target.write(line.lstrip() + "\n")
                self.target.flush()
        return len(text)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Within: standard output keeps only the lines that name a result ("wrote ...", "report: ...")."""
    previous = sys.stdout
    sys.stdout = _ResultLines(previous)
    try:
        yield
    finally:
        sys.stdout.write("\n")  # a last line without a newline
        sys.stdout = previous
