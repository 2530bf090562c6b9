"""Control words: ordinary, non-clinical words from the same texts, scored like the terms.

A clinical term's delta means little alone: fine-tuning on any medical text may raise the
probability of every word in medical contexts. Controls are common general-English words
(wordfreq Zipf frequency >= `min_zipf`), not stop words, sharing no word with any term (nor a term
word's plural or singular: "hearts" is not a control for "heart failure"), matched to the terms'
in-corpus frequency distribution. Their delta is the "domain shift" baseline.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from specprobe.probe.inputs import _match_key
from specprobe.probe.occurrences import MatchOptions, _fold

log = logging.getLogger(__name__)

_WORD = re.compile(r"(?<![\w-])[A-Za-z][a-z]{2,}(?![\w-])")


def _number_forms(word: str) -> set[str]:
    """`word` with its regular plural and singular forms (-s, -es, -ies <-> -y)."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms


def _words(text: str) -> set[str]:
    """The `\\w+` runs of `text`, case-folded as case-insensitive matching folds them."""
    return set(re.findall(r"\w+", _fold(unicodedata.normalize("NFC", text), False)))


def term_words(terms: Iterable[str]) -> set[str]:
    """The words of the terms, case-folded as matching folds them, each with its plural and singular:
    no control word may be one of these."""
    return {f for t in terms for w in _words(t) for f in _number_forms(w)}


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


def candidate_counts(texts: Iterable[str], exclude: set[str], min_zipf: float, case_sensitive: bool = False) -> Counter:
    """Occurrence counts of ordinary words across texts, leaving out the words in `exclude` (lower-cased).

    Counted as matching will find them: lower-cased, or with `case_sensitive` as written ("Patient"
    and "patient" are two words, each counted where a case-sensitive match finds it)."""
    counts: Counter = Counter(
        m.group(0) if case_sensitive else m.group(0).lower() for t in texts for m in _WORD.finditer(t)
    )
    stop = _stop_words()
    return Counter(
        {
            w: c
            for w, c in counts.items()
            if w.lower() not in stop and w.lower() not in exclude and _zipf(w.lower()) >= min_zipf
        }
    )


def choose_controls(
    texts: Sequence[str],
    term_counts: dict[str, int],
    *,
    n: int | None = None,
    min_zipf: float = 4.0,
    seed: int = 0,
    case_sensitive: bool = False,
) -> list[str]:
    """Pick control words whose in-corpus counts follow the terms' (log2-binned) count distribution.

    `n` words (default: as many as terms found, at least 10), split over the terms' bins in
    proportion to their terms (largest remainders); a bin short of candidates takes the nearest.
    `case_sensitive`: words are counted as case-sensitive matching finds them (see `candidate_counts`)."""
    found = [c for c in term_counts.values() if c > 0]
    target = n if n is not None else max(10, len(found))
    counts = candidate_counts(texts, term_words(term_counts), min_zipf, case_sensitive)
    if len(counts) < target:
        log.warning(
            "only %d candidate control word(s) in the texts for the %d wanted; all of them are used",
            len(counts),
            target,
        )
    n = min(len(counts), target)
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    by_bin: dict[int, list[str]] = defaultdict(list)
    for w, c in sorted(counts.items()):
        by_bin[int(math.log2(c))].append(w)
    wanted = Counter(int(math.log2(c)) for c in found) if found else Counter({0: n})
    chosen: list[str] = []
    for b, quota in _quotas(wanted, n, rng).items():
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
    return sorted(chosen)


def _quotas(wanted: Counter, n: int, rng: np.random.Generator) -> dict[int, int]:
    """`n` split over the bins in proportion to `wanted` (largest remainders, ties broken at random):
    the quotas sum to exactly `n`, so no bin's words are cut to make the count."""
    total = sum(wanted.values())
    exact = {b: n * k / total for b, k in sorted(wanted.items())}
    quotas = {b: math.floor(x) for b, x in exact.items()}
    tie = dict(zip(exact, rng.permutation(len(exact)).tolist(), strict=True))
    for b in sorted(exact, key=lambda b: (quotas[b] - exact[b], tie[b]))[: n - sum(quotas.values())]:
        quotas[b] += 1
    return {b: q for b, q in quotas.items() if q > 0}


def given_controls(
    words: Iterable[object], term_map: Mapping[str, object], match: MatchOptions = MatchOptions()
) -> list[str]:
    """A list of control words as given, checked: blanks dropped, and words that match the same text
    (under `match`: "Table" and "table") kept once, else each occurrence would be scored twice. A
    word that is itself a term is never scored (its occurrences are the term's), and one that shares a
    word with a term is scored only outside the term's occurrences: both are kept, with a warning."""
    words = list(words)
    given = [word for word in (str(w).strip() for w in words) if word]
    if words and not given:  # ["", " "]: not "no control words" ([] or None), which would be said so
        raise ValueError("controls: every control word given is empty; give words, or controls=None for none")
    kept: dict[str, str] = {}
    for word in given:
        kept.setdefault(_match_key(word, match), word)
    out = list(kept.values())
    if len(out) < len(given):
        log.warning("control words that match the same text were given more than once; each is scored once")
    terms = {_match_key(t, match) for t in term_map}
    shared = term_words(term_map)
    same = [w for w in out if _match_key(w, match) in terms]
    near = [w for w in out if w not in same and _words(w) & shared]
    if same:
        log.warning("control word(s) %s are also terms: their occurrences are the terms', so none is scored", same)
    if near:
        log.warning(
            "control word(s) %s share a word with a term (or its plural): they are not ordinary words of the "
            "texts, and their occurrences inside a term are not scored",
            near,
        )
    return out
