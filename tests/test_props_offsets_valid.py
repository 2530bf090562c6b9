"""`offsets_look_valid` sweeps the gaps between spans instead of marking every character: the same verdict
as the character-by-character definition, for any text and any offsets (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.core.encoding import _whitespace_around, offsets_look_valid


def by_characters(text: str, offsets: list, start: int = 0) -> bool:
    """The definition: in range, non-zero width unless beside whitespace, monotone starts, and every
    non-space character from `start` on inside some span."""
    covered = [False] * len(text)
    last_start = -1
    for span in offsets:
        if span is None:
            continue
        s, e = span
        if not (0 <= s <= e <= len(text)) or s < last_start:
            return False
        if s == e and not _whitespace_around(text, s):
            return False
        last_start = s
        for i in range(s, e):
            covered[i] = True
    return all(c or ch.isspace() for c, ch in zip(covered[start:], text[start:]))


texts = st.text(alphabet="ab \n\t.é", max_size=24)


@st.composite
def cases(draw):
    text = draw(texts)
    n = len(text)
    spans = draw(
        st.lists(
            st.one_of(st.none(), st.tuples(st.integers(-1, n + 1), st.integers(-1, n + 1))),
            max_size=12,
        )
    )
    if draw(st.booleans()):  # often a plausible tokenization: sorted, mostly in range
        spans = sorted((s for s in spans if s is not None), key=lambda t: t[0])
        spans = [(a, max(a, b)) for a, b in spans]
    return text, spans, draw(st.integers(0, n))


@settings(max_examples=2000, deadline=None)
@given(cases())
def test_the_sweep_agrees_with_the_definition(case):
    text, spans, start = case
    assert offsets_look_valid(text, spans, start) == by_characters(text, spans, start)


def test_a_real_tokenization_is_valid_and_a_gap_over_a_letter_is_not():
    text = "Chest pain, then a seizure."
    words = [(0, 5), (5, 10), (10, 11), (11, 16), (16, 18), (18, 26), (26, 27)]
    assert offsets_look_valid(text, words)
    assert not offsets_look_valid(text, [w for w in words if w != (18, 26)])
    assert offsets_look_valid(text, [None, *words[1:]], start=5)  # the characters before start: a special token
