"""Which terms an adapter saw in training: the seen / unseen-same / unseen-other partition.

Kept apart from the result class so the rule is one small pure function (property-tested: every term
lands in exactly one group, and "seen" is exactly "occurs in a training question").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from specprobe.probe.occurrences import MatchOptions, TextIndex, find_spans

SEEN, UNSEEN_SAME, UNSEEN_OTHER, CONTROL = "seen", "unseen_same", "unseen_other", "control"
GROUPS = (SEEN, UNSEEN_SAME, UNSEEN_OTHER)


def count_in_texts(terms: Iterable[str], texts: Sequence[str], match: MatchOptions) -> dict[str, int]:
    """Occurrences of each term in `texts`, found exactly as `compare` finds them (same matcher)."""
    terms = list(dict.fromkeys(terms))
    counts = dict.fromkeys(terms, 0)
    for text in texts:
        index = TextIndex(text, match)
        for term in terms:
            if index.may_occur(term):
                counts[term] += len(find_spans(text, term, match))
    return counts


def assign_group(specialties: Sequence[str], train_count: int, trained: Sequence[str] | None) -> str:
    """The group of one term: "seen" if it occurs in the training questions; else "unseen_same" if one
    of its specialties is one the adapter was trained on (any specialty, for an adapter trained on all);
    else "unseen_other" (including terms without a specialty). Specialty names compare case-insensitively."""
    if train_count > 0:
        return SEEN
    own = {s.lower() for s in specialties}
    if own and (trained is None or own & {t.lower() for t in trained}):
        return UNSEEN_SAME
    return UNSEEN_OTHER


def assign_groups(
    term_specialties: Mapping[str, Sequence[str]], train_counts: Mapping[str, int], trained: Sequence[str] | None
) -> dict[str, str]:
    """`assign_group` for every term of `term_specialties` (a term missing from `train_counts` counts 0)."""
    return {t: assign_group(specs, train_counts.get(t, 0), trained) for t, specs in term_specialties.items()}
