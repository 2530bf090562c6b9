"""Control words: ordinary, non-clinical words from the same texts, scored like the terms.

A clinical term's delta means little alone: fine-tuning on any medical text may raise the
probability of every word in medical contexts. Controls are common general-English words
(wordfreq Zipf frequency >= `min_zipf`), not stop words, sharing no word with any term, matched
to the terms' in-corpus frequency distribution. Their delta is the "domain shift" baseline.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"(?<![\w-])[A-Za-z][a-z]{2,}(?![\w-])")


def _stop_words() -> set[str]:
    try:
        from spacy.lang.en.stop_words import STOP_WORDS

        return set(STOP_WORDS)
    except ImportError:  # pragma: no cover - spacy is a dependency
        return set()


def _zipf(word: str) -> float:
    try:
        from wordfreq import zipf_frequency
    except ImportError:  # pragma: no cover - wordfreq is a dependency
        return 5.0
    return zipf_frequency(word, "en")


def candidate_counts(texts: Iterable[str], term_words: set[str], min_zipf: float) -> Counter:
    """Occurrence counts of ordinary words across texts (lower-cased)."""
    counts: Counter = Counter(m.group(0).lower() for t in texts for m in _WORD.finditer(t))
    stop = _stop_words()
    return Counter({w: c for w, c in counts.items() if w not in stop and w not in term_words and _zipf(w) >= min_zipf})


def choose_controls(
    texts: Sequence[str],
    term_counts: dict[str, int],
    *,
    n: int | None = None,
    min_zipf: float = 4.0,
    seed: int = 0,
) -> list[str]:
    """Pick control words whose in-corpus counts follow the terms' (log2-binned) count distribution."""
    term_words = {w.lower() for t in term_counts for w in re.findall(r"\w+", t)}
    counts = candidate_counts(texts, term_words, min_zipf)
    if not counts:
        return []
    found = [c for c in term_counts.values() if c > 0]
    n = n if n is not None else min(len(counts), max(10, len(found)))
    rng = np.random.default_rng(seed)
    by_bin: dict[int, list[str]] = defaultdict(list)
    for w, c in sorted(counts.items()):
        by_bin[int(math.log2(c))].append(w)
    wanted = Counter(int(math.log2(c)) for c in found) if found else Counter({0: n})
    total = sum(wanted.values())
    chosen: list[str] = []
    for b, k in sorted(wanted.items()):
        quota = max(1, round(n * k / total))
        # nearest non-empty bins first
        for nb in sorted(by_bin, key=lambda x: (abs(x - b), x)):
            pool = [w for w in by_bin[nb] if w not in chosen]
            if not pool:
                continue
            take = rng.choice(len(pool), size=min(quota, len(pool)), replace=False)
            chosen.extend(pool[i] for i in sorted(take))
            quota -= len(take)
            if quota <= 0:
                break
    return sorted(chosen[:n]) if len(chosen) > n else sorted(chosen)
