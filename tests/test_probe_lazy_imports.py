"""Importing specprobe (every command line does, to build its parser) does not import scipy.stats: 0.5 s
on a fast disk, seconds on the GPU machine's, where every bench process spent 13 s importing. The rank
statistics import it on first use; every public name still resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_probe_package_and_the_command_line_do_not_import_scipy_stats():
    code = (
        "import sys\n"
        "from specprobe.probe import compare, layers, patch, seen_unseen, accuracy_link, trajectory\n"
        "from specprobe.app.cli import build_parser\n"
        "build_parser()\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_every_public_name_resolves():
    import specprobe.probe as probe
    from specprobe.probe.analyses import seen_unseen

    assert all(getattr(probe, name) is not None for name in probe.__all__)
    assert probe.seen_unseen is seen_unseen and "seen_unseen" in dir(probe)
    try:
        probe.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")
