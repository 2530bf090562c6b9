"""accuracy_link on constructed cases with known answers, on real evaluate/compare outputs, and the rank
statistics against scipy."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.finetune.evaluation import MCEvaluation
from specprobe.probe.analyses import AccuracyLink, accuracy_link, accuracy_link_files
from specprobe.probe.analyses.rank_stats import _draw_stats, permutation_p, rank_correlation, spearman
from specprobe.probe.comparison import Comparison
from specprobe.terms.datasets import QARecord

N = 60
SPECS = ("Cardiology", "Neurology")


def mc_rows(model: str, ids, margins, specs) -> list[dict]:
    """MCEvaluation rows whose correct option (index 0) leads the best other option by `margin`, so
    correctness and margin agree as in a real evaluation."""
    rows = []
    for i, m, s in zip(ids, margins, specs):
        logp = (float(m) - 5.0, -5.0, -6.0)
        pred = int(np.argmax(logp))
        rows.append(
            {
                "model": model,
                "item_id": i,
                "specialties": (s,),
                "n_options": 3,
                "answer_index": 0,
                "option_logp": logp,
                "option_n_tokens": (1, 1, 1),
                "option_n_chars": (4, 4, 4),
                "pred": pred,
                "pred_norm": pred,
                "correct": pred == 0,
                "correct_norm": pred == 0,
                "truncated": False,
                "straddles": False,
            }
        )
    return rows


def evaluation(ids, base_margin, tuned_margin, specs, tuned: str = "tuned") -> MCEvaluation:
    rows = mc_rows("base", ids, base_margin, specs) + mc_rows(tuned, ids, tuned_margin, specs)
    return MCEvaluation(pd.DataFrame(rows, columns=MCEvaluation.columns))


def comparison(ids, deltas, specs) -> Comparison:
    """Two term occurrences per text around `delta` (mean = delta) and one control word."""
    rows = []
    for i, d, s in zip(ids, deltas, specs):
        for term, value, ctrl in (("t1", d - 0.01, False), ("t2", d + 0.01, False), ("word", 0.0, True)):
            rows.append(
                {
                    "text_id": i,
                    "term": term,
                    "specialties": ("control",) if ctrl else (s,),
                    "text_specialties": (s,),
                    "surface": term,
                    "start": 0,
                    "end": 2,
                    "n_tokens": 1,
                    "logp_base": -5.0,
                    "logp_tuned": -5.0 + value,
                    "delta": value,
                    "delta_per_token": value,
                    "token_logp_base": [-5.0],
                    "token_logp_tuned": [-5.0 + value],
                    "is_control": ctrl,
                    "flags": "",
                }
            )
    return Comparison(pd.DataFrame(rows, columns=Comparison.columns))


def case(seed: int, link):
    """N questions, two specialties; the tuned margin = base margin + link(delta, rng)."""
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(N)]
    specs = [SPECS[i % 2] for i in range(N)]
    deltas = rng.normal(0, 1, N)
    base = rng.normal(-0.5, 0.3, N)
    return ids, specs, deltas, base, base + link(deltas, rng)


def row(table: pd.DataFrame, outcome: str, specialty: str = "ALL") -> pd.Series:
    return table[(table["outcome"] == outcome) & (table["specialty"] == specialty)].iloc[0]


def test_monotone_link_gives_rho_one_and_small_p():
    ids, specs, d, base, tuned = case(0, lambda d, rng: 2 * d + d**3)
    link = accuracy_link(evaluation(ids, base, tuned, specs), comparison(ids, d, specs))
    frame = link.to_pandas()
    assert len(frame) == N and np.allclose(frame["term_delta"], d) and np.allclose(frame["margin_change"], tuned - base)
    table = link.correlations()
    margin, acc = row(table, "margin_change"), row(table, "acc_change")
    assert margin["rho"] == pytest.approx(1.0) and margin["ci_low"] == pytest.approx(1.0)
    acc_change = (tuned > 0).astype(float) - (base > 0).astype(float)
    assert acc["rho"] == pytest.approx(float(np.asarray(scipy.stats.spearmanr(d, acc_change)[0])))
    for r in (margin, acc):
        assert r["ci_low"] > 0 and r["p_perm"] < 0.01 and r["n_questions"] == N
    per_spec = table[(table["outcome"] == "margin_change") & (table["specialty"] != "ALL")]
    assert set(per_spec["specialty"]) == set(SPECS) and (per_spec["p_holm"] >= per_spec["p_perm"]).all()


def test_unrelated_link_ci_covers_zero():
    ids, specs, d, base, tuned = case(1, lambda d, rng: rng.normal(0, 1, d.size))
    table = accuracy_link(evaluation(ids, base, tuned, specs), comparison(ids, d, specs)).correlations()
    for outcome in ("acc_change", "margin_change"):
        r = row(table, outcome)
        assert r["ci_low"] < 0 < r["ci_high"], outcome


def test_between_specialty_difference_is_not_significant_within():
    """Cardiology questions have high deltas and gains, Neurology low ones, but within a specialty delta
    and change are unrelated: the pooled rho is large, the within-specialty permutation test is not."""
    rng = np.random.default_rng(2)
    ids = [f"q{i}" for i in range(N)]
    specs = [SPECS[i % 2] for i in range(N)]
    shift = np.array([1.0 if s == SPECS[0] else -1.0 for s in specs])
    d = shift + rng.normal(0, 0.1, N)
    base = np.zeros(N) - 0.5
    tuned = base + shift + rng.normal(0, 1, N)
    link = accuracy_link(evaluation(ids, base, tuned, specs), comparison(ids, d, specs))
    r = row(link.correlations(), "margin_change")
    assert r["rho"] > 0.3 and r["ci_low"] > 0
    assert r["p_perm"] > 0.05
    frame = link.to_pandas()
    assert permutation_p(frame["term_delta"], frame["margin_change"], None, n_perm=2000, seed=0) < 0.01


def test_accuracy_matrix_and_several_adapters(tmp_path):
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix

    ids, specs, d, base, tuned = case(3, lambda d, rng: 2 * d)
    items = {
        "base": {"ids": ids, "correct": list(base > 0), "correct_norm": list(base > 0)},
        "cardio": {"ids": ids, "correct": list(tuned > 0), "correct_norm": list(tuned > 0)},
        "neuro": {"ids": ids, "correct": list(base > 0), "correct_norm": list(base > 0)},
    }
    matrix = AccuracyMatrix(pd.DataFrame(columns=AccuracyMatrix.columns), {}, {"items": items})
    comps = {"cardio": comparison(ids, d, specs), "neuro": comparison(ids, -d, specs)}
    link = accuracy_link(matrix, comps)
    frame = link.to_pandas()
    assert list(frame["adapter"].unique()) == ["cardio", "neuro"] and bool(frame["margin_change"].isna().all())
    assert not link.metadata["has_margins"]
    table = link.correlations()
    assert list(table["outcome"].unique()) == ["acc_change"]  # no margins in an AccuracyMatrix
    assert row(table, "acc_change")["n_questions"] == N and row(table, "acc_change")["n"] == 2 * N
    with pytest.raises(ValueError, match="no model of that name"):
        accuracy_link(matrix, {"derm": comps["cardio"]})
    # the same from files, on the command line (NAME=PATH per adapter)
    from specprobe.app.cli import main

    argv = ["analyze", "accuracy-link", "--evaluation", str(matrix.save(tmp_path / "accuracy.json"))]
    for name, comp in comps.items():
        argv += ["--comparison", f"{name}={comp.save(tmp_path / f'{name}.json.gz')}"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    saved = pd.read_csv(tmp_path / "out" / "accuracy_link_correlations.csv")
    assert np.allclose(saved["rho"], link.correlations()["rho"], equal_nan=True)
    assert main([*argv[:-1], str(tmp_path / "cardio.json.gz"), "--out", str(tmp_path / "o2")]) == 2  # unnamed
    with pytest.raises(ValueError, match="pass tuned="):
        accuracy_link(matrix, comps["cardio"])


def test_norm_uses_acc_norm_and_per_character_margins_or_nothing():
    """norm=True: the accuracy change is of acc_norm (also from an AccuracyMatrix's stored outcomes), the
    margin is per character, and where the options' lengths are unknown there is no margin (not the raw
    one under a per-character label); without acc_norm outcomes norm=True is refused."""
    from specprobe.finetune.accuracy_matrix import AccuracyMatrix

    ids, specs, d, base, tuned = case(5, lambda d, rng: 2 * d)
    acc_norm_change = (tuned > 0).astype(float) - (base > 0).astype(float)
    items = {  # acc always right, acc_norm follows the margins: the two accuracies differ
        "base": {"ids": ids, "correct": [True] * N, "correct_norm": list(base > 0)},
        "cardio": {"ids": ids, "correct": [True] * N, "correct_norm": list(tuned > 0)},
    }
    matrix = AccuracyMatrix(pd.DataFrame(columns=AccuracyMatrix.columns), {}, {"items": items})
    comps = {"cardio": comparison(ids, d, specs)}
    assert (accuracy_link(matrix, comps).to_pandas()["acc_change"] == 0).all()
    frame = accuracy_link(matrix, comps, norm=True).to_pandas()
    np.testing.assert_array_equal(frame["acc_change"], acc_norm_change)
    older = {m: {k: v for k, v in o.items() if k != "correct_norm"} for m, o in items.items()}
    with pytest.raises(ValueError, match="correct_norm"):
        accuracy_link(AccuracyMatrix(matrix.to_pandas(), {}, {"items": older}), comps, norm=True)

    table = evaluation(ids, base, tuned, specs).to_pandas()  # every option 4 characters long
    link = accuracy_link(table, comps["cardio"], norm=True)
    np.testing.assert_allclose(link.to_pandas()["margin_change"], (tuned - base) / 4)
    bare = accuracy_link(table.drop(columns=["option_n_chars"]), comps["cardio"], norm=True)
    assert bare.to_pandas()["margin_change"].isna().all() and not bare.metadata["has_margins"]
    assert accuracy_link(table.drop(columns=["option_n_chars"]), comps["cardio"]).metadata["has_margins"]


def test_margin_counts_a_copy_of_the_answer_as_correct_not_as_a_rival():
    """Options ('x', 'y', 'x') with answer 'x': the margin is the best copy of 'x' against 'y', not the
    first 'x' against its own copy (which gave at most 0); without `answer_indices` (older results) the
    first copy alone is the answer."""
    from specprobe.probe.analyses.accuracy_link import _margin

    row = {"option_logp": (-3.0, -2.0, -1.0), "answer_index": 0, "answer_indices": (0, 2)}
    assert _margin(row, norm=False) == pytest.approx(1.0)
    assert _margin({**row, "answer_indices": None}, norm=False) == pytest.approx(-2.0)
    assert np.isnan(_margin({**row, "answer_indices": (0, 1, 2)}, norm=False))  # no wrong option
    chars = {**row, "option_n_chars": (1, 2, 4)}
    assert _margin(chars, norm=True) == pytest.approx(-0.25 - (-1.0))


def test_evaluation_and_matrix_store_every_copy_of_the_answer(tiny_llama):
    """A real evaluation records `answer_indices`, the accuracy matrix's items keep them."""
    from specprobe.finetune import evaluate
    from specprobe.finetune.accuracy_matrix import _model_outcomes

    records = [QARecord("d", "Which drug?", ("aspirin", "heparin", "aspirin"), "aspirin", ("Cardiology",))]
    table = evaluate(str(tiny_llama[0]), records, progress=False).to_pandas()
    assert tuple(table["answer_indices"].iloc[0]) == (0, 2)
    assert _model_outcomes(table)["answer_indices"] == [[0, 2]]


