"""The base of specprobe's signal stops: Ctrl-C or SIGTERM turned into an exception that carries the
signal, so the CLI can print one line and exit with 128 + the signal number."""

from __future__ import annotations

import signal


class SignalInterrupt(KeyboardInterrupt):
    """Stopped by `signum`; subclasses say what was kept and how to resume in `message`."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(self.message)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        return f"stopped by {self.signal_name}"

    def __str__(self) -> str:
        return self.message
