"""Locate every occurrence of a term in a text by character span, then map spans to token positions.

Terms are found in the text itself (regex, case-insensitive whole-word by default) and mapped to
tokens through the fast tokenizer's offsets: never by re-tokenizing the term on its own, which
misses occurrences whose tokenization depends on context.

Matching is under Unicode NFC: the term and the text are both normalised to NFC ("Sjo\\u0308gren",
decomposed, matches "Sjögren"), and the spans found are mapped back to the text as given (a span
covers every original character its match stands for). On text that is already NFC, as nearly
all text is, this is a no-op. Case-insensitive matching is Python `re.IGNORECASE` on the NFC forms
(simple per-character case folding: "ß" does not match "ss"). A whole word is not preceded or
followed by a word character (`\\w`) or a combining mark, so "Sjo" does not match inside
"Sjo\\u0308gren" even where no precomposed character exists. An apostrophe matches either form, ASCII
"'" or typographic "\\u2019" ("Crohn\\u2019s disease" is an occurrence of "Crohn's disease"), as the
lexicon counts them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

from specprobe.core.encoding import EncodedText, NFCText, nfc_map
from specprobe.terms.extract.normalise import APOSTROPHES

# flags attached to an occurrence
STRADDLES = "straddles_boundary"  # a token covers characters outside the term
NO_BOS_AT_START = "unconditioned_start"  # first token of the text and no BOS: not scorable
TRUNCATED_CONTEXT = "truncated_context"  # scored in a sliding window that dropped earlier text


@dataclass(frozen=True)
class MatchOptions:
    """How terms are matched in texts."""

    case_sensitive: bool = False
    whole_word: bool = True
    flexible_whitespace: bool = True  # "heart  failure" matches "heart failure"


@lru_cache(maxsize=16)
def _nfc_text(text: str) -> NFCText:
    """The NFC view of a text, cached: locate() searches one text for many terms in a row."""
    return nfc_map(text)


@lru_cache(maxsize=65536)
def _nfc_term(term: str) -> str:
    return unicodedata.normalize("NFC", term.strip())


# a term's apostrophe matches any of `APOSTROPHES` in a text (`re.escape` leaves them as they are)
_ANY_APOSTROPHE = str.maketrans({a: f"[{APOSTROPHES}]" for a in APOSTROPHES})


@lru_cache(maxsize=65536)
def _pattern(term: str, opts: MatchOptions) -> re.Pattern:
    words = term.split()
    if opts.flexible_whitespace and len(words) > 1:
        body = r"\s+".join(re.escape(w) for w in words)
    else:
        body = re.escape(term)
    body = body.translate(_ANY_APOSTROPHE)
    if opts.whole_word:
        body = rf"(?<!\w){body}(?!\w)"
    return re.compile(body, 0 if opts.case_sensitive else re.IGNORECASE)


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=65536)
def _ascii_runs(term: str, case_sensitive: bool) -> tuple[str, ...]:
    """The term's word runs, folded exactly as TextIndex folds texts, keeping the ASCII ones."""
    return tuple(r for r in _WORD.findall(_fold(_nfc_term(term), case_sensitive)) if r.isascii())


def _fold(text: str, case_sensitive: bool) -> str:
    """`text` as case-insensitive matching sees it: texts equal after this fold match each other."""
    return text if case_sensitive else text.translate(_fold_table()).lower()


# the only non-ASCII characters that case-insensitive regex matching equates with ASCII letters
# (Python `re` docs: U+0130, U+0131, U+017F, U+212A); mapped before lower-casing the text
_ASCII_EQUIVALENTS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


@cache
def _fold_table() -> dict[int, str]:
    """The characters to map before lower-casing: `_ASCII_EQUIVALENTS`, and those that `re.IGNORECASE` equates
    with a letter other than their lower case (micro sign and mu, final and plain sigma, theta symbol and
    theta, ...: their one-letter casefold). With lower() alone, "5 µg" and "5 μg" kept apart as two terms
    that find the same spans, each occurrence counted twice."""
    table: dict[int, str] = {}
    for cp in range(0x110000):
        folded = chr(cp).casefold()
        if len(folded) == 1 and folded != chr(cp).lower():
            table[cp] = folded
    return {**table, **_ASCII_EQUIVALENTS}


class TextIndex:
    """The words of one text, for a cheap and exact pre-check before running a term's regex.

    With whole-word matching every word run of a term (maximal \\w+) occurs as a whole word of
    any text it matches (case-folded as the regex folds), so a term with a run missing from the
    text's words cannot occur there; without whole-word matching the runs must still be
    substrings. Only ASCII runs are checked: a non-ASCII run never rules a term out."""

    def __init__(self, text: str, opts: MatchOptions = MatchOptions()):
        self.opts = opts
        self.folded = _fold(_nfc_text(text).text, opts.case_sensitive)  # the NFC form, as find_spans searches
        self.words = set(_WORD.findall(self.folded))

    def may_occur(self, term: str) -> bool:
        """False only if `term` cannot occur in the text."""
        runs = _ascii_runs(term, self.opts.case_sensitive)
        if self.opts.whole_word:
            return all(r in self.words for r in runs)
        return all(r in self.folded for r in runs)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def find_spans(text: str, term: str, opts: MatchOptions = MatchOptions()) -> list[tuple[int, int]]:
    """Character spans (in `text` as given) of every non-overlapping occurrence of `term`, matched
    under NFC (see the module docstring)."""
    term = _nfc_term(term)
    if not term:
        return []
    view = _nfc_text(text)
    norm, pattern = view.text, _pattern(term, opts)
    if not opts.whole_word or view.is_ascii:
        spans = [m.span() for m in pattern.finditer(norm)]
    else:  # a combining mark next to a match continues the word: no whole-word match there
        spans, pos, n = [], 0, len(norm)
        while (m := pattern.search(norm, pos)) is not None:
            s, e = m.span()
            if (s > 0 and _is_mark(norm[s - 1])) or (e < n and _is_mark(norm[e])):
                pos = s + 1
                continue
            spans.append((s, e))
            pos = e if e > s else e + 1
    return spans if view.identity else [view.to_original(s, e) for s, e in spans]


@dataclass(frozen=True)
class TokenSpan:
    """Token positions [first, last] (inclusive, in the encoded ids) covering a character span."""

    first: int
    last: int
    straddles: bool

    @property
    def n_tokens(self) -> int:
        return self.last - self.first + 1


def token_span(enc: EncodedText, text: str, start: int, end: int) -> TokenSpan | None:
    """Tokens overlapping [start, end); None if no token does (cannot happen with valid offsets).

    O(log n) per occurrence: a bisection on the token offsets (`EncodedText.tokens_overlapping`)."""
    hit = enc.tokens_overlapping(start, end)
    if hit is None:
        return None
    first, last = hit
    straddles = False
    for k in (first, last):
        o = enc.offsets[k]
        if o is None:  # cannot happen: located tokens have spans
            continue
        s, e = o
        outside = text[s:start] + text[end:e]
        if outside.strip():
            straddles = True
    return TokenSpan(first, last, straddles)
