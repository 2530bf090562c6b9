"""The experiment report runs each permutation test once: the findings box and the sections read the same
tables. `SeenUnseen.tests`, `Trajectory.own_advantage` and `AccuracyLink.correlations` ran twice (once for
the finding, once for the section), and each model's `Comparison.by_specialty` twice where the general-text
control is shown (the heatmap, then the control's section); the page is the same."""

from __future__ import annotations

from collections import Counter

import pytest

from specprobe.app import findings_extra as FX
from specprobe.app.report import build_experiment_page
from specprobe.probe import Comparison
from specprobe.probe.analyses import AccuracyLink, SeenUnseen, Trajectory
from specprobe.reports import analyses as A
from specprobe.reports import sections as S
from specprobe.reports.page import write_page
from tests.test_report_findings import (
    ARMS,
    N_BOOT,
    _accuracy_link,
    _general_text,
    _seen_unseen,
    _trajectory,
    make_arm,
    tiny_experiment,
)


def _counted(monkeypatch, calls: Counter, cls: type, name: str, label: dict[int, str]) -> None:
    """Count the calls of `cls.name` on the objects `label` names (id -> name); others are not counted."""
    method = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        if id(self) in label:
            calls[(name, label[id(self)])] += 1
        return method(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


def test_the_permutation_tests_run_once(tmp_path, monkeypatch):
    run = tiny_experiment(tmp_path / "run")
    comps = run.comparisons
    seen = {arm: _seen_unseen(comps[arm], arm) for arm in ARMS}
    traj = {arm: _trajectory(arm, i) for i, arm in enumerate(ARMS)}
    link = _accuracy_link(comps)
    general = {arm: _general_text() for arm in ARMS}
    calls: Counter = Counter()
    for cls, name, named in (
        (SeenUnseen, "tests", seen),
        (Trajectory, "own_advantage", traj),
        (Comparison, "by_specialty", comps),
        (AccuracyLink, "correlations", {"link": link}),
    ):
        _counted(monkeypatch, calls, cls, name, {id(r): k for k, r in named.items()})
    kw = {"seen_unseen": seen, "trajectory": traj, "accuracy_link": link, "general_text": general}
    html = write_page(build_experiment_page(run, n_boot=N_BOOT, **kw), tmp_path / "r.html").read_text("utf-8")
    once = {(name, arm): 1 for name in ("tests", "own_advantage", "by_specialty") for arm in ARMS}
    assert calls == Counter({**once, ("correlations", "link"): 1})
    # the tables reach both: the findings say what the sections show
    for title in ("Over training: Neurology", "Seen vs unseen training terms", "General-text control: Cardiology"):
        assert title in html, title
    assert "Neurology: ahead from step 2" in html and "rho = +" in html


@pytest.mark.parametrize("name", ["seen_unseen", "trajectory", "accuracy_link", "general_text"])
def test_a_section_or_finding_alone_still_computes_its_table(name):
    comp = make_arm("Neurology", own_effect=0.3, seed=1)
    if name == "seen_unseen":
        results = {arm: _seen_unseen(make_arm(arm, own_effect=0.3, seed=1), arm) for arm in ARMS}
        finding, _ = FX.seen_unseen_finding(results, N_BOOT)
        section = A.seen_unseen_section(results, n_boot=N_BOOT)
    elif name == "trajectory":
        results = {arm: _trajectory(arm, i) for i, arm in enumerate(ARMS)}
        finding, _ = FX.trajectory_finding(results, N_BOOT)
        section = A.trajectory_section(results["Neurology"], n_boot=N_BOOT)
    elif name == "accuracy_link":
        link = _accuracy_link({})
        finding, _ = FX.accuracy_link_finding(link, N_BOOT)
        section = A.accuracy_link_section(link, n_boot=N_BOOT)
    else:
        finding, _ = FX.general_text_finding({"Neurology": _general_text()}, N_BOOT)
        section = A.general_text_section(_general_text(), comp, n_boot=N_BOOT)
        assert len(S.specialty_delta_matrix({"Neurology": comp}, n_boot=N_BOOT, relative_to_control=True))
    assert finding.verdict in ("yes", "partly", "not shown") and section.blocks
