"""Regenerate docs/img/notebook_repr.png: results of a demo run as a notebook shows them (headless Chromium).

    specprobe demo --out specprobe-demo            # once (about 6.5 minutes on 2 CPU cores)
    python scripts/notebook_repr_screenshot.py specprobe-demo

The page is laid out like notebook cells; each output is the object's `_repr_html_()`, unchanged.
Needs Chromium (see tests/test_reports_browser.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specprobe import load_result  # noqa: E402
from tests.browser import load_page  # noqa: E402
from tests.test_interop_notebook import notebook_page  # noqa: E402


def main(run_dir: str = "specprobe-demo", out: str = str(ROOT / "docs/img/notebook_repr.png")) -> None:
    root = Path(run_dir)
    comp_path = sorted(root.glob("stages/compare-cardiology-*/comparison.json.gz"))[-1]
    comp = load_result(comp_path)
    exp = load_result(root / "experiment.json")
    cells = [
        ('comp = specprobe.load_result(".../compare-cardiology-.../comparison.json.gz"); comp', comp._repr_html_()),
        ('exp = specprobe.load_result("specprobe-demo/experiment.json"); exp', exp._repr_html_()),
    ]
    page = Path(out).with_suffix(".html")
    page.write_text(notebook_page(cells), encoding="utf-8")
    run = load_page(page, screenshot=out, width=1100, height=800)
    page.unlink()
    if run.errors or run.external_requests:
        raise SystemExit(f"the page logged errors or made requests: {run.errors} {run.external_requests}")
    print(f"wrote {out} ({Path(out).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(*sys.argv[1:])
