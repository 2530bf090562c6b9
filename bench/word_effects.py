"""`python -m bench.word_effects`: calibration of the terms-vs-control test when words are random too.

Simulates one `Comparison.by_specialty` cell many times (numpy; no model) and runs it through the
same `stats.texts_and_words_test` the table uses. An occurrence's delta is

    word shift (sd `word`) + text shift (sd `text`, every word of the text) + text x class shift
    (sd `text`, the terms of the text only) + noise (sd 1) [+ `effect` for the terms],

each word in 1 + Poisson(3.5) random texts (as in the demo: a median of 4 texts per word), sometimes
twice. Prints, per size and scenario, the share of p < 0.05 for the old test (texts only: p_text),
the word-level test alone (p_word) and the new combined p_value; docs/method.md section 8 quotes them.
"""

from __future__ import annotations

import argparse
from typing import cast

import numpy as np
import pandas as pd

from specprobe.probe.stats import texts_and_words_test

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


def main() -> None:
    """Print the null false-positive rates and the power for a term shift, old test and new."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--effect", type=float, default=0.5, help="term shift for the power rows (noise sd 1)")
    args = ap.parse_args()
    print(f"{'texts':>5} {'terms':>5} {'ctrl':>4}  {'scenario':<26} {'effect':>6} {'old':>6} {'p_word':>6} {'new':>6}")
    for n_texts, n_terms, n_controls in SIZES:
        for name, (word, text) in SCENARIOS.items():
            for effect in (0.0, args.effect):
                r = rejection_rates(n_texts, n_terms, n_controls, word, text, effect=effect, reps=args.reps)
                print(
                    f"{n_texts:>5} {n_terms:>5} {n_controls:>4}  {name:<26} {effect:>6.2f} "
                    f"{r['old']:>6.3f} {r['p_word']:>6.3f} {r['new']:>6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
