"""Property tests (hypothesis) of the occurrence finder: it agrees with a plain regex reference under
NFC (combining marks, case folding, ASCII look-alikes), maps spans back to the text as given, the
word pre-check never rules out a match, and the tokens located for a span cover every character
of it, for every tokenizer convention (also one that normalises to NFC, as Qwen2's does)."""

from __future__ import annotations

import re
import time
import unicodedata
from functools import cache

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from specprobe.core.encoding import encode, nfc_map  # noqa: E402
from specprobe.probe.occurrences import MatchOptions, TextIndex, find_spans, token_span  # noqa: E402

ALL_OPTIONS = [MatchOptions(c, w, f) for c in (False, True) for w in (False, True) for f in (False, True)]

# "clusters": a starter and its marks, spelled composed or decomposed; no two clusters compose together
LETTERS = list("abeiksoqABEIKSOQ")
CLUSTERS = LETTERS + [
    "\u00e9",
    "e\u0301",
    "\u00c9",
    "E\u0301",  # é É, composed and decomposed
    "\u00f6",
    "o\u0308",
    "\u00d6",
    "O\u0308",  # ö Ö
    "\u1ec7",
    "e\u0323\u0302",
    "e\u0302\u0323",  # ệ: precomposed, and two mark orders NFC reorders
    "q\u0307",
    "s\u0323",  # q̇ has no precomposed form; ṣ has
    "\u212a",
    "\u017f",
    "\u0130",
    "\u0131",  # Kelvin sign (NFC: K), long s, dotted I, dotless i
    "\u00df",
    "\u1e9e",  # ß and capital ẞ (one character each; re folds them together)
    "\u1100\u1161",
    "\uac00",
    "\u0b47\u0b3e",  # starters that compose: Hangul jamo (가) and an Oriya vowel
    "'",
    "\u2019",  # the two apostrophes, which match each other
]
SEPARATORS = [" ", "  ", "-", ",", "\n", ". "]
# every mark (Unicode category M) the clusters can produce, in any normalisation form
MARKS = re.escape(
    "".join(
        sorted(
            {
                ch
                for c in CLUSTERS
                for form in ("NFC", "NFD")
                for ch in unicodedata.normalize(form, c)
                if unicodedata.category(ch).startswith("M")
            }
        )
    )
)


def _reference(clusters: list[str], term: str, opts: MatchOptions) -> list[tuple[int, int]]:
    """Written independently of the implementation: NFC each cluster, search the joined NFC text (its
    typographic apostrophes made ASCII, as the term's) with one regex, and map each match back through the cluster table (per character where a cluster is
    already NFC, to the whole cluster where NFC changed it)."""
    norm_to_orig: list[tuple[int, int]] = []  # per NFC character: its original (start, end)
    orig_pos = 0
    for c in clusters:
        n = unicodedata.normalize("NFC", c)
        if n == c:
            norm_to_orig += [(orig_pos + k, orig_pos + k + 1) for k in range(len(c))]
        else:
            norm_to_orig += [(orig_pos, orig_pos + len(c))] * len(n)
        orig_pos += len(c)
    apostrophe = str.maketrans({"\u2019": "'"})  # one character for another: the spans stay
    norm = "".join(unicodedata.normalize("NFC", c) for c in clusters).translate(apostrophe)
    term = unicodedata.normalize("NFC", term.strip()).translate(apostrophe)
    if not term:
        return []
    words = term.split()
    body = r"\s+".join(map(re.escape, words)) if opts.flexible_whitespace and len(words) > 1 else re.escape(term)
    if opts.whole_word:
        body = rf"(?<![\w{MARKS}]){body}(?![\w{MARKS}])"
    pattern = re.compile(body, 0 if opts.case_sensitive else re.IGNORECASE)
    return [(norm_to_orig[m.start()][0], norm_to_orig[m.end() - 1][1]) for m in pattern.finditer(norm)]


@st.composite
def texts_and_terms(draw):
    pieces = draw(st.lists(st.one_of(st.sampled_from(CLUSTERS), st.sampled_from(SEPARATORS)), max_size=40))
    clusters: list[str] = []
    for p in pieces:  # separators are split into one-character clusters
        clusters += list(p) if p in SEPARATORS else [p]
    if clusters and draw(st.booleans()):  # a term taken from the text, respelled
        i = draw(st.integers(0, len(clusters) - 1))
        j = draw(st.integers(i + 1, min(len(clusters), i + 8)))
        term = "".join(clusters[i:j])
        form = draw(st.sampled_from(["NFC", "NFD", "same"]))
        if form != "same":
            term = unicodedata.normalize(form, term)
        if draw(st.booleans()):
            term = term.swapcase()
    else:
        term = "".join(draw(st.lists(st.sampled_from(CLUSTERS + [" "]), min_size=1, max_size=5)))
    return clusters, term


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_and_terms())
def test_find_spans_matches_the_regex_reference_under_nfc(case):
    clusters, term = case
    text = "".join(clusters)
    for opts in ALL_OPTIONS:
        got = find_spans(text, term, opts)
        assert got == _reference(clusters, term, opts), (text, term, opts)
        if got:  # the pre-check never rules out a term that occurs
            assert TextIndex(text, opts).may_occur(term), (text, term, opts)
        for s, e in got:  # a span of the text as given; a whole word never splits a cluster
            assert 0 <= s < e <= len(text)
            if opts.whole_word:
                assert not unicodedata.combining(text[s]) and (e == len(text) or not unicodedata.combining(text[e]))


