"""`specprobe.probe` loads its analyses of saved results on first use: compare and the layer views do not
pay for scipy.stats (0.5 s of imports on a fast disk, seconds on the GPU machine's, where every bench
process spent 13 s importing), and every public name still resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_compare_and_the_layer_views_do_not_import_scipy_stats():
    code = (
        "import sys\n"
        "from specprobe.probe import compare, layers, patch, Comparison, ProbeOptions\n"
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
