"""Locate every occurrence of a term in a text by character span, then map spans to token positions.

Terms are found in the text itself (regex, case-insensitive whole-word by default) and mapped to
tokens through the fast tokenizer's offsets: never by re-tokenizing the term on its own, which
misses occurrences whose tokenization depends on context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from specprobe.core.encoding import EncodedText

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


@lru_cache(maxsize=65536)
def _pattern(term: str, opts: MatchOptions) -> re.Pattern:
    words = term.split()
    if opts.flexible_whitespace and len(words) > 1:
        body = r"\s+".join(re.escape(w) for w in words)
    else:
        body = re.escape(term)
    if opts.whole_word:
        body = rf"(?<!\w){body}(?!\w)"
    return re.compile(body, 0 if opts.case_sensitive else re.IGNORECASE)


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=65536)
def _ascii_runs(term: str, case_sensitive: bool) -> tuple[str, ...]:
    """The term's word runs, folded exactly as TextIndex folds texts, keeping the ASCII ones."""
    return tuple(r for r in _WORD.findall(_fold(term, case_sensitive)) if r.isascii())


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.translate(_ASCII_EQUIVALENTS).lower()


# the only non-ASCII characters that case-insensitive regex matching equates with ASCII letters
# (Python `re` docs: U+0130, U+0131, U+017F, U+212A); mapped before lower-casing the text
_ASCII_EQUIVALENTS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


class TextIndex:
    """The words of one text, for a cheap and exact pre-check before running a term's regex.

    With whole-word matching every word run of a term (maximal \\w+) occurs as a whole word of
    any text it matches (case-folded as the regex folds), so a term with a run missing from the
    text's words cannot occur there; without whole-word matching the runs must still be
    substrings. Only ASCII runs are checked: a non-ASCII run never rules a term out."""

    def __init__(self, text: str, opts: MatchOptions = MatchOptions()):
        self.opts = opts
        self.folded = _fold(text, opts.case_sensitive)
        self.words = set(_WORD.findall(self.folded))

    def may_occur(self, term: str) -> bool:
        """False only if `term` cannot occur in the text."""
        runs = _ascii_runs(term, self.opts.case_sensitive)
        if self.opts.whole_word:
            return all(r in self.words for r in runs)
        return all(r in self.folded for r in runs)


def find_spans(text: str, term: str, opts: MatchOptions = MatchOptions()) -> list[tuple[int, int]]:
    """Character spans of every (non-overlapping) occurrence of `term` in `text`."""
    if not term.strip():
        return []
    return [(m.start(), m.end()) for m in _pattern(term.strip(), opts).finditer(text)]


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
    """Tokens overlapping [start, end); None if no token does (cannot happen with valid offsets)."""
    hits = [k for k, o in enumerate(enc.offsets) if o is not None and o[0] < end and o[1] > start and o[1] > o[0]]
    if not hits:
        return None
    first, last = hits[0], hits[-1]
    straddles = False
    for k in (first, last):
        s, e = enc.offsets[k]
        outside = text[s:start] + text[end:e]
        if outside.strip():
            straddles = True
    return TokenSpan(first, last, straddles)