@settings(max_examples=300, deadline=None)
@given(texts_and_terms())
@example((list("Crohn\u2019s disease"), "crohn's disease"))
def test_either_apostrophe_in_a_term_finds_the_same_spans(case):
    """S-MedQA writes "Crohn\u2019s disease" where the lexicon's term may be "crohn's disease": each form of
    the term finds both forms in a text."""
    clusters, term = case
    text = "".join(clusters)
    respelled = term.translate(str.maketrans({"'": "\u2019", "\u2019": "'"}))
    for opts in ALL_OPTIONS:
        assert find_spans(text, respelled, opts) == find_spans(text, term, opts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(CLUSTERS + SEPARATORS + ["\u3131\u314f", "\u1100\u1161", "\u0b47\u0b3e"]), max_size=30))
def test_nfc_map_is_nfc_and_maps_back(pieces):
    """The NFC view equals unicodedata's NFC (Hangul jamo and Oriya vowel signs, which compose across
    starters, included), and each NFC character maps back to an original span that, normalised,
    contains it."""
    text = "".join(pieces)
    view = nfc_map(text)
    assert view.text == unicodedata.normalize("NFC", text)
    if view.identity:
        assert view.text is text
        return
    for i, ch in enumerate(view.text):
        s, e = view.to_original(i, i + 1)
        assert 0 <= s < e <= len(text) and ch in unicodedata.normalize("NFC", text[s:e])
        assert view.to_original(0, i + 1)[1] >= e  # ends are monotone


def _nfc_tokenizer():
    from tokenizers import normalizers

    from specprobe.testing.tiny_models import train_tokenizer

    tok = train_tokenizer("qwen2")
    tok.backend_tokenizer.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json has
    return tok


@cache
def _tokenizer(kind: str):
    from specprobe.testing.tiny_models import train_tokenizer

    return _nfc_tokenizer() if kind == "qwen2-nfc" else train_tokenizer(kind)


def _linear_token_span(enc, start: int, end: int):
    hits = [k for k, o in enumerate(enc.offsets) if o is not None and o[0] < end and o[1] > start and o[1] > o[0]]
    return (hits[0], hits[-1]) if hits else None


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "qwen2-nfc"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=texts_and_terms())
def test_tokens_cover_every_character_of_every_occurrence(kind, case):
    """encode() never fails on these texts (the NFC-normalising tokenizer included), and the tokens
    located for each occurrence (by bisection) are those a linear scan finds and cover every
    non-space character of it."""
    clusters, term = case
    text = "The " + "".join(clusters)
    enc = encode(_tokenizer(kind), text, label="text 'prop'")
    for s, e in find_spans(text, term, MatchOptions(whole_word=False)):
        span = token_span(enc, text, s, e)
        assert span is not None
        assert (span.first, span.last) == _linear_token_span(enc, s, e)
        covered = set()
        for k in range(span.first, span.last + 1):
            if enc.offsets[k] is not None:
                covered.update(range(*enc.offsets[k]))
        missing = [i for i in range(s, e) if i not in covered and not text[i].isspace()]
        assert not missing, (kind, text, term, (s, e), enc.offsets)


def test_nfc_tokenizer_offsets_cover_decomposed_marks():
    """The Qwen2-style NFC tokenizer reports a composed character's offsets on its base letter only;
    the marks are given to that character's tokens, so the term is found and fully covered."""
    tok = _tokenizer("qwen2-nfc")
    text = "Sjo\u0308gren syndrome and cafe\u0301."
    enc = encode(tok, text)
    assert enc.offsets_source == "tokenizer"
    spans = find_spans(text, "Sj\u00f6gren syndrome")
    assert spans == [(0, 17)]
    assert find_spans(text, "caf\u00e9") == [(22, 27)]
    assert find_spans(text, "Sjo") == []  # not a whole word: the mark continues it
    hangul = "The \u1100\u1161 and \u0b47\u0b3e."  # gaps that are not marks: rebuilt by NFC-aware decoding
    enc = encode(tok, hangul)
    assert enc.offsets_source == "decode"
    assert [hangul[a:b] for a, b in (o for o in enc.offsets if o)][2] == "\u1100\u1161"


def test_long_text_occurrences_located_fast(capsys):
    """A 220 KB text: every occurrence located (text search + token bisection) well under a second."""
    from specprobe.probe.prepare import locate
    from specprobe.terms.datasets import TextRecord

    tok = _tokenizer("llama")
    unit = "The patient had a seizure and myocardial infarction; Sjo\u0308gren syndrome was excluded. "
    text = unit * (220_000 // len(unit))
    enc = encode(tok, text)
    terms = {"seizure": ("Neurology",), "myocardial infarction": ("Cardiology",), "Sj\u00f6gren syndrome": ()}
    t0 = time.perf_counter()
    occs = locate([TextRecord("long", text)], [enc], terms, False, MatchOptions())
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n220 KB text ({len(enc)} tokens): {len(occs)} occurrences located in {elapsed:.3f} s")
    assert len(occs) == 3 * (220_000 // len(unit))
    assert all(o.first >= 1 and not o.flags for o in occs)
    assert elapsed < 5.0  # about 0.3-0.5 s here; the linear scan took minutes


@pytest.mark.parametrize("sign", ["\u0f73", "\u0f75", "\u0f81"])
def test_nfc_map_keeps_spans_around_starters_that_decompose_to_marks(sign):
    """Tibetan U+0F73/U+0F75/U+0F81 are starters (combining class 0) that decompose to marks, and NFC composes
    a later mark across them: the text did not split into independent pieces, and every match in it was
    mapped to the whole text (a term scored as the sum over all its tokens)."""
    text = f"The patient has heart failure. Note: A{sign}\u0323 (a Tibetan sign)."
    view = nfc_map(text)
    assert view.text == unicodedata.normalize("NFC", text)
    start = view.text.index("heart failure")
    assert view.to_original(start, start + len("heart failure")) == (16, 29)
