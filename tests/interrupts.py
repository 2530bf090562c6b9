"""A Ctrl-C in the middle of a training run, for the resume tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


def sigint_at(step: int) -> Callable[[int, float], None]:
    """An `on_step` callback that sends this process SIGINT after optimizer step `step`."""

    def interrupt(done: int, loss: float) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGINT)

    return interrupt