def test_specialties_read_by_pandas_as_arrays_are_kept():
    ids, specs, d, base, tuned = case(6, lambda d, rng: d)
    table = evaluation(ids, base, tuned, specs).to_pandas()
    table["specialties"] = table["specialties"].map(np.asarray)  # as pd.read_parquet gives them
    frame = accuracy_link(table, comparison(ids, d, specs)).to_pandas()
    assert list(frame["specialties"]) == [(s,) for s in specs]


def test_roundtrip_report_files_and_cli(tmp_path):
    from specprobe.app.cli import main

    ids, specs, d, base, tuned = case(4, lambda d, rng: d)
    eval_path = evaluation(ids, base, tuned, specs).save(tmp_path / "eval.json")
    comp_path = comparison(ids, d, specs).save(tmp_path / "comparison.json.gz")
    link = accuracy_link_files(eval_path, comp_path, tmp_path / "link.json.gz")
    again = AccuracyLink.load(tmp_path / "link.json.gz")
    assert isinstance(again, AccuracyLink) and again.to_pandas().equals(link.to_pandas())
    assert again.correlations().equals(link.correlations())
    html = again.report(tmp_path / "link.html").read_text()
    assert "Term change vs accuracy change" in html
    out = tmp_path / "out"
    argv = ["analyze", "accuracy-link", "--evaluation", str(eval_path), "--comparison", str(comp_path)]
    assert main([*argv, "--out", str(out), "--report"]) == 0
    saved = pd.read_csv(out / "accuracy_link_correlations.csv")
    assert np.allclose(saved["rho"], link.correlations()["rho"], equal_nan=True)
    assert (out / "accuracy_link.html").exists()
    assert main([*argv, "--out", str(out)]) == 2  # outputs exist, no --overwrite


