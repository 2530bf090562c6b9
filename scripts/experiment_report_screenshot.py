"""Regenerate docs/img/experiment_report.png: the top of the experiment report (findings box, first sections).

    python scripts/experiment_report_screenshot.py [RUN_DIR] [OUT_PNG]

With RUN_DIR (a finished run, e.g. `specprobe demo --out specprobe-demo`), its experiment.json is
reported; without, the tiny synthetic run of tests/test_report_findings.py (no model, a few seconds).
The page is opened in headless Chromium (see tests/test_reports_browser.py), must log no error and
make no request; the screenshot is cut to its first HEIGHT pixels.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specprobe import load_result  # noqa: E402
from tests.browser import load_page  # noqa: E402
from tests.test_report_findings import tiny_experiment  # noqa: E402

WIDTH, HEIGHT = 1280, 1500


def main(run_dir: str = "", out: str = str(ROOT / "docs/img/experiment_report.png")) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="specprobe-shot-") as tmp:
        result = load_result(Path(run_dir) / "experiment.json") if run_dir else tiny_experiment(Path(tmp) / "run")
        page = result.report(Path(tmp) / "report.html")
        run = load_page(page, screenshot=Path(tmp) / "full.png", width=WIDTH, height=900)
        if run.errors or run.external_requests or not run.status.get("finished"):
            raise SystemExit(f"the page failed: {run.errors} {run.external_requests} {run.status}")
        with Image.open(Path(tmp) / "full.png") as img:
            img.crop((0, 0, WIDTH, min(HEIGHT, img.height))).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(*sys.argv[1:])
