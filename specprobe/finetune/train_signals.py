"""How `train` stops on SIGINT/SIGTERM: `SignalGuard` defers the first signal to the end of the current
step (the loop checkpoints, then raises `TrainingInterrupted`); a second one, or one outside training,
stops at once. `TrainingInterrupted` is a `specprobe.utils.interrupts.SignalInterrupt`, as the CLI expects.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from specprobe.utils.interrupts import SignalInterrupt

log = logging.getLogger(__name__)


class TrainingInterrupted(SignalInterrupt):
    """`train` was stopped by SIGINT or SIGTERM; raised after the checkpoint is written.

    A KeyboardInterrupt, so that `except Exception` does not take it for an ordinary error. Running the
    same call (or command) again resumes from `checkpoint` and ends with the same adapter as an
    uninterrupted run.

    Attributes: `signum` (the signal), `signal_name` ("SIGTERM"), `step` (the optimizer step a rerun
    resumes from: that of the newest checkpoint, 0 if none), `total_steps` (None if the signal came
    before the run's length was known), `out` (the output directory), `checkpoint` (the checkpoint
    directory, or None), `completed` (True when the signal came while the final adapter was being
    written, which was finished first: the adapter in `out` is complete), `exit_code` (128 + signum:
    130 for SIGINT, 143 for SIGTERM). `str(exc)` is the one-line message for the user.
    """

    def __init__(
        self,
        signum: int,
        step: int,
        total_steps: int | None,
        out: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        completed: bool = False,
    ) -> None:
        self.signum, self.step, self.total_steps = int(signum), int(step), total_steps
        self.out = Path(out)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.completed = completed
        super().__init__(signum)

    @property
    def message(self) -> str:
        at = f"step {self.step} of {self.total_steps if self.total_steps is not None else '?'}"
        if self.completed:
            return (
                f"stopped after {self.signal_name} once training had finished ({at}); the adapter in {self.out} "
                "is complete; rerun the same command to go on"
            )
        if self.checkpoint is None:
            return (
                f"stopped at {at} after {self.signal_name}, before any checkpoint was saved in {self.out}; "
                "rerun the same command to start again"
            )
        return f"stopped at {at} after {self.signal_name}; checkpoint in {self.out}; rerun the same command to resume"

    def __reduce__(self):
        return type(self), (self.signum, self.step, self.total_steps, self.out, self.checkpoint, self.completed)


class SignalGuard:
    """SIGINT/SIGTERM during `train` (main thread only; elsewhere the handlers are left alone).

    Outside `deferring` (loading, the output checks) a signal raises `abort(signum)` at once: nothing
    is lost. While deferring (the training loop, the final write), the first signal is noted in
    `signum`, for the loop to checkpoint after the current step and raise; a second one raises at
    once (the newest checkpoint on disk stays the resume point).
    """

    def __init__(self, abort: Callable[[int], BaseException]) -> None:
        self.abort = abort
        self.signum = 0
        self.deferring = False
        self._old: dict = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.deferring and not self.signum:
            self.signum = signum
            log.warning(
                "%s: saving a checkpoint after the current step, then stopping (send it again to stop at once)",
                signal.Signals(signum).name,
            )
            return
        self.deferring = False
        raise self.abort(signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
