"""Issue 12's analyses in the runner: seen_unseen, accuracy_link, trajectory and general_text run as cached
stages, are recorded in experiment.json under the names the report reads, and show in the report; a
changed `analyses` runs only the new stages; bad keys are one-line errors naming the key."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pytest

from specprobe.app.config import ANALYSES, ConfigError, demo_save_steps
from specprobe.app.experiment import ExperimentConfig, ExperimentResult, plan_steps, prepare_run, run_experiment
from specprobe.app.findings_extra import Q_GENERAL, Q_LINK, Q_SEEN, Q_TRAJECTORY

ADAPTERS = {"Cardiology", "Neurology"}
SECTIONS = ("Seen vs unseen training terms", "Term change vs accuracy change", "Over training", "General-text control")


def _config(base, out, **kw) -> ExperimentConfig:
    train = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "rank": 2, "max_length": 128, "save_steps": [1]}
    return ExperimentConfig(
        base=str(base),
        out=str(out),
        specialties=sorted(ADAPTERS),
        include_all=False,
        train=train,
        max_texts=8,
        layers=False,
        **kw,
    )


def _ran(log: list[str]) -> list[str]:
    """The stages a run's log says it ran (not skipped)."""
    return [line.split()[2] for line in log if line.startswith("[run ]")]


@pytest.mark.slow
def test_the_four_analyses_run_as_cached_stages_and_show_in_the_report(tiny_llama, tmp_path):
    base, _ = tiny_llama
    out = tmp_path / "exp"
    first = [a for a in ANALYSES if a != "general_text"]
    log1: list[str] = []
    run_experiment(_config(base, out, analyses=first), progress=False, say=log1.append)
    assert {"seen-unseen-cardiology", "trajectory-neurology", "accuracy_link"} <= set(_ran(log1))
    assert not any(name.startswith("general-text") for name in _ran(log1))
    csvs = {n: (out / n).read_bytes() for n in ("compare_matrix.csv", "accuracy_matrix.csv")}

    log2: list[str] = []  # one more analysis: only its stages run
    res = run_experiment(_config(base, out), progress=False, say=log2.append)
    assert sorted(_ran(log2)) == ["general-text-cardiology", "general-text-neurology"]
    assert {n: (out / n).read_bytes() for n in csvs} == csvs, "the analyses are additional outputs"

    paths = res.paths
    for key in ("seen_unseen", "trajectory", "general_text"):
        assert set(paths[key]) == set(paths["comparisons"]) == ADAPTERS
    assert all(p.endswith(".json.gz") for key in ("seen_unseen", "trajectory") for p in paths[key].values())
    link = ExperimentResult.load(out / "experiment.json")
    assert isinstance(link, ExperimentResult)
    import specprobe.probe.analyses  # noqa: F401  (registers the analyses' result kinds)
    from specprobe.core.results import Result

    accuracy_link = Result.load(link.paths["accuracy_link"])
    assert accuracy_link.metadata["has_margins"], "the accuracy stage keeps each question's option log-likelihoods"
    assert np.isfinite(accuracy_link.to_pandas()["margin_change"]).all()

    log3: list[str] = []
    run_experiment(_config(base, out), progress=False, say=log3.append)
    assert _ran(log3) == [], "a rerun skips every stage"

    page = html.unescape(link.report(tmp_path / "report.html").read_text(encoding="utf-8"))
    for text in (*SECTIONS, Q_SEEN, Q_LINK, Q_TRAJECTORY, Q_GENERAL):
        assert text in page, text


@pytest.mark.slow
def test_trajectory_adapters_limits_the_trajectory_stages_and_the_plan_declares_every_analysis(tiny_llama, tmp_path):
    base, _ = tiny_llama
    cfg = _config(base, tmp_path / "exp", trajectory_adapters=["Neurology"]).resolved()
    run = prepare_run(cfg, tmp_path / "exp", say=lambda s: None, remote=True)
    steps = {s.name: s for s in plan_steps(run, in_process=False, progress=False)}
    assert [n for n in steps if n.startswith("trajectory")] == ["trajectory-neurology"]
    assert steps["trajectory-neurology"].dependencies() == ["adapter-neurology", "lexicon"]
    assert steps["seen-unseen-cardiology"].dependencies() == ["adapter-cardiology", "compare-cardiology"]
    assert steps["accuracy_link"].dependencies() == ["accuracy", "compare-cardiology", "compare-neurology"]
    assert {"general-text-cardiology", "general-text-neurology", "accuracy_link"} <= set(steps["report"].dependencies())
    assert steps["general-text-neurology"].kind == "compare" and steps["seen-unseen-neurology"].kind == "report"

    cfg = _config(base, tmp_path / "exp", trajectory_adapters=["Dermatology"])
    with pytest.raises(ConfigError, match=r"^trajectory_adapters: 'Dermatology' is not an adapter.*Cardiology"):
        run_experiment(cfg, progress=False, say=lambda s: None)


