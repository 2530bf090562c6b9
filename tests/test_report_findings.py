"""The experiment report a clinician reads in two minutes: the findings box first, wording that follows
from the numbers, each chart once, significant heatmap cells marked, readable numbers, the method text
in one place, and the optional analyses adding a finding and a section only when given.

`tiny_experiment` builds a saved run from synthetic results (no model): two fine-tuned arms whose own
specialty's terms rise (or, with `own_effect=0`, do not), an accuracy matrix, a lexicon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from specprobe.app.experiment_result import ExperimentResult
from specprobe.app.report import build_experiment_page, optional_analyses, write_experiment_report
from specprobe.finetune.accuracy_matrix import AccuracyMatrix
from specprobe.probe import Comparison
from specprobe.reports import format as fmt
from specprobe.reports.page import ChartBlock, FindingsBlock, ListBlock, write_page
from specprobe.terms.lexicon import Lexicon, TermEntry
from tests.test_reports_browser import chromium  # noqa: F401  (the fixture: skipped without Chromium, fails under CI)

TERMS = {
    "seizure": ("Neurology",),
    "stroke": ("Neurology",),
    "epilepsy": ("Neurology",),
    "migraine": ("Neurology",),
    "chest pain": ("Cardiology",),
    "angina": ("Cardiology",),  # a second word: one term word against 20 control words gives no p below 1/21
    "arrhythmia": ("Cardiology",),
    "heart failure": ("Cardiology",),
    "cirrhosis": ("Gastroenterology",),
}
# 4 terms per arm's specialty: own vs other words (words random too) is 4 words against 5, whose smallest
# p, 1/126, passes Holm across 2 models or 2 checkpoints; 2 against 3 could give no p below 0.1
# 20 control words: with 2 terms a specialty's word-level test (2 words among 22) can reach p = 1/231, below
# the Holm threshold of the 6-cell matrix; against 3 control words it could give no p below 0.1
CONTROLS = (
    *("budget", "month", "window", "garden", "letter", "bridge", "market", "travel", "winter", "morning"),
    *("paper", "river", "table", "music", "street", "friend", "office", "summer", "coffee", "ticket"),
)
ARMS = ("Neurology", "Cardiology")
N_BOOT = 200


def _delta(term: str, arm: str, own_effect: float, rng: np.random.Generator) -> float:
    """Δ/token of one occurrence: every term +0.2 over the control words (the shift), the arm's own
    specialty `own_effect` more, Gastroenterology terms no shift at all (with `own_effect=0`: every term
    the same shift)."""
    specs = TERMS.get(term, ())
    if not specs:
        return float(rng.normal(0.0, 0.05))
    if specs == ("Gastroenterology",) and own_effect:
        return float(rng.normal(0.0, 0.3))
    return float(rng.normal(0.2 + (own_effect if arm in specs else 0.0), 0.05))


def make_arm(arm: str, *, own_effect: float, n_texts: int = 30, seed: int = 0) -> Comparison:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_texts):
        for term in [*TERMS, *CONTROLS]:
            d = _delta(term, arm, own_effect, rng)
            base = -float(rng.uniform(5, 20))
            rows.append(
                {
                    "text_id": f"q{t}",
                    "term": term,
                    "specialties": TERMS.get(term, ()),
                    "text_specialties": (),
                    "surface": term,
                    "start": 0,
                    "end": len(term),
                    "n_tokens": 1,
                    "logp_base": base,
                    "logp_tuned": base + d,
                    "delta": d,
                    "delta_per_token": d,
                    "token_logp_base": [base],
                    "token_logp_tuned": [base + d],
                    "is_control": term in CONTROLS,
                    "flags": "",
                }
            )
    meta = {"base": "tiny-base", "tuned": f"adapter-{arm}", "options": {"learning_rate": 1e-05}}
    return Comparison(pd.DataFrame(rows), meta, {"missing": []})


def make_accuracy(own_acc: float = 0.8) -> AccuracyMatrix:
    """Base 0.5 everywhere; each arm `own_acc` on its own specialty, 0.5 elsewhere; 200 questions a cell."""
    rows = []
    for model, trained in (("base", None), *((a, a) for a in ARMS)):
        for spec in ARMS:
            acc = own_acc if trained == spec else 0.5
            n = 200
            rows.append(
                {
                    "model": model,
                    "trained_on": trained or "",
                    "specialty": spec,
                    "n": n,
                    "n_correct": round(acc * n),
                    "acc": acc,
                    "acc_lo": acc - 0.07,
                    "acc_hi": acc + 0.07,
                    "n_correct_norm": round(acc * n),
                    "acc_norm": acc,
                    "acc_norm_lo": acc - 0.07,
                    "acc_norm_hi": acc + 0.07,
                }
            )
    return AccuracyMatrix(pd.DataFrame(rows), {"base": "tiny-base"})


def tiny_experiment(root: Path, *, own_effect: float = 0.3, own_acc: float = 0.8) -> ExperimentResult:
    """A saved run from synthetic results: two arms, their comparisons, the accuracy matrix, a lexicon."""
    root.mkdir(parents=True, exist_ok=True)
    paths: dict = {"adapters": {}, "comparisons": {}, "layers": {}}
    for i, arm in enumerate(ARMS):
        comp = make_arm(arm, own_effect=own_effect, seed=i + 1)
        paths["comparisons"][arm] = str(comp.save(root / f"compare-{arm}.json.gz"))
        paths["adapters"][arm] = str(root / f"adapter-{arm}")
    paths["accuracy"] = str(make_accuracy(own_acc).save(root / "accuracy.json"))
    lexicon = Lexicon({t: TermEntry(t, specialties=list(s), specific=True) for t, s in TERMS.items()}, {})
    paths["lexicon"] = str(lexicon.save(root / "lexicon.json"))
    config = {"base": "tiny-base", "data": "synthetic questions", "train": {"learning_rate": 1e-05}}
    frame = pd.DataFrame({"finetune_specialty": list(ARMS)})
    return ExperimentResult(frame, {"config": config, "root": str(root)}, {"paths": paths})


def visible_text(html: str) -> str:
    """The page's text without scripts, styles and tags."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> ExperimentResult:
    return tiny_experiment(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def page(experiment):
    return build_experiment_page(experiment, n_boot=N_BOOT)


# -- numbers ------------------------------------------------------------------------------------------
def test_numbers_have_three_significant_digits_and_no_exponent():
    assert fmt.number(0.08861) == "0.0886"
    assert fmt.number(2.496e-07) == "0.000000250"
    assert fmt.number(12345.6) == "12346" and fmt.number(1.5) == "1.50"
    assert fmt.number(0.0123, signed=True) == "+0.0123" and fmt.number(-0.00004, signed=True) == "-0.0000400"
    assert fmt.number(float("nan")) == "–" and fmt.number(None) == "–" and fmt.number(0.0) == "0"
    assert fmt.p_value(2.496e-07) == "<0.001" and fmt.p_value(0.001) == "0.00100" and fmt.p_value(0.5) == "0.500"
    assert fmt.cell_text(3, "n") == "3" and fmt.cell_text(0.0004, "p_holm") == "<0.001"
    assert fmt.exact(1e-05) == "0.00001"


@given(st.floats(min_value=0.0, max_value=1.0))
@example(0.04996)
@example(0.0499999)
def test_a_shown_p_value_is_on_the_same_side_of_alpha_as_the_p_value(p):
    """A p just below 0.05 (0.04996) once read "0.0500" next to a significance asterisk: the text a reader
    sees must not cross the significance level that the marks use."""
    text = fmt.p_value(p)
    shown = fmt.P_FLOOR / 2 if text.startswith("<") else float(text)
    assert (shown < fmt.ALPHA) == (p < fmt.ALPHA)


# -- the findings box ---------------------------------------------------------------------------------
def test_findings_box_is_first_and_answers_the_three_questions(page):
    first = page.sections[0]
    assert first.title == "Findings" and isinstance(first.blocks[0], FindingsBlock)
    findings = first.blocks[0].findings
    assert [f.question.split("?")[0] for f in findings] == [
        "Does training on a specialty give the best accuracy on it",
        "Do terms of all specialties rise, above control words",
        "Is there specialty knowledge beyond the shift (own-specialty terms vs other specialties' terms)",
    ]
    acc, shift, own = findings
    # accuracy: own 0.8 vs others 0.5 on 2 specialties; a permutation test over 2 models cannot reach 0.05
    assert acc.verdict == "not shown" and "not significant" in acc.answer and "2 of 2 specialties" in acc.answer
    assert "With 2 models the smallest possible p is 0.500" in acc.evidence
    # Neurology and Cardiology terms rise above the controls under both arms, Gastroenterology terms do not
    assert shift.verdict == "partly" and "4 of 6" in shift.answer and "not significant" in shift.answer
    assert own.verdict == "yes" and "2 of 2 models" in own.answer and "significant after Holm" in own.answer
    assert all(f.evidence and f.link for f in findings)
    anchors = {s.anchor for s in page.sections}
    assert {f.link for f in findings} <= anchors


def test_wording_follows_the_numbers_when_nothing_is_significant(tmp_path):
    run = tiny_experiment(tmp_path / "flat", own_effect=0.0, own_acc=0.5)
    findings = build_experiment_page(run, n_boot=N_BOOT).sections[0].blocks[0].findings
    own = findings[2]
    assert own.verdict == "not shown" and "not significant after Holm correction" in own.answer
    smallest = float(re.search(r"smallest p_holm = ([0-9]+(\.[0-9]+)?)", own.evidence).group(1))
    assert smallest >= 0.05
    acc = findings[0]
    assert acc.verdict == "not shown" and "scores 0.500 on its specialty's questions vs 0.500" in acc.answer
    assert "not significant (p = 1.00)" in acc.answer


@pytest.mark.parametrize(
    ("p_holm", "verdict", "words"),
    [
        ([0.001, 0.0499, 0.01], "yes", "Yes: under every fine-tuned model"),
        ([0.001, 0.05, 0.01], "partly", "Partly: terms rose more than the control words in 2 of 3"),
        ([0.05, 0.2, 1.0], "not shown", "not significant after Holm correction in any cell"),
        ([np.nan, np.nan, np.nan], "not tested", "Not tested"),
    ],
)
def test_shift_wording_follows_p_holm(p_holm, verdict, words):
    """p_holm = 0.05 is not significant; the verdict and the sentence change together."""
    from specprobe.app.findings import shift_finding

    matrix = pd.DataFrame(
        {
            "finetune_specialty": ["A", "A", "B"],
            "term_specialty": ["A", "B", "A"],
            "mean": [0.2, 0.1, 0.3],
            "p_holm": p_holm,
        }
    )
    found = shift_finding(matrix, "x")
    assert found.verdict == verdict and words in found.answer


def test_not_shown_never_calls_a_significant_fall_not_significant():
    """Cells or models significantly *below* (p_holm < 0.05, negative difference) are not "not significant":
    the sentence says that none rose and how many fell."""
    from specprobe.app import findings as F
    from specprobe.app import findings_extra as FX

    matrix = pd.DataFrame(
        {"finetune_specialty": ["A", "A", "B"], "term_specialty": ["A", "B", "A"], "mean": [-0.2, -0.3, 0.1]}
    )
    found = F.shift_finding(matrix.assign(p_holm=[0.001, 0.01, 0.5]))
    assert found.verdict == "not shown" and "not significant" not in found.answer
    assert "no cell rose significantly above them" in found.answer and "2 of 3 fell significantly below" in found.answer
    own = pd.DataFrame({"finetune_specialty": ["A", "B"], "mean_diff": [-0.3, 0.05], "p_holm": [0.004, 0.6]})
    found = F.own_finding(own)
    assert found.verdict == "not shown" and "not significant" not in found.answer
    assert "in 1 of 2 they rose significantly less" in found.answer
    assert "not significant after Holm" in F.own_finding(own.assign(p_holm=[0.5, 0.6])).answer

    class Seen:
        def __init__(self, diff, p):
            self.diff, self.p = diff, p

        def tests(self, n_boot):
            frame = {"contrast": ["seen - unseen_same"], "mean_diff": [self.diff], "p_value": [self.p / 2]}
            return pd.DataFrame({**frame, "p_holm": [self.p]})

    found, _ = FX.seen_unseen_finding({"A": Seen(-0.4, 0.001), "B": Seen(0.1, 0.3)})
    assert found.verdict == "not shown" and "not significant" not in found.answer
    assert "in 1 of 2 they rose significantly less" in found.answer
    found, _ = FX.seen_unseen_finding({"A": Seen(0.4, 0.001), "B": Seen(0.1, 0.3)})
    assert found.verdict == "partly"


def test_shift_reading_without_any_paired_cell():
    """Terms but no control words: every minus-control cell is NaN; the reading says so instead of failing."""
    from specprobe.app.findings import shift_reading

    matrix = pd.DataFrame({"finetune_specialty": ["A"], "term_specialty": ["A"], "mean": [np.nan], "p_holm": [np.nan]})
    assert "No control words were scored" in shift_reading(matrix)


def test_shift_reading_never_calls_a_fall_a_rise():
    """Every cell below the control words: the highest is the smallest fall, not "the largest rise" (-0.100)."""
    from specprobe.app.findings import shift_reading

    matrix = pd.DataFrame(
        {"finetune_specialty": ["A", "A"], "term_specialty": ["A", "B"], "mean": [-0.3, -0.1], "p_holm": [0.01, 0.5]}
    )
    text = shift_reading(matrix)
    assert "smallest fall against the control words is -0.100 for B terms" in text and "rise" not in text
    assert "largest rise against the control words is +0.100" in shift_reading(matrix.assign(mean=[0.05, 0.1]))


def test_shift_reading_takes_its_extreme_from_the_tested_cells():
    """The heatmap text's 'largest rise +0.0529' came from a cell of one paired text, without a test, while
    the finding's range (tested cells) topped out at +0.0473."""
    from specprobe.app.findings import shift_reading

    matrix = pd.DataFrame(
        {
            "finetune_specialty": ["A", "A", "A"],
            "term_specialty": ["A", "B", "C"],
            "mean": [0.0473, 0.0529, 0.01],
            "p_holm": [0.01, np.nan, 0.4],
        }
    )
    text = shift_reading(matrix)
    assert "Among the tested cells, the largest rise against the control words is +0.0473 for A terms" in text
    untested = shift_reading(matrix.assign(p_holm=np.nan))
    assert "+0.0529 for B terms under the model fine-tuned on A (no cell could be tested)" in untested


def test_shift_yes_does_not_claim_the_cells_without_a_test():
    """All tested cells rose, one cell had no test: "every specialty" would take that cell in."""
    from specprobe.app.findings import shift_finding

    matrix = pd.DataFrame(
        {
            "finetune_specialty": ["A", "A"],
            "term_specialty": ["A", "B"],
            "mean": [0.3, np.nan],
            "p_holm": [0.01, np.nan],
        }
    )
    found = shift_finding(matrix)
    assert found.verdict == "yes" and "every specialty" not in found.answer
    assert "1 of 1 tested cells; 1 without a test" in found.answer


def test_a_cell_with_one_paired_text_is_not_said_to_have_none():
    """A cell whose terms and control words share 1 text has a mean but no test (the paired test needs 2):
    the evidence said 'no text with both terms and control words' (8 such cells in an S-MedQA run, each
    with n_pairs 1), and with every cell so, 'no control words were scored'."""
    from specprobe.app.findings import shift_finding

    matrix = pd.DataFrame(
        {
            "finetune_specialty": ["A", "A"],
            "term_specialty": ["A", "B"],
            "mean": [0.3, 0.05],
            "n_pairs": [12, 1],
            "p_holm": [0.5, np.nan],
        }
    )
    found = shift_finding(matrix)
    assert "no text with both" not in found.evidence
    assert "1 cell(s) without a test (fewer than 2 texts with both terms and control words)" in found.evidence
    untested = shift_finding(matrix.assign(n_pairs=[1, 1], p_holm=np.nan))
    assert untested.verdict == "not tested" and "no control words were scored" not in untested.answer
    assert "2 texts holding both terms and control words" in untested.answer


# -- one chart each, marks, one method section ----------------------------------------------------------
def test_each_chart_once_and_method_text_in_one_place(page):
    charts = [b for s in page.sections for b in s.blocks if isinstance(b, ChartBlock)]
    specs = [json.dumps(c.spec, sort_keys=True) for c in charts]
    assert len(specs) == len(set(specs)) and len(charts) == 4  # accuracy, minus control, own vs other, distributions
    assert len({c.title for c in charts}) == len(charts)
    titles = [s.title for s in page.sections]
    assert titles.count("How to read this") == 1 and titles[-1] == "Metadata"
    how = page.sections[titles.index("How to read this")]
    notes = how.blocks[0].items
    assert isinstance(how.blocks[0], ListBlock) and len(notes) == len(set(notes)) >= 5
    assert all(not s.notes for s in page.sections), "no section repeats the method text"
    assert all(s.reading for s in page.sections[1:-2]), "every analysis section has a plain-language reading"


def _mark(layer: dict) -> dict:
    mark = layer.get("mark", {})
    return mark if isinstance(mark, dict) else {"type": mark}


def _heatmap_cells(chart: ChartBlock) -> list[dict]:
    return [r for v in chart.spec["datasets"].values() for r in v if "significant" in r]


def test_significant_cells_are_marked_on_every_heatmap(page):
    heatmaps = [
        b
        for s in page.sections
        for b in s.blocks
        if isinstance(b, ChartBlock) and any(_mark(layer).get("type") == "rect" for layer in b.spec.get("layer", []))
    ]
    assert len(heatmaps) == 2
    for chart in heatmaps:
        cells = _heatmap_cells(chart)
        assert cells and all(c["significant"] == (c["p_holm"] is not None and c["p_holm"] < 0.05) for c in cells)
        assert any(c["significant"] for c in cells) and any(not c["significant"] for c in cells)
        marks = [layer for layer in chart.spec["layer"] if _mark(layer).get("text") == "*"]
        assert len(marks) == 1 and "significant" in json.dumps(marks[0]["transform"])
        assert "significant after Holm correction" in chart.caption


def test_page_numbers_are_readable(experiment, tmp_path):
    html = write_experiment_report(experiment, tmp_path / "report.html", n_boot=N_BOOT).read_text(encoding="utf-8")
    text = visible_text(html)
    assert not re.search(r"\d[eE][-+]\d", text), re.search(r".{40}\d[eE][-+]\d.{20}", text)
    assert "&lt;0.001" in text
    assert "0.00001" in text  # the metadata's learning rate, not 1e-05


# -- optional analyses ----------------------------------------------------------------------------------
def _seen_unseen(comp: Comparison, arm: str):
    from specprobe.probe.analyses import SeenUnseen

    df = comp.scored()
    own = df["specialties"].map(lambda s: arm in s)
    group = np.where(
        df["is_control"],
        "control",
        np.where(own, np.where(df["term"] == "seizure", "seen", "unseen_same"), "unseen_other"),
    )
    frame = df.assign(group=group, train_count=(group == "seen").astype(int))[SeenUnseen.columns]
    return SeenUnseen(frame, {}, {"adapter": arm, "trained_on": [arm]})


def _general_text():
    from specprobe.probe.analyses import GeneralTextShift

    rng = np.random.default_rng(5)
    d = rng.normal(-0.05, 0.01, 20)
    frame = pd.DataFrame(
        {
            "text_id": [f"g{i}" for i in range(20)],
            "n_tokens": 10,
            "logp_base": -40.0,
            "logp_tuned": -40.0 + 10 * d,
            "delta": 10 * d,
            "delta_per_token": d,
            "truncated": False,
        }
    )
    return GeneralTextShift(frame, {})


def _accuracy_link(comps: dict):
    """Questions whose terms rose more turned right more often (a strong rank correlation)."""
    from specprobe.probe.analyses import AccuracyLink

    rng = np.random.default_rng(9)
    rows = []
    for arm in ARMS:
        for q in range(40):
            x = float(rng.normal(0.2, 0.1))
            change = 1 if x > 0.25 else 0 if x > 0.15 else -1
            rows.append(
                {
                    "adapter": arm,
                    "item_id": f"q{q}",
                    "specialties": (arm,),
                    "n_occurrences": 3,
                    "term_delta": x,
                    "control_delta": 0.0,
                    "term_minus_control": x,
                    "correct_base": 0,
                    "correct_tuned": 0,
                    "acc_change": change,
                    "margin_base": np.nan,
                    "margin_tuned": np.nan,
                    "margin_change": np.nan,
                }
            )
    return AccuracyLink(pd.DataFrame(rows), {})


def _trajectory(arm: str, seed: int, effects=((1, 0.0), (2, 0.3), (3, 0.3))):
    """Checkpoints of one arm, (step, own-specialty effect): by default nothing at step 1, the own specialty
    ahead from step 2 on."""
    from specprobe.probe.analyses import Trajectory

    frames = [make_arm(arm, own_effect=effect, seed=seed).to_pandas().assign(step=step) for step, effect in effects]
    frame = pd.concat(frames, ignore_index=True)[Trajectory.columns]
    return Trajectory(frame, {}, {"adapter": arm, "trained_on": [arm]})


def test_optional_analyses_add_a_finding_and_a_section(experiment, tmp_path):
    comps = experiment.comparisons
    seen = {arm: _seen_unseen(comps[arm], arm) for arm in ARMS}
    _general_text().save(tmp_path / "general.json")
    _accuracy_link(comps).save(tmp_path / "link.json")
    traj = {arm: str(_trajectory(arm, i).save(tmp_path / f"traj-{arm}.json.gz")) for i, arm in enumerate(ARMS)}
    # the runner's way: paths in extras["paths"]; a keyword argument comes first
    paths = {**experiment.paths, "accuracy_link": str(tmp_path / "link.json"), "trajectory": traj}
    run = ExperimentResult(experiment.to_pandas(), experiment.metadata, {"paths": paths})
    page = build_experiment_page(
        run, n_boot=N_BOOT, seen_unseen=seen, general_text={"Neurology": str(tmp_path / "general.json")}
    )
    findings = page.sections[0].blocks[0].findings
    assert len(findings) == 7
    memo, link, traj_f, general = findings[3:]
    # seen (seizure) and unseen (stroke, epilepsy, migraine) Neurology terms rise alike
    assert "memorisation" in memo.question and memo.verdict == "not shown"
    assert "not significant after Holm correction" in memo.answer
    assert link.verdict == "yes" and "rho = +" in link.answer
    assert float(re.search(r"permutation p = ([0-9.]+\d)", link.answer).group(1)) < 0.05  # 1 / (200 + 1)
    assert traj_f.verdict == "yes" and "Neurology: ahead from step 2" in traj_f.answer
    assert general.verdict == "yes" and general.answer.startswith("Yes: general English text became less likely")
    titles = [s.title for s in page.sections]
    for title in (
        "Seen vs unseen training terms",
        "Term change vs accuracy change",
        "Over training: Neurology",
        "Over training: Cardiology",
        "General-text control: Neurology",
    ):
        assert titles.count(title) == 1, title
    assert {f.link for f in findings} <= {s.anchor for s in page.sections}
    assert all(
        s.reading for s in page.sections if s.title in ("Seen vs unseen training terms", "Over training: Neurology")
    )
    html = write_page(page, tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"\d[eE][-+]\d", visible_text(html))


def test_optional_analyses_absent_or_unknown(experiment):
    assert optional_analyses(experiment) == {}
    assert optional_analyses(experiment, {"trajectory": None, "seen_unseen": {}}) == {}
    with pytest.raises(TypeError, match="unknown optional analyses"):
        build_experiment_page(experiment, n_boot=N_BOOT, memorisation={})


# -- in a real browser --------------------------------------------------------------------------------
BROWSER_PROBES = {
    "first_section": "document.querySelector('main section').id",
    "first_block": "document.querySelector('main section').querySelector('ul.findings') !== null",
    "n_findings": "document.querySelectorAll('ul.findings > li').length",
    "chart_ids": "Array.from(document.querySelectorAll('div.chart')).map(el => el.id)",
    "chart_titles": "Array.from(document.querySelectorAll('.chart-wrap h3')).map(h => h.textContent)",
    "stars": """Object.fromEntries(Array.from(document.querySelectorAll('div.chart')).map(el =>
        [el.id, Array.from(el.querySelectorAll('svg text')).filter(t => t.textContent === '*').length]))""",
    "text": "document.body.innerText",
    "notes": "document.querySelectorAll('main .notes').length",
}


@pytest.mark.slow
def test_experiment_report_in_browser(chromium, experiment, tmp_path):  # noqa: F811
    from tests.browser import load_page

    page = build_experiment_page(experiment, n_boot=N_BOOT)
    path = write_page(page, tmp_path / "report.html")  # assigns the anchors the probes read
    expected = {
        b.anchor: sum(c["significant"] for c in _heatmap_cells(b))
        for s in page.sections
        for b in s.blocks
        if isinstance(b, ChartBlock)
    }
    run = load_page(path, screenshot=tmp_path / "report.png", probes=BROWSER_PROBES, chromium=chromium)
    assert run.status.get("finished") and run.errors == [] and run.external_requests == [], run.errors
    assert run.status["rendered"] == run.status["charts"] == 4 and run.status["failed"] == 0
    p = run.probes
    assert p["first_section"] == "findings" and p["first_block"] and p["n_findings"] == 3
    assert len(p["chart_ids"]) == len(set(p["chart_ids"])) == 4
    assert len(p["chart_titles"]) == len(set(p["chart_titles"]))
    assert p["stars"] == expected and sum(expected.values()) == 2 + 4  # accuracy 2 cells, minus control 4
    assert not re.search(r"\d[eE][-+]\d", p["text"]) and "<0.001" in p["text"]
    assert p["notes"] == 0 and p["text"].count("How to read this") == 2  # its heading and its TOC link
    assert run.screenshot is not None and run.screenshot.stat().st_size > 20_000
    keep = os.environ.get("SPECPROBE_REPORT_ARTIFACTS")
    if keep:  # e.g. CI artifacts
        os.makedirs(keep, exist_ok=True)
        for f in (path, run.screenshot):
            shutil.copy(f, keep)


def test_onset_and_general_text_wording_follow_the_numbers():
    """Onsets read as words ("never ahead", not "step never"); general text is one finding over all models."""
    from specprobe.app import findings_extra as FX
    from specprobe.reports.analyses import onset_words

    assert onset_words({"first": "never", "sustained": "never"}) == "never ahead"
    assert onset_words({"first": 4, "sustained": "never"}) == "ahead at step 4, not to the end"
    assert onset_words({"first": 4, "sustained": 8}) == "ahead first at step 4, from step 8 on"
    assert onset_words({"first": 4, "sustained": 4}) == "ahead from step 4"

    lower = _general_text()  # every text about -0.05 logp/token: the CI is below 0
    rising = type(lower)(lower.to_pandas().assign(delta_per_token=lambda f: -f["delta_per_token"]), {})
    found, _ = FX.general_text_finding({"A": lower, "B": lower}, n_boot=200)
    assert found.verdict == "yes" and "all 2 models" in found.answer
    found, reading = FX.general_text_finding({"A": lower, "B": rising}, n_boot=200)
    assert found.verdict == "partly" and "1 of 2 models" in found.answer and "A:" in reading and "B:" in reading


def test_general_text_finding_names_a_rise_and_skips_a_missing_value():
    """One model lower, one significantly higher: "Partly" says the rise too; a model without a value (NaN)
    leaves the range alone in whatever order the models come (min/max over a NaN gave "– to –")."""
    from specprobe.app import findings_extra as FX

    class Shift:
        def __init__(self, mean, lo, hi, n):
            self.r = {"mean_delta_per_token": mean, "ci_low": lo, "ci_high": hi, "n_texts": n}

        def row(self, n_boot):
            return self.r

    low, high, empty = Shift(-0.1, -0.2, -0.05, 10), Shift(0.2, 0.1, 0.3, 10), Shift(np.nan, np.nan, np.nan, 0)
    found, _ = FX.general_text_finding({"A": low, "B": high})
    assert found.verdict == "partly" and "less likely under 1 of 2 models, more likely under 1" in found.answer
    answers = {
        FX.general_text_finding(dict(order))[0].answer
        for order in ((("A", low), ("C", empty)), (("C", empty), ("A", low)))
    }
    assert answers == {"Partly: less likely under 1 of 2 models (-0.100 logp/token over 10 texts)."}


def test_trajectory_section_never_calls_a_model_ahead_that_never_was():
    """An own specialty never ahead read "ahead of the others: first at step never; from step never on"."""
    from specprobe.probe.analyses import Trajectory
    from specprobe.reports.analyses import trajectory_section
    from specprobe.reports.page import TextBlock

    def texts(effects):
        frames = [
            make_arm("Neurology", own_effect=e, seed=0).to_pandas().assign(step=i + 1) for i, e in enumerate(effects)
        ]
        frame = pd.DataFrame(pd.concat(frames, ignore_index=True)[Trajectory.columns])
        traj = Trajectory(frame, {}, {"trained_on": ["Neurology"]})
        return " ".join(b.text for b in trajectory_section(traj, n_boot=100).blocks if isinstance(b, TextBlock))

    assert texts([0.0, 0.0]) == "Own specialty (Neurology) against the others: never ahead."
    assert texts([0.3, 0.0]) == "Own specialty (Neurology) against the others: ahead at step 1, not to the end."
    assert texts([0.0, 0.3]) == "Own specialty (Neurology) against the others: ahead from step 2."


def test_accuracy_reading_counts_untested_cells_apart():
    """A cell without a base result (p_holm NaN) is neither significant nor "within chance"."""
    from specprobe.app.findings import accuracy_reading

    frame = pd.DataFrame(
        {
            "train_specialty": ["base", "A", "A", "B"],
            "accuracy": [0.5, 0.7, 0.4, 0.6],
            "vs_base": [np.nan, 0.2, -0.1, np.nan],
            "p_holm": [np.nan, 0.01, 0.3, np.nan],
        }
    )
    text = accuracy_reading(frame, pd.DataFrame())
    assert "1 cell(s) are significantly higher and 0 significantly lower" in text
    assert "the other 1 are within chance, and 1 could not be tested" in text


@pytest.mark.parametrize(
    ("term_delta", "acc_change", "reason"),
    [
        ([0.1, 0.2], [1.0, 0.0], "only 2 question(s)"),
        ([0.1, 0.2, 0.3], [0.0, 0.0, 0.0], "no question changed between right and wrong"),
        ([0.2, 0.2, 0.2], [1.0, 0.0, -1.0], "every question has the same term change"),
    ],
)
def test_accuracy_link_finding_says_why_it_was_not_tested(term_delta, acc_change, reason):
    from specprobe.app.findings_extra import accuracy_link_finding
    from specprobe.probe.analyses.accuracy_link import AccuracyLink

    n = len(term_delta)
    frame = pd.DataFrame({c: [np.nan] * n for c in AccuracyLink.columns})
    frame = frame.assign(
        adapter="A",
        item_id=[f"q{i}" for i in range(n)],
        specialties=[("X",)] * n,
        term_delta=term_delta,
        acc_change=acc_change,
    )
    found, reading = accuracy_link_finding(AccuracyLink(frame), n_boot=50)
    assert found.verdict == "not tested" and reason in found.answer and reason in reading.lower()


# -- the readings and the notebook view say what the numbers are ----------------------------------------
def test_top_movers_reading_never_calls_a_rise_a_fall():
    """When every term rose, the lowest one is the smallest rise, not "the largest fall" (and vice versa)."""
    from specprobe.app.findings import top_movers_reading

    rows = {"term": ["a", "b"], "is_control": [False, False], "finetune_specialty": ["X", "X"]}
    rising = top_movers_reading(pd.DataFrame({**rows, "mean_delta_per_token": [0.3, 0.05]}))
    assert "largest rise is 'a' (+0.300" in rising and "smallest rise 'b' (+0.0500" in rising
    assert "fall" not in rising
    falling = top_movers_reading(pd.DataFrame({**rows, "mean_delta_per_token": [-0.3, -0.05]}))
    assert "smallest fall is 'b' (-0.0500" in falling and "largest fall 'a' (-0.300" in falling
    assert "rise" not in falling


def test_layers_reading_names_the_largest_change_either_way():
    """Terms that fall through the layers: the largest change is the deepest fall, not the least negative."""
    from specprobe.app.findings import layers_reading

    frame = pd.DataFrame(
        {
            "group": "X",
            "model": ["clinical terms"] * 3 + ["control words"] * 3,
            "layer": [0, 1, 2] * 2,
            "mean_logp": [-0.01, -0.4, -0.2, 0.0, 0.9, 0.0],
        }
    )
    text = layers_reading(frame)
    assert "largest at layer 1 (-0.400 under X)" in text and "last layer (2) it averages -0.200" in text


def test_layer_curves_of_the_report_are_labelled_as_changes(experiment):
    """The report's layer curves are tuned − base of terms and control words: the legend is not titled
    "model" and the method text does not describe base and fine-tuned curves."""
    from specprobe.app.report import ReportParts, _detail_sections
    from specprobe.reports import sections as S

    class View:
        def __init__(self, shift: float):
            rng = np.random.default_rng(0)
            n = 40
            self.frame = pd.DataFrame(
                {
                    "text_id": [f"q{i % 10}" for i in range(n)],
                    "is_control": [i % 2 == 0 for i in range(n)],
                    "layer": [i // 20 for i in range(n)],
                    "delta_per_token": rng.normal(shift, 0.01, n),
                }
            )

        def wide(self):
            return self.frame

    run = tiny_experiment(experiment.root / "layers")
    run._cached("layers", lambda: {"Neurology": View(-0.3)})
    parts = ReportParts()
    _detail_sections(parts, run, N_BOOT)
    layers = parts.sections[-1]
    assert layers.notes == [S.NOTES["layers_delta"]] and "base and the fine-tuned" not in layers.notes[0]
    legend = json.dumps(layers.blocks[0].spec)
    assert '"title": "model"' not in legend and '"title": "scored words"' in legend
    assert "largest at layer" in layers.reading and "(-0.3" in layers.reading


def test_experiment_view_summary_leaves_out_the_control_words(experiment):
    """The notebook view of an experiment: "all term specialties" averages the term specialties only (the
    compare matrix also holds a 'control' row per adapter), and the caption says what an asterisk tests."""
    from specprobe.reports.views import build_view

    frames = [
        c.by_specialty(n_boot=N_BOOT).assign(finetune_specialty=name) for name, c in experiment.comparisons.items()
    ]
    matrix = pd.concat(frames, ignore_index=True)
    assert (matrix["specialty"] == "control").any()
    result = ExperimentResult(matrix, {"config": {}, "root": str(experiment.root)}, {"paths": {}})
    view = build_view(result, n_boot=N_BOOT)
    terms = pd.DataFrame(matrix[matrix["specialty"] != "control"])
    want = {
        str(k): float(np.mean(g["mean_delta_per_token"].to_numpy(dtype=float)))
        for k, g in terms.groupby("finetune_specialty")
    }
    got = dict(zip(view.table["finetune_specialty"], view.table["mean Δ/token, all term specialties"]))
    assert got.keys() == want.keys() and all(np.isclose(got[k], want[k]) for k in want)
    assert "control words" in view.caption and "p_holm < 0.05" in view.caption


def test_own_vs_other_names_the_own_specialty_as_the_terms_spell_it():
    """The fine-tuned model is matched case-insensitively ("neurology"), but shown as the data spells it."""
    from specprobe.app.report_stats import own_vs_other

    comps = {arm: make_arm(arm, own_effect=0.3, seed=i + 1) for i, arm in enumerate(ARMS)}
    table = own_vs_other(comps, {arm: arm.lower() for arm in ARMS}, n_boot=N_BOOT)
    assert list(table["own_specialty"]) == list(ARMS)


def _holed_accuracy(model: str, specialty: str) -> AccuracyMatrix:
    """`make_accuracy()` without the (model, specialty) cell."""
    acc = make_accuracy()
    frame = acc.to_pandas()
    keep = ~((frame["model"] == model) & (frame["specialty"] == specialty))
    return AccuracyMatrix(frame[keep].reset_index(drop=True), acc.metadata)


def test_report_of_a_model_without_its_own_specialty_says_not_tested(experiment, tmp_path):
    """A fine-tuned model with no accuracy on its own specialty made `contrast()` raise ("cannot convert
    float NaN to integer"), and the experiment report with it. Now the finding says "not tested" and why."""
    paths = {**experiment.paths, "accuracy": str(_holed_accuracy("Cardiology", "Cardiology").save(tmp_path / "a.json"))}
    run = ExperimentResult(experiment.to_pandas(), experiment.metadata, {"paths": paths})
    page = build_experiment_page(run, n_boot=N_BOOT)
    acc = page.sections[0].blocks[0].findings[0]
    assert acc.verdict == "not tested" and "Cardiology on Cardiology" in acc.answer
    assert "best of all 2 fine-tuned models (ties included) on 1 of 2 specialties" in acc.answer
    assert "the own model has no result on Cardiology" in acc.answer
    section = next(s for s in page.sections if s.title == "Accuracy: is the own specialty best?")
    assert "best fine-tuned model on it for: Neurology." in section.reading
    assert "has no result on it for: Cardiology" in section.reading


def test_best_among_fewer_models_is_not_called_best_of_all():
    """Another model's missing cell on a specialty: the own model was "the best model" there, counted as
    best of all; it is best of those with a result only, and the test is not run."""
    from specprobe.app.findings import accuracy_finding, accuracy_reading

    contrast = _holed_accuracy("Neurology", "Cardiology").contrast(n_perm=99)
    found = accuracy_finding(contrast, "", 2)
    assert found.verdict == "not tested" and "not significant" not in found.answer
    assert "best of all 2 fine-tuned models (ties included) on 1 of 2 specialties" in found.answer
    assert "best of only the models with a result on Cardiology (1 of 2 models have a result there)" in found.answer
    reading = accuracy_reading(pd.DataFrame({"train_specialty": ["base"], "accuracy": [0.5]}), contrast)
    assert "best fine-tuned model on it for: Neurology." in reading and "Cardiology (1 of 2" in reading
    complete = accuracy_finding(make_accuracy().contrast(n_perm=99), "", 2)
    assert "best of the 2 fine-tuned models (ties included) on 2 of 2 specialties" in complete.answer


def _link_frame(adapters, questions, specialties, x, y):
    from specprobe.probe.analyses.accuracy_link import AccuracyLink

    frame = pd.DataFrame({c: [np.nan] * len(x) for c in AccuracyLink.columns})
    return AccuracyLink(
        frame.assign(adapter=adapters, item_id=questions, specialties=specialties, term_delta=x, acc_change=y)
    )


def test_accuracy_link_finding_counts_questions_not_rows():
    """2 questions under 3 models are 6 rows: rho was computed from 2 independent questions (the finding's
    "fewer than 3" check read the row count). Now not tested, saying 2 questions."""
    from specprobe.app.findings_extra import accuracy_link_finding

    x, y = [0.1, 0.5, 0.2, 0.4, 0.3, 0.9], [0.0, 1.0, -1.0, 1.0, 0.0, 1.0]
    link = _link_frame(np.repeat(["A", "B", "C"], 2), ["q0", "q1"] * 3, [("X",)] * 6, x, y)
    found, reading = accuracy_link_finding(link, n_boot=50)
    assert found.verdict == "not tested" and "only 2 question(s)" in found.answer and "Only 2 question(s)" in reading


def test_accuracy_link_finding_without_anything_to_permute_is_not_tested():
    """One question per model × specialty: no permutation can change rho, and p was exactly 1, read as
    "not significantly correlated". Now not tested, and why."""
    from specprobe.app.findings_extra import accuracy_link_finding

    x, y = [0.1, 0.2, 0.3, 0.4, 0.5], [-1.0, 0.0, 0.0, 1.0, 1.0]
    link = _link_frame("A", [f"q{i}" for i in range(5)], [(f"S{i}",) for i in range(5)], x, y)
    found, reading = accuracy_link_finding(link, n_boot=50)
    assert found.verdict == "not tested" and "nothing to shuffle" in found.answer
    assert "p = 1" not in found.answer and "rho = +" in found.answer and "nothing to shuffle" in reading


def test_own_specialty_terms_follow_trained_on_in_the_box_plots_as_in_own_vs_other():
    """The box plots and their reading took a model's own specialty from its label only: an adapter named
    'neuro-lora' trained on Neurology had no own-specialty terms there, while own vs other used
    trained_on. Both now use `sections.own_specialties` / `is_own_term`."""
    from specprobe.app.findings import distributions_reading
    from specprobe.app.report_stats import own_vs_other
    from specprobe.reports.sections import _occurrence_groups

    comps = {"neuro-lora": make_arm("Neurology", own_effect=0.5)}
    trained_on = {"neuro-lora": "Neurology"}
    long, _, _ = _occurrence_groups(comps, "delta_per_token", trained_on)
    assert (long["group"] == "own-specialty terms").sum() == 4 * 30  # the 4 Neurology terms in 30 texts
    median = re.search(r"own-specialty terms \+([0-9.]+)", distributions_reading(comps, trained_on))
    assert median and abs(float(median.group(1)) - 0.7) < 0.01  # 0.2 + own_effect 0.5
    assert own_vs_other(comps, trained_on, n_boot=N_BOOT)["n_pairs"].tolist() == [30]
    untold, _, _ = _occurrence_groups(comps, "delta_per_token")
    assert not (untold["group"] == "own-specialty terms").any()  # the label alone names no specialty


def test_own_vs_other_leaves_out_the_terms_a_model_saw_in_training():
    """Own vs other counted the terms of the model's training questions, mostly its own specialty's: the
    "specialty knowledge" it reported was largely memorisation (60-92% of the demo's own words were seen).
    Given each model's seen terms, both sides leave them out, and the finding says so."""
    from specprobe.app.findings import own_finding
    from specprobe.app.report_stats import own_vs_other

    comps = {arm: make_arm(arm, own_effect=0.3, seed=i + 1) for i, arm in enumerate(ARMS)}
    trained = {arm: arm for arm in ARMS}
    everything = own_vs_other(comps, trained, n_boot=N_BOOT)
    seen = {"Neurology": {"seizure", "stroke"}, "Cardiology": {"chest pain"}}
    unseen = own_vs_other(comps, trained, n_boot=N_BOOT, seen=seen)
    assert list(everything["terms"]) == ["all", "all"] and list(unseen["terms"]) == ["unseen", "unseen"]
    assert list(unseen["n_own_words"]) == [n - len(seen[a]) for a, n in zip(ARMS, everything["n_own_words"])]
    assert "mixes memorisation" in own_finding(everything).evidence
    assert "left out of both sides" in own_finding(unseen).evidence and "(both unseen" in own_finding(unseen).answer


def test_own_finding_counts_the_models_it_could_not_test():
    """Models without a test were dropped from "k of n": "Yes: in 2 of 2 models" with two more untested."""
    from specprobe.app.findings import own_finding
    from specprobe.app.report_stats import own_vs_other

    comps = {arm: make_arm(arm, own_effect=0.6, seed=i + 1) for i, arm in enumerate(ARMS)}
    table = own_vs_other(comps, {arm: arm for arm in ARMS}, n_boot=N_BOOT)
    untested = table.iloc[:1].assign(finetune_specialty="Psychiatry", p_value=np.nan, p_holm=np.nan)
    found = own_finding(pd.concat([table, untested], ignore_index=True))
    assert found.verdict == "partly" and "1 more could not be tested" in found.answer
    assert "could not be tested (no text holds both groups): Psychiatry" in found.evidence


def test_a_model_ahead_at_the_last_checkpoint_only_does_not_stay_ahead():
    """One significant final checkpoint was reported as "pulls ahead and stays ahead to the last checkpoint"."""
    from specprobe.app import findings_extra as FX

    found, _ = FX.trajectory_finding({"Neurology": _trajectory("Neurology", 0, ((1, 0.0), (2, 0.0), (3, 0.3)))})
    assert found.verdict == "partly" and "ahead at the last checkpoint only" in found.answer
    assert "stays ahead" not in found.answer


def test_the_seen_unseen_finding_asks_its_own_question_and_corrects_across_models():
    """It was filed under the accuracy-link question, and counted models on each one's within-model Holm."""
    from specprobe.app import findings_extra as FX

    class Seen:
        def __init__(self, diff, p):
            self.diff, self.p = diff, p

        def tests(self, n_boot):
            frame = {"contrast": ["seen - unseen_same"], "mean_diff": [self.diff], "p_value": [self.p]}
            return pd.DataFrame({**frame, "p_holm": [min(1.0, 6 * self.p)]})

    models = {f"m{i}": Seen(0.3, 0.5) for i in range(7)} | {"m7": Seen(0.3, 0.008)}
    found, _ = FX.seen_unseen_finding(models)
    assert found.question == FX.Q_SEEN and found.verdict == "not shown"  # 8 x 0.008 = 0.064 across the models
    found, _ = FX.seen_unseen_finding(models | {"m8": Seen(0.3, float("nan"))})
    assert "could not be tested (no text holds both groups): m8" in found.evidence


def test_tables_never_show_a_cell_adjusted_over_another_family_as_the_heatmap():
    """The general-text table showed each specialty's p_holm within one model, and the trajectory's table
    within one step, beside the heatmap's Holm across every cell: 14 demo cells 'significant' in one and not
    the other. The general-text table shows means and CIs; the trajectory names its family."""
    from specprobe.reports.analyses import general_text_section, trajectory_section

    def headers(section, title):
        table = next(b for b in section.blocks if getattr(b, "title", "") == title)
        return [c.name for c in table.columns]

    comp = make_arm("Neurology", own_effect=0.3, seed=1)
    general = headers(general_text_section(_general_text(), comp, n_boot=N_BOOT), "Beside the control words")
    assert "mean_delta_per_token" in general and not {"p_value", "p_holm"} & set(general)
    steps = headers(trajectory_section(_trajectory("Neurology", 0), n_boot=N_BOOT), "Per step and term specialty")
    assert "p_holm_within_step" in steps and "p_holm" not in steps


def test_the_accuracy_finding_says_how_many_bests_are_ties():
    """Models that all score the same on a specialty were each "the best": the finding counted 5 of 7 bests
    on the small demo, 4 of them ties, and said nothing of the ties."""
    from specprobe.app.findings import accuracy_finding

    contrast = make_accuracy().contrast(n_perm=99)
    contrast.attrs["n_tied"] = 1
    assert "1 of them tied with another model" in accuracy_finding(contrast, "", 2).answer
    contrast.attrs["n_tied"] = 0
    assert "tied" not in accuracy_finding(contrast, "", 2).answer


def test_a_trajectory_of_unknown_training_specialties_is_not_called_trained_on_all():
    """Checkpoints given as a list carry no manifest: trained_on is unknown, and the finding said "every model
    was trained on all specialties"."""
    from specprobe.app import findings_extra as FX

    unknown = _trajectory("Neurology", 0)
    unknown = type(unknown)(unknown.to_pandas(), {}, {"adapter": "Neurology", "trained_on": None})
    found, _ = FX.trajectory_finding({"Neurology": unknown})
    assert found.verdict == "not tested" and "training specialties are unknown" in found.answer


def test_the_seen_unseen_finding_says_how_many_seen_terms_are_other_specialties():
    """The seen group holds every specialty's training terms (15 of Endocrinology's 25 in the demo were
    other specialties'), so seen − unseen_same also sets other specialties' terms against the own: said."""
    from specprobe.app import findings_extra as FX

    class Seen:
        trained_on = ["Cardiology"]

        def tests(self, n_boot):
            frame = {"contrast": ["seen - unseen_same"], "mean_diff": [0.1], "p_value": [0.4]}
            return pd.DataFrame({**frame, "p_holm": [0.8]})

        def seen_terms(self):
            return {"chest pain": ("Cardiology",), "seizure": ("Neurology",)}

    found, _ = FX.seen_unseen_finding({"Cardiology": Seen()})
    assert "1 of the 2 seen terms are only other specialties'" in found.evidence
