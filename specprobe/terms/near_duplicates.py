"""Near-duplicate questions: variants of one question (case, spacing, punctuation, option order, a few
words) that the experiment's split keeps on one side, so that no copy is trained on while another is tested.

Two questions are near-duplicates when the word 5-grams of their `duplicate_text` (question and sorted
options, case-folded, punctuation and spacing dropped) have a Jaccard similarity of at least
`SHINGLE_JACCARD`; near-duplicates of near-duplicates form one group (the connected components of the
pairs, scipy.sparse.csgraph). The pairs are found
with a prefix filter over an inverted index (shingles ordered rarest first), never by comparing all pairs.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

from specprobe.terms.records import QARecord, check_same_answer, normalized_question, split_identity

#: the least Jaccard similarity of two questions' word 5-gram sets that makes them near-duplicates
SHINGLE_JACCARD = Fraction(9, 10)
SHINGLE_WORDS = 5


class _PunctuationToSpace(dict):
    """A `str.translate` table mapping each Unicode punctuation mark to a space, filled as characters come."""

    def __missing__(self, code: int) -> int:
        self[code] = ord(" ") if unicodedata.category(chr(code)).startswith("P") else code
        return self[code]


_PUNCTUATION_TO_SPACE = _PunctuationToSpace()


def normalized_words(text: str) -> str:
    """`normalized_question` with every punctuation mark a space: "LH/FSH" and "LH: FSH" compare equal
    (symbols such as "<", "+" and "%" are kept, where they change what a question says)."""
    return " ".join(normalized_question(text).translate(_PUNCTUATION_TO_SPACE).split())


def duplicate_text(record: QARecord) -> str:
    """What near-duplicates are compared on: the normalised question, then its normalised options sorted
    (so that the same question with its options reordered is the same text)."""
    options = sorted(normalized_words(o) for o in record.options)
    return " ".join([normalized_words(record.question), *options]).strip()


def shingles(text: str, n: int = SHINGLE_WORDS) -> frozenset[str]:
    """The word n-grams of `text`, each as its words joined by spaces (a shorter text is one n-gram of all
    its words; an empty one has none)."""
    words = text.split()
    return frozenset(" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))) if words else frozenset()


def similar_pairs(sets: Sequence[frozenset], threshold: Fraction = SHINGLE_JACCARD) -> list[tuple[int, int]]:
    """The pairs (i < j) of `sets` with Jaccard similarity >= `threshold` (> 0), found by prefix filtering:
    with elements ordered rarest first, two such sets share an element among the first
    |s| - ceil(threshold * |s|) + 1 of each, so only sets sharing one of those are compared."""
    frequency = Counter(x for s in sets for x in s)
    order = sorted(frequency, key=frequency.__getitem__)  # rarest first; ties in first-seen order
    rank = {x: i for i, x in enumerate(order)}
    index: dict[int, list[int]] = {}
    pairs = []
    for j, s in enumerate(sets):
        prefix = sorted(rank[x] for x in s)[: len(s) - math.ceil(threshold * len(s)) + 1] if s else []
        candidates = {i for x in prefix for i in index.get(x, ())}
        pairs += [(i, j) for i in sorted(candidates) if _at_least(sets[i], s, threshold)]
        for x in prefix:
            index.setdefault(x, []).append(j)
    return pairs


def _at_least(a: frozenset, b: frozenset, threshold: Fraction) -> bool:
    """Whether the Jaccard similarity of two non-empty sets is at least `threshold` (exact, in integers)."""
    common = len(a & b)
    return common * threshold.denominator >= threshold.numerator * (len(a) + len(b) - common)


def near_duplicate_groups(records: Sequence[QARecord], source: str = "data") -> list[list[int]]:
    """The groups (indices into `records`, ascending, in order of their first index) of two or more
    near-duplicate questions. Two of one group with the same `duplicate_text` but different answers are a
    `DataError` naming `source` (`check_same_answer`: a question has one gold answer); near-duplicates that
    differ in words may differ in answer ("most" / "least likely"), and are only kept together."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    texts = [duplicate_text(r) for r in records]
    pairs = similar_pairs([shingles(t) for t in texts])
    for i, j in pairs:
        if texts[i] == texts[j] and normalized_words(records[i].answer) != normalized_words(records[j].answer):
            check_same_answer(records[i], records[j], source)
    if not pairs:
        return []
    rows, cols = zip(*pairs, strict=True)
    graph = coo_matrix(([True] * len(pairs), (rows, cols)), shape=(len(records), len(records)))
    _, label = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(label.tolist()):
        groups.setdefault(g, []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def split_units(questions: Sequence[QARecord], source: str = "data") -> dict[int, list[int]]:
    """The questions a split ranks (indices into `questions`), each with the questions that go to its side,
    itself first: a near-duplicate group (`near_duplicate_groups`) is ranked once, as its member with the
    least `split_identity` (whatever the rows' order), in that member's specialties; the others follow it."""
    units = {i: [i] for i in range(len(questions))}
    for group in near_duplicate_groups(questions, source):
        lead = min(group, key=lambda i: (split_identity(questions[i]), questions[i].context_text()))
        for i in group:
            del units[i]
        units[lead] = [lead, *(i for i in group if i != lead)]
    return units