def test_real_evaluate_and_compare_join(tiny_llama):
    """The ids of `evaluate` and of `compare` on the same questions meet: every question is joined."""
    from specprobe.finetune import evaluate
    from specprobe.probe import compare

    base, adapter = tiny_llama
    options = ("aspirin", "heparin", "insulin")
    recs = [
        QARecord(
            f"q{i}", f"Which drug for patient {i} with chest pain or seizure?", options, options[i % 3], (SPECS[i % 2],)
        )
        for i in range(8)
    ]
    ev = evaluate(str(base), recs, str(adapter), progress=False)
    comp = compare(
        str(base),
        str(adapter),
        {"seizure": ["Neurology"], "aspirin": ["Cardiology"]},
        recs,
        controls=None,
        progress=False,
    )
    link = accuracy_link(ev, comp)
    frame = link.to_pandas()
    assert sorted(frame["item_id"]) == sorted(r.id for r in recs)
    assert link.extras["unmatched"]["tuned"] == {"comparison_only": 0, "evaluation_only": 0}
    per_q = {(m, i): float(c) for m, i, c in ev.to_pandas()[["model", "item_id", "correct"]].itertuples(index=False)}
    for item, change in zip(frame["item_id"], frame["acc_change"]):
        assert change == per_q[("tuned", item)] - per_q[("base", item)]


