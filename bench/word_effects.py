"""`python -m bench.word_effects`: calibration of the terms-vs-control test when words are random too.

Simulates one `Comparison.by_specialty` cell many times (numpy; no model) and runs it through the
same `stats.texts_and_words_test` the table uses. An occurrence's delta is

    word shift (sd `word`) + text shift (sd `text`, every word of the text) + text x class shift
    (sd `text`, the terms of the text only) + noise (sd 1) [+ `effect` for the terms],

each word in 1 + Poisson(3.5) random texts (as in the demo: a median of 4 texts per word), sometimes
twice. Prints, per size and scenario, the share of p < 0.05 for the old test (texts only: p_text),
the word-level test alone (p_word) and the new combined p_value; then, under the null, how often the
minus_control 95% CI covers the true difference (0), resampling texts only (old) or texts and words
(new, the one reported), how often it excludes 0 while p_value >= 0.05, and its median width against
the old; docs/method.md section 8 quotes them.
"""

from __future__ import annotations

import argparse
from typing import cast

import numpy as np
import pandas as pd

from specprobe.probe.stats import texts_and_words_test, two_way_bootstrap_ci

# (texts, term words, control words): demo-like (40 texts; the demo's control words are as many as the
# terms found, at least 10: 10 and 60 here) and S-MedQA-like (100 and 400 texts, 138 control words)
SIZES = ((40, 5, 60), (40, 15, 60), (40, 15, 10), (100, 15, 138), (400, 30, 138))
SCENARIOS = {  # name: (word sd, text sd)
    "1 occurrence noise only": (0.0, 0.0),
    "2 word shifts": (1.0, 0.0),
    "3 text shifts": (0.0, 1.0),
    "4 word and text shifts": (1.0, 1.0),
}


