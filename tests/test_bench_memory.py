"""The bench's peak memory is the worker's own, not its parent's: on Linux a child inherits the parent's
resident set as its getrusage ru_maxrss, which floored every worker's peak at the size of the bench's main
process (479 MB for every method and model size, after the main process had built the lexicon)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status (Linux)")
def test_a_worker_peak_is_not_its_parents_resident_set():
    ballast = bytearray(1536 * 2**20)  # this process's resident set grows by 1.5 GiB ...
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "from bench.__main__ import peak_bytes; print(peak_bytes())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    child_peak = int(out.stdout.strip().splitlines()[-1])
    # ... while the child only imports torch and the bench (a few hundred MB at most)
    assert child_peak < 1024 * 2**20, f"child peak {child_peak / 2**20:.0f} MiB"
    assert child_peak > 10 * 2**20
    del ballast