def test_a_comparison_of_other_models_than_the_evaluations_is_refused(tiny_llama, tmp_path):
    """Joined per question, the evaluation's model and its comparison must be the same weights: adapter
    B's evaluation with adapter A's comparison, or a comparison on another base, is refused (it was
    joined, 8 of 8 questions); the right pairs, also of every model of an accuracy matrix, are joined."""
    from specprobe.finetune import evaluate, matrix
    from specprobe.probe import compare
    from specprobe.testing.tiny_models import build_tiny_adapter

    base, adapter_a = tiny_llama
    adapter_b = build_tiny_adapter(base, "llama", tmp_path / "B", seed=2)
    options = ("aspirin", "heparin", "insulin")
    recs = [
        QARecord(f"q{i}", f"Which drug for patient {i} with seizure?", options, options[i % 3], (SPECS[i % 2],))
        for i in range(6)
    ]
    terms = {"seizure": ["Neurology"], "aspirin": ["Cardiology"]}
    comp_a, comp_b = (
        compare(str(base), str(a), terms, recs, controls=None, progress=False) for a in (adapter_a, adapter_b)
    )
    ev_b = evaluate(str(base), recs, str(adapter_b), progress=False)
    assert len(accuracy_link(ev_b, comp_b).to_pandas()) == len(recs)
    with pytest.raises(ValueError, match=r"comparison given for 'tuned' was made with adapter weights .* not the same"):
        accuracy_link(ev_b, comp_a)
    other_base = Comparison(comp_b.to_pandas(), {**comp_b.metadata, "base_weights_sha256": "f" * 64}, comp_b.extras)
    with pytest.raises(ValueError, match="base weights sha256 ffffffffffff"):
        accuracy_link(ev_b, other_base)
    both = matrix(str(base), {"A": str(adapter_a), "B": str(adapter_b)}, recs, progress=False)
    assert len(accuracy_link(both, {"A": comp_a, "B": comp_b}).to_pandas()) == 2 * len(recs)
    for swapped in ({"A": comp_b}, {"B": comp_a}):  # the first model's adapter is recorded, the other's read
        with pytest.raises(ValueError, match=f"given for '{next(iter(swapped))}'"):
            accuracy_link(both, swapped)