def test_analysis_keys_are_checked_and_default_by_save_steps(tmp_path):
    no_snapshots = {"max_steps": 2}
    assert ExperimentConfig(train=no_snapshots).chosen_analyses() == ["seen_unseen", "accuracy_link", "general_text"]
    assert ExperimentConfig(train={"max_steps": 4, "save_steps": [2]}).chosen_analyses() == list(ANALYSES)
    assert ExperimentConfig(analyses=[]).chosen_analyses() == []
    with pytest.raises(ConfigError, match=r"analyses: 'trajectory' needs .*train.save_steps"):
        ExperimentConfig(train=no_snapshots, analyses=["trajectory"])
    p = tmp_path / "e.toml"
    p.write_text('analyses = ["seen_unseen", "trajectroy"]\n')
    with pytest.raises(ConfigError, match=r"e.toml: analyses\[1\]: must be .*seen_unseen"):
        ExperimentConfig.from_toml(p)
    p.write_text('analyses = ["trajectory"]\n[train]\nmax_steps = 3\n')
    with pytest.raises(ConfigError, match=r"e.toml: analyses: 'trajectory' needs"):
        ExperimentConfig.from_toml(p)
    p.write_text('trajectory_adapters = "Neurology"\n')
    with pytest.raises(ConfigError, match=r"trajectory_adapters: must be a list"):
        ExperimentConfig.from_toml(p)
    assert demo_save_steps(60) == [15, 30] and demo_save_steps(1) == [1] and demo_save_steps(2) == [1]


def test_accuracy_matrix_items_give_accuracy_link_its_margins():
    """An AccuracyMatrix's per-question records with option log-likelihoods: accuracy_link fills margins."""
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix, _item_outcomes
    from specprobe.probe.analyses.accuracy_link import evaluation_items

    rows = [
        {"model": m, "item_id": f"q{i}", "correct": c, "correct_norm": c, "option_logp": (lp, -1.0), "answer_index": 0}
        for m, shift in (("base", 0.0), ("cardio", 0.5))
        for i, (lp, c) in enumerate([(-2.0 + shift, False), (-0.5 + shift, True)])
    ]
    items = _item_outcomes(pd.DataFrame(rows))
    assert items["cardio"]["option_logp"] == [[-1.5, -1.0], [0.0, -1.0]] and items["cardio"]["answer_index"] == [0, 0]
    matrix = AccuracyMatrix(pd.DataFrame(columns=AccuracyMatrix.columns), {}, {"items": items})
    table = evaluation_items(matrix)
    assert list(table["option_logp"].iloc[0]) == [-2.0, -1.0] and set(table["answer_index"]) == {0}
    old = {m: {k: v for k, v in d.items() if k in ("ids", "correct", "correct_norm")} for m, d in items.items()}
    old_table = evaluation_items(AccuracyMatrix(pd.DataFrame(columns=AccuracyMatrix.columns), {}, {"items": old}))
    assert bool(old_table["option_logp"].isna().all()), "a matrix saved before keeps working, without margins"


@pytest.mark.slow
def test_compare_dtype_reaches_the_probe_and_general_text_stages(tiny_llama, tmp_path):
    """[compare] dtype (and device) are in the stage keys but were dropped: the shared model cache loaded
    the pair automatically (float32 on a CPU) and `load_pair` passed a ready pair through, so a bfloat16
    run wrote float32 numbers under a bfloat16 key (and a Ray task, loading itself, bfloat16 ones)."""
    from specprobe import load_result

    base, _ = tiny_llama
    cfg = _config(base, tmp_path / "exp", analyses=["general_text"])
    cfg.specialties, cfg.compare = ["Cardiology"], {"dtype": "bfloat16"}
    res = run_experiment(cfg, progress=False, say=lambda s: None)
    assert res.comparisons["Cardiology"].metadata["dtype"] == "bfloat16"
    shift = load_result(res.extras["paths"]["general_text"]["Cardiology"])
    assert shift.metadata["dtype"] == "bfloat16"


def test_a_loaded_pair_refuses_a_device_or_dtype_it_was_not_loaded_with(tiny_llama):
    from specprobe.probe import ModelPair, compare

    pair = ModelPair.load(str(tiny_llama[0]), str(tiny_llama[1]))
    terms, texts = {"seizure": ["Neurology"]}, ["The patient had a seizure."]
    with pytest.raises(ValueError, match=r"loaded on cpu in float32, but dtype='bfloat16' asks otherwise"):
        compare(pair, terms=terms, texts=texts, dtype="bfloat16", controls=None, progress=False)
    same = compare(pair, terms=terms, texts=texts, dtype="float32", device="cpu", controls=None, progress=False)
    assert same.metadata["dtype"] == "float32"
