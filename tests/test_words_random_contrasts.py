"""Own vs other specialties (`report_stats.own_vs_other`, `Trajectory.own_advantage`), the trajectory's
terms-minus-control `gap()` and the seen/unseen contrasts (`SeenUnseen.tests`) take words as random too,
as `Comparison.by_specialty` does (`stats.texts_and_words_test`).

They paired texts only: with no real effect but words that move on their own, four own words that happen
to sit 0.2 above four other words are the same four words in every text, so the Wilcoxon over 20 texts
gave p ~ 2e-6 for what is a draw of words (word-level p ~ 0.3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from specprobe.app.report_stats import own_vs_other
from specprobe.probe import Comparison
from specprobe.probe.analyses import SeenUnseen, Trajectory

# each word's own shift, no group effect: a draw in which the own (seen) words sit higher by chance
OWN = {"own0": 0.5, "own1": 0.1, "own2": 0.3, "own3": -0.1}  # mean 0.2
OTHER = {"other0": 0.2, "other1": 0.0, "other2": -0.2, "other3": 0.0}  # mean 0.0
CONTROL = {"control0": 0.3, "control1": -0.1, "control2": 0.0, "control3": -0.2}  # mean 0.0
N_TEXTS = 20


def word_shift_rows(seed: int = 0) -> pd.DataFrame:
    """Every word in every text: Δ/token = the word's shift + noise (sd 0.01); own words are Cardiology
    (group seen), other words Neurology (group unseen_same), control words group control."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(N_TEXTS):
        for words, spec, group in ((OWN, ("Cardiology",), "seen"), (OTHER, ("Neurology",), "unseen_same")):
            rows += [(f"q{t}", w, spec, False, group, s + rng.normal(0, 0.01)) for w, s in words.items()]
        rows += [(f"q{t}", w, (), True, "control", s + rng.normal(0, 0.01)) for w, s in CONTROL.items()]
    df = pd.DataFrame(rows, columns=["text_id", "term", "specialties", "is_control", "group", "delta_per_token"])
    return df.assign(
        delta=df["delta_per_token"],
        n_tokens=1,
        text_specialties=[()] * len(df),
        logp_base=-5.0,
        logp_tuned=-5.0 + df["delta_per_token"],
        train_count=(df["group"] == "seen").astype(int),
    )


def as_comparison(df: pd.DataFrame) -> Comparison:
    rows = df.assign(
        surface=df["term"],
        start=0,
        end=1,
        token_logp_base=[[-5.0]] * len(df),
        token_logp_tuned=[[v] for v in df["logp_tuned"]],
        flags="",
    )
    return Comparison(pd.DataFrame(rows[Comparison.columns]), {}, {"missing": []})


def as_trajectory(df: pd.DataFrame, steps: tuple[int, ...] = (1, 2)) -> Trajectory:
    frame = pd.concat([df.assign(step=s) for s in steps], ignore_index=True)[Trajectory.columns]
    return Trajectory(pd.DataFrame(frame), {}, {"trained_on": ["Cardiology"], "adapter": "cardio"})


def assert_words_random(row: pd.Series | dict, n_a: int, n_b: int, words_a: str, words_b: str) -> None:
    """The text-level test alone (the old p_value) would call this significant; the word-level test does
    not, and p_value, the larger of the two, is not below it."""
    assert row[words_a] == n_a and row[words_b] == n_b and row["n_pairs"] == N_TEXTS
    assert row["p_text"] < 1e-3  # the old p_value
    assert row["p_word"] > 0.05 and row["p_word_min"] < 0.05  # enough words to be significant, and it is not
    assert row["p_value"] == max(row["p_text"], row["p_word"]) and row["p_value"] >= row["p_word"]


def test_own_vs_other_takes_words_as_random():
    table = own_vs_other({"cardio": as_comparison(word_shift_rows())}, {"cardio": "Cardiology"}, n_boot=50)
    row = table.iloc[0]
    assert_words_random(row, 4, 4, "n_own_words", "n_other_words")
    assert row["mean_diff"] == pytest.approx(0.2, abs=0.01) and row["p_holm"] > 0.05


def test_own_advantage_takes_words_as_random():
    traj = as_trajectory(word_shift_rows())
    table = traj.own_advantage(n_boot=50)
    for row in table.to_dict(orient="records"):
        assert_words_random(row, 4, 4, "n_own_words", "n_other_words")
    assert not bool(table["ahead"].any())
    assert traj.onset(n_boot=50) == {"first": "never", "sustained": "never"}


def test_the_trajectory_gap_takes_words_as_random():
    """All terms (mean shift 0.1) against the control words (0.0): 8 term words against 4 control words."""
    for row in as_trajectory(word_shift_rows()).gap(n_boot=50).to_dict(orient="records"):
        assert_words_random(row, 8, 4, "n_words", "n_control_words")
        assert row["p_holm"] > 0.05


def test_seen_unseen_contrasts_take_words_as_random():
    frame = word_shift_rows()[SeenUnseen.columns]
    result = SeenUnseen(pd.DataFrame(frame), {}, {"adapter": "cardio", "trained_on": ["Cardiology"]})
    tests = result.tests(n_boot=50).set_index("contrast")
    for contrast in ("seen - unseen_same", "seen - control"):
        assert_words_random(tests.loc[contrast], 4, 4, "n_words_a", "n_words_b")
    assert not (tests["p_holm"] < 0.05).any()
    assert np.isnan(tests.loc["seen - unseen_other", "p_value"])  # no unseen_other word: no test


def test_a_real_own_effect_is_still_found():
    """Every own word 0.5 above every other word: both tests reject (4 words against 4: p_word = 2/70, the
    smallest there is, as the labelling and its swap are as extreme)."""
    df = word_shift_rows()
    df = df.assign(delta_per_token=df["delta_per_token"] + 0.5 * (df["group"] == "seen"))
    row = own_vs_other({"cardio": as_comparison(df)}, {"cardio": "Cardiology"}, n_boot=50).iloc[0]
    assert row["p_value"] < 0.05 and row["p_word"] == pytest.approx(2 / 70)  # C(8, 4) labellings, exact
    assert as_trajectory(df, (1,)).onset(n_boot=50) == {"first": 1, "sustained": 1}
    seen = SeenUnseen(pd.DataFrame(df[SeenUnseen.columns]), {}, {"adapter": "cardio", "trained_on": ["Cardiology"]})
    assert seen.tests(n_boot=50).set_index("contrast").loc["seen - unseen_same", "p_value"] < 0.05