values = st.lists(st.integers(-3, 3), min_size=3, max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_spearman_matches_scipy(data):
    x = data.draw(values)
    y = data.draw(st.lists(st.integers(-3, 3), min_size=len(x), max_size=len(x)))
    expected = float(np.asarray(scipy.stats.spearmanr(x, y)[0]))
    ours = spearman(x, y)
    assert (np.isnan(ours) and np.isnan(expected)) or ours == pytest.approx(expected)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(3, 8), st.integers(1, 3), st.integers(0, 10_000))
def test_vectorised_bootstrap_equals_the_loop(k, size, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 4, k * size).astype(float), rng.normal(size=k * size)
    members = [np.arange(c * size, (c + 1) * size) for c in range(k)]
    draws = rng.integers(0, k, size=(5, k))
    loop = [
        spearman(x[np.concatenate([members[c] for c in d])], y[np.concatenate([members[c] for c in d])]) for d in draws
    ]
    np.testing.assert_allclose(_draw_stats(x, y, members, draws), loop, equal_nan=True)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(5, 40))
def test_permutation_p_is_a_valid_p(seed, n):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    res = rank_correlation(x, y, strata=rng.integers(0, 3, n), n_boot=50, n_perm=50, seed=seed)
    assert 1 / 51 <= res.p_value <= 1 and res.ci_low <= res.ci_high and res.n == n


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(6, 40), st.booleans())
def test_rank_correlation_does_not_depend_on_the_order_of_the_rows(seed, n, clustered):
    """Same pairs, strata and clusters in another row order: the same rho, CI and permutation p (the
    seeded shuffles were drawn over the rows as given, so a reordering moved p by Monte-Carlo error)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, n).astype(float)  # ties in x and y
    y = 0.3 * x + rng.integers(-2, 3, n)
    strata = rng.integers(0, 3, n)
    clusters = rng.integers(0, max(3, n // 2), n) if clustered else None
    order = rng.permutation(n)
    kw = dict(n_boot=200, n_perm=200, seed=seed)
    a = rank_correlation(x, y, strata=strata, clusters=clusters, **kw)
    b = rank_correlation(
        x[order], y[order], strata=strata[order], clusters=None if clusters is None else clusters[order], **kw
    )
    np.testing.assert_allclose(
        [b.rho, b.ci_low, b.ci_high, b.p_value], [a.rho, a.ci_low, a.ci_high, a.p_value], rtol=1e-12, equal_nan=True
    )
    if a.n_clusters >= 3:  # (with fewer, rank_correlation gives no rho and no p)
        moved = None if clusters is None else clusters[order]
        got = permutation_p(x[order], y[order], strata[order], clusters=moved, n_perm=200, seed=seed)
        np.testing.assert_equal(got, a.p_value)


def test_a_specialty_listed_twice_counts_a_question_once():
    """A QA file may list a question's specialty twice (the accuracy table counts it once): its rows must
    enter that specialty's correlation once, not as a duplicated pair the permutation then splits."""
    ids, specs, d, base, tuned = case(7, lambda d, rng: d + rng.normal(0, 1, d.size))
    once = evaluation(ids, base, tuned, specs).to_pandas()
    twice = once.assign(specialties=[(s[0], s[0]) if i % 3 == 0 else s for i, s in enumerate(once["specialties"])])
    comp = comparison(ids, d, specs)
    want = accuracy_link(once, comp).correlations(n_boot=200, n_perm=200)
    got = accuracy_link(twice, comp).correlations(n_boot=200, n_perm=200)
    assert (got["n"].to_numpy() == want["n"].to_numpy()).all()
    cols = ["rho", "ci_low", "ci_high", "p_perm", "p_holm"]
    np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float), equal_nan=True)
    # and the ALL strata are specialty sets: ("A", "B") and ("B", "A") are one stratum
    both = once.assign(specialties=[tuple(SPECS[:: 1 if i % 2 else -1]) for i in range(len(once))])
    flat = once.assign(specialties=[SPECS] * len(once))
    pair = [row(accuracy_link(t, comp).correlations(n_boot=200, n_perm=200), "margin_change") for t in (both, flat)]
    assert (pair[0]["rho"], pair[0]["p_perm"]) == (pair[1]["rho"], pair[1]["p_perm"])


