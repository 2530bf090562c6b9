"""`specprobe demo` end to end on the built-in default (a reduced run), and the effect it must show."""

from __future__ import annotations

import re

import pytest

from specprobe.app.cli import main


@pytest.mark.slow
def test_demo_shows_terms_rising_more_than_control_words(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--specialties", "Cardiology", "Neurology", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    report = out / "report.html"
    assert report.exists() and f"report: {report}" in text
    tied = r"( \(\d of them tied with another adapter\))?"
    assert re.search(rf"own adapter best on \d/2 specialties{tied}; permutation p = [\d.]+", text), text
    import pandas as pd

    matrix = pd.read_csv(out / "compare_matrix.csv")
    control = matrix[matrix["specialty"] == "control"].set_index("finetune_specialty")
    for adapter in ("Cardiology", "Neurology"):
        own = matrix[(matrix["finetune_specialty"] == adapter) & (matrix["specialty"] == adapter)].iloc[0]
        # fine-tuning on a specialty raises its clinical terms clearly above ordinary words (CIs apart)
        assert own["ci_low"] > control.loc[adapter, "ci_high"]
    pooled = matrix[
        (matrix["finetune_specialty"] == "All specialties")
        & (matrix["specialty"] != "control")
        & (matrix["n_pairs"] >= 20)
    ]
    assert len(pooled) >= 5
    # within the same texts, terms of most specialties rise more than the control words (paired, CI above 0)
    assert (pooled["minus_control_ci_low"] > 0).mean() >= 0.75

    # the real experiment page renders in a browser: no request, no error, every chart drawn
    import os

    from tests.browser import find_chromium, load_page
    from tests.test_reports_browser import PROBES

    chromium = find_chromium()
    if chromium is None and os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI: no Chromium binary")
    if chromium is not None:
        run = load_page(
            report, screenshot=tmp_path / "demo.png", probes={"charts": PROBES["charts"]}, chromium=chromium
        )
        assert run.status.get("finished") and run.external_requests == [] and run.errors == []
        assert (
            run.status["charts"] >= 6 and run.status["rendered"] == run.status["charts"] and run.status["failed"] == 0
        )
        assert all(c["status"] == "ok" and c["marks"] >= 3 for c in run.probes["charts"])
        print(f"\nscreenshot: {run.screenshot}")

    # a rerun skips every finished stage
    assert main(["demo", "--out", str(out), "--specialties", "Cardiology", "Neurology", "--no-progress"]) == 0
    assert "[run ]" not in capsys.readouterr().out


def test_a_missing_cli_module_is_an_error(monkeypatch):
    """A command module that cannot be imported fails the CLI loudly instead of silently dropping its commands."""
    from specprobe.app import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "specprobe.no_such_cli"))
    with pytest.raises(ModuleNotFoundError, match="specprobe.no_such_cli"):
        cli.build_parser()
