"""Locate every occurrence of a term in a text by character span, then map spans to token positions.

Terms are found in the text itself (regex, case-insensitive whole-word by default) and mapped to
tokens through the fast tokenizer's offsets: never by re-tokenizing the term on its own, which
misses occurrences whose tokenization depends on context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from specprobe.probe.encoding import EncodedText

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