def test_no_permutation_possible_gives_no_p_not_p_one():
    """Every stratum a single row, or constant in x or in y: every permutation gives the observed rho, and
    p was exactly 1 ("no association") for a test that could not be run. Now NaN, and the table says why."""
    x, y, pairs = np.arange(6.0), np.array([0.0, 1, 1, 2, 3, 5]), np.array([0, 0, 1, 1, 2, 2])
    assert np.isnan(permutation_p(x, y, np.arange(6), n_perm=200, seed=0))  # one row a stratum
    assert np.isnan(permutation_p(pairs, y, pairs, n_perm=200, seed=0))  # x constant within each stratum
    assert np.isnan(permutation_p(x, pairs, pairs, n_perm=200, seed=0))  # y constant within each stratum
    assert 0 < permutation_p(x, y, pairs, n_perm=200, seed=0) <= 1  # one stratum varying in both is enough
    res = rank_correlation(x, y, strata=np.arange(6), n_boot=200, n_perm=200)
    assert res.rho == pytest.approx(scipy.stats.spearmanr(x, y)[0]) and np.isnan(res.p_value)
    # one question per adapter x specialty in an AccuracyLink: the note says so, Holm leaves it out
    frame = pd.DataFrame({c: [np.nan] * 6 for c in AccuracyLink.columns}).assign(
        adapter="A",
        item_id=[f"q{i}" for i in range(6)],
        specialties=[(f"S{i}",) for i in range(6)],
        term_delta=x,
        acc_change=y,
    )
    table = AccuracyLink(frame).correlations(["acc_change"], n_boot=100, n_perm=100)
    all_row = row(table, "acc_change")
    assert np.isfinite(all_row["rho"]) and np.isnan(all_row["p_perm"]) and "no permutation test" in all_row["note"]


def test_rho_needs_three_questions_not_three_rows():
    """The question is the unit (its rows under several adapters are one cluster): 2 questions under 3
    adapters are 6 rows, and rho was computed (with a CI that is NaN for want of clusters); now NaN."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=6), rng.normal(size=6)
    questions = np.array(["q0", "q1"] * 3)
    assert np.isfinite(spearman(x, y))
    res = rank_correlation(x, y, clusters=questions, strata=np.repeat([0, 1, 2], 2), n_boot=100, n_perm=100)
    assert np.isnan(res.rho) and np.isnan(res.p_value) and res.n == 6 and res.n_clusters == 2
    frame = pd.DataFrame({c: [np.nan] * 6 for c in AccuracyLink.columns}).assign(
        adapter=np.repeat(["A", "B", "C"], 2), item_id=questions, specialties=[("S",)] * 6, term_delta=x, acc_change=y
    )
    r = row(AccuracyLink(frame).correlations(["acc_change"], n_boot=100, n_perm=100), "acc_change")
    assert np.isnan(r["rho"]) and r["n"] == 6 and r["n_questions"] == 2 and "only 2 question(s)" in r["note"]


def test_inputs_given_the_other_way_round_name_the_file_and_what_it_holds(tmp_path, capsys):
    from specprobe.app.cli import main

    ids, specs, d, base, tuned = case(5, lambda d, rng: d)
    ev = evaluation(ids, base, tuned, specs).save(tmp_path / "eval.json")
    comp = comparison(ids, d, specs).save(tmp_path / "comparison.json.gz")
    cases = [
        # was: "the evaluation table has no column 'model' (columns: [16 names])"
        (comp, comp, r"the evaluation file \S*comparison\.json\.gz holds a saved Comparison result \(kind "
         r"'comparison'\), not an evaluation \(an MCEvaluation .*\); swapped with the comparison\?"),
        # was: "comparison must be a Comparison (or its path, or its table with text_id and delta_per_token)"
        (ev, ev, r"the comparison file \S*eval\.json holds a saved MCEvaluation result \(kind 'mc_evaluation'\), "
         r"not a Comparison .*; swapped with the evaluation\?"),
        (comp, ev, r"the evaluation file \S*comparison\.json\.gz holds a saved Comparison"),
    ]  # fmt: skip
    for evaluation_path, comparison_path, message in cases:
        out = tmp_path / "out"
        argv = ["analyze", "accuracy-link", "--evaluation", str(evaluation_path), "--comparison", str(comparison_path)]
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), err
        assert not out.exists()
    # in Python: the objects themselves, and a result of a third kind (no "swapped")
    with pytest.raises(ValueError, match=r"^the evaluation is a Comparison result .*swapped with the comparison\?$"):
        accuracy_link(Comparison.load(comp), Comparison.load(comp))
    link = accuracy_link(ev, comp).save(tmp_path / "link.json.gz")
    with pytest.raises(ValueError, match=r"link\.json\.gz holds a saved AccuracyLink result \(kind 'accuracy_link'\), "
                       r"not a Comparison \(comparison\.json\.gz from `specprobe compare`\)$"):  # fmt: skip
        accuracy_link(ev, link)


def stop_csv_writing_after_the_header(monkeypatch) -> None:
    """pandas fails while writing a CSV's rows, as a full disk (or a kill) would stop it."""
    from pandas.io.formats.csvs import CSVFormatter

    def fail(self) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CSVFormatter, "_save_body", fail)