def simulate_cell(
    rng: np.random.Generator, n_texts: int, n_terms: int, n_controls: int, word: float, text: float, effect: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One cell's term and control occurrences (columns text_id, term, delta_per_token)."""
    n_words = n_terms + n_controls
    is_term = np.arange(n_words) < n_terms
    shift = rng.normal(0, word, n_words) + effect * is_term
    main, inter = rng.normal(0, text, n_texts), rng.normal(0, text, n_texts)
    texts, words = [], []
    for w in range(n_words):
        where = rng.choice(n_texts, min(n_texts, 1 + rng.poisson(3.5)), replace=False)
        reps = 1 + rng.poisson(0.15, where.size)
        texts.append(np.repeat(where, reps))
        words.append(np.full(int(reps.sum()), w))
    t, w = np.concatenate(texts), np.concatenate(words)
    delta = shift[w] + main[t] + inter[t] * is_term[w] + rng.normal(0, 1, t.size)
    frame = pd.DataFrame({"text_id": t, "term": w, "delta_per_token": delta})
    return cast(pd.DataFrame, frame[is_term[w]]), cast(pd.DataFrame, frame[~is_term[w]])


def rejection_rates(
    n_texts: int,
    n_terms: int,
    n_controls: int,
    word: float,
    text: float,
    *,
    effect: float = 0.0,
    reps: int = 400,
    seed: int = 0,
    n_perm: int = 999,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Share of `reps` simulated cells with p < alpha: old (p_text), p_word, new (p_value)."""
    rng = np.random.default_rng(seed)
    ps = []
    for i in range(reps):
        terms, controls = simulate_cell(rng, n_texts, n_terms, n_controls, word, text, effect)
        test = texts_and_words_test(terms, controls, "delta_per_token", n_boot=1, seed=i, n_perm=n_perm)
        ps.append((test["p_text"], test["p_word"], test["p_value"]))
    p = np.asarray(ps, dtype=float)
    rate = (np.nan_to_num(p, nan=1.0) < alpha).mean(axis=0)
    return {"old": float(rate[0]), "p_word": float(rate[1]), "new": float(rate[2])}


def ci_coverage(
    n_texts: int,
    n_terms: int,
    n_controls: int,
    word: float,
    text: float,
    *,
    reps: int = 400,
    seed: int = 0,
    n_boot: int = 2000,
    n_perm: int = 999,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Under the null (true difference 0), over `reps` simulated cells: the share of minus_control CIs that
    hold 0, old (texts resampled) and new (texts and words, `texts_and_words_test`'s); the share that
    exclude 0 while p_value >= alpha (a CI at odds with the test); the new CI's median width / the old's.
    A term shift moves every draw alike, so the coverage of a true shift is the same as of 0 here."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(reps):
        terms, controls = simulate_cell(rng, n_texts, n_terms, n_controls, word, text)
        test = texts_and_words_test(terms, controls, "delta_per_token", n_boot=n_boot, seed=i, n_perm=n_perm)
        old = two_way_bootstrap_ci(terms, controls, "delta_per_token", n_boot=n_boot, seed=i, words=False)
        new = (test["ci_low"], test["ci_high"])
        rows.append([*old, *new, test["p_value"]])
    lo_old, hi_old, lo_new, hi_new, p = np.asarray(rows, dtype=float).T
    holds = {"old": (lo_old <= 0) & (hi_old >= 0), "new": (lo_new <= 0) & (hi_new >= 0)}
    not_rejected = ~(np.nan_to_num(p, nan=1.0) < alpha)
    return {
        "old": float(holds["old"].mean()),
        "new": float(holds["new"].mean()),
        "old_at_odds": float((~holds["old"] & not_rejected).mean()),
        "new_at_odds": float((~holds["new"] & not_rejected).mean()),
        "width_ratio": float(np.nanmedian((hi_new - lo_new) / (hi_old - lo_old))),
    }


def print_rates(reps: int, effect: float) -> None:
    """The null false-positive rates and the power for a term shift, old test and new."""
    print(f"{'texts':>5} {'terms':>5} {'ctrl':>4}  {'scenario':<26} {'effect':>6} {'old':>6} {'p_word':>6} {'new':>6}")
    for n_texts, n_terms, n_controls in SIZES:
        for name, (word, text) in SCENARIOS.items():
            for eff in (0.0, effect):
                r = rejection_rates(n_texts, n_terms, n_controls, word, text, effect=eff, reps=reps)
                print(
                    f"{n_texts:>5} {n_terms:>5} {n_controls:>4}  {name:<26} {eff:>6.2f} "
                    f"{r['old']:>6.3f} {r['p_word']:>6.3f} {r['new']:>6.3f}",
                    flush=True,
                )


def print_coverage(reps: int, n_boot: int) -> None:
    """The minus_control CI's null coverage, old (texts resampled) and new (texts and words)."""
    head = f"{'texts':>5} {'terms':>5} {'ctrl':>4}  {'scenario':<26} {'cov old':>7} {'cov new':>7}"
    print(f"{head} {'odds old':>8} {'odds new':>8} {'width':>5}")
    for n_texts, n_terms, n_controls in SIZES:
        for name, (word, text) in SCENARIOS.items():
            r = ci_coverage(n_texts, n_terms, n_controls, word, text, reps=reps, n_boot=n_boot)
            print(
                f"{n_texts:>5} {n_terms:>5} {n_controls:>4}  {name:<26} {r['old']:>7.3f} {r['new']:>7.3f} "
                f"{r['old_at_odds']:>8.3f} {r['new_at_odds']:>8.3f} {r['width_ratio']:>5.2f}",
                flush=True,
            )


def main() -> None:
    """Print the test's calibration table, the CI's coverage table, or both."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--effect", type=float, default=0.5, help="term shift for the power rows (noise sd 1)")
    ap.add_argument("--table", choices=("rates", "coverage", "both"), default="both")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws per CI (coverage table)")
    args = ap.parse_args()
    if args.table in ("rates", "both"):
        print_rates(args.reps, args.effect)
    if args.table in ("coverage", "both"):
        print_coverage(args.reps, args.n_boot)


if __name__ == "__main__":
    main()