def test_an_interrupted_rerun_leaves_the_csv_of_the_last_run(tmp_path, monkeypatch, capsys):
    from specprobe.app.cli import main

    ids, specs, d, base, tuned = case(6, lambda d, rng: d)
    ev = evaluation(ids, base, tuned, specs).save(tmp_path / "eval.json")
    comp = comparison(ids, d, specs).save(tmp_path / "comparison.json.gz")
    out = tmp_path / "out"
    argv = ["analyze", "accuracy-link", "--evaluation", str(ev), "--comparison", str(comp), "--out", str(out)]
    assert main(argv) == 0
    before = (out / "accuracy_link_correlations.csv").read_bytes()
    stop_csv_writing_after_the_header(monkeypatch)
    assert main([*argv, "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    # was: the CSV written in place, left holding its header only
    assert (out / "accuracy_link_correlations.csv").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left behind


def _near_copies(rng, n_questions: int, n_adapters: int, x, y) -> pd.DataFrame:
    """An AccuracyLink table of `n_questions` questions under `n_adapters` nearly identical adapters."""
    noise = lambda: rng.normal(0, 0.01, n_questions * n_adapters)  # noqa: E731
    return pd.DataFrame({c: [np.nan] * (n_questions * n_adapters) for c in AccuracyLink.columns}).assign(
        adapter=np.repeat([f"A{a}" for a in range(n_adapters)], n_questions),
        item_id=[f"q{i}" for i in range(n_questions)] * n_adapters,
        specialties=[("S",)] * (n_questions * n_adapters),
        term_delta=np.tile(x, n_adapters) + noise(),
        margin_change=np.tile(y, n_adapters) + noise(),
    )


def test_a_question_under_several_adapters_is_one_unit_of_the_permutation_test():
    """The test shuffled each adapter's rows independently, so 3 questions under 4 nearly identical
    adapters gave p = 0.004 (p_holm 0.028 in a real run): a question's rows moved as 4 independent
    units. They move together now: with 3 questions only 6 orders exist, and p cannot be below ~1/3."""
    rng = np.random.default_rng(0)
    link = AccuracyLink(_near_copies(rng, 3, 4, np.arange(3.0), np.arange(3.0)))
    table = link.correlations(["margin_change"], n_boot=200, n_perm=2000)
    for spec in ("S", "ALL"):
        r = table[table["specialty"] == spec].iloc[0]
        assert r["rho"] > 0.8 and r["n_questions"] == 3
        assert r["p_perm"] > 0.25, spec


def test_permutation_p_holds_its_level_with_several_adapters():
    """Under the null (a question's delta unrelated to its change, both shared by 4 nearly identical
    adapters), p < 0.05 in about 5% of studies, not a third of them as with rows shuffled per adapter."""
    rng = np.random.default_rng(1)
    p = []
    for _ in range(80):
        frame = _near_copies(rng, 10, 4, rng.normal(size=10), rng.normal(size=10))
        est = rank_correlation(
            frame["term_delta"],
            frame["margin_change"],
            clusters=frame["item_id"],
            slots=frame["adapter"],
            n_boot=20,
            n_perm=200,
            seed=0,
        )
        p.append(est.p_value)
    assert np.mean(np.array(p) < 0.05) <= 0.12
