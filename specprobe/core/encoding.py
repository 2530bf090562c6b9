"""Tokenize texts with trustworthy character offsets and exactly one BOS where the model has one.

Offsets come from the fast tokenizer; they are checked (in range, non-zero width, monotone, and
covering every non-space character) because some tokenizers report zero-width or shifted offsets
(tokenizers #1553). Where the check fails we rebuild offsets by incremental decoding.

BOS: the tokenizer's own BOS, any run of special tokens it puts before the text, and the BOS string
written at the start of the text itself (a chat template's output) all become the one BOS (or none
with `add_bos=False`); the characters of such a written BOS belong to no token.

Unicode: offsets always refer to the text as given. A tokenizer that normalises (Qwen2's NFC
normaliser) reports the offsets of a composed character on its base letter only, leaving the
combining marks uncovered; for a text that is not in NFC those gaps are given to the token they
were composed into, and decoding is compared with the text under NFC. `nfc_map` is the shared
NFC view of a text with its map back to the original offsets (an identity on NFC text).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NFCText:
    """The NFC form of a text and a map from its character positions back to the original's.

    `starts[i]`/`ends[i]`: the original span of normalised character i. A character produced by
    composition (or reordering) maps to the whole original cluster it came from, so a mapped span
    always covers every original character that the normalised span stands for. Both are None
    when the text is already NFC (the map is the identity)."""

    original: str
    text: str
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    @property
    def identity(self) -> bool:
        return self.starts is None

    @cached_property
    def is_ascii(self) -> bool:
        return self.text.isascii()

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the normalised span [start, end)."""
        if self.starts is None:
            return start, end
        n = len(self.text)
        if end <= start:
            pos = self.starts[start] if start < n else len(self.original)
            return pos, pos
        assert self.ends is not None
        return self.starts[start], self.ends[end - 1]


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _nfc_segments(text: str, lo: int, hi: int) -> list[int]:
    """Start positions of the pieces of text[lo:hi] that NFC normalises independently (a piece is a
    starter with the characters that follow it and may combine with it)."""
    nfc = unicodedata.normalize
    bounds = [lo]
    for i in range(lo + 1, hi):
        ch = text[i]
        if ch < "\x80":  # ASCII never composes with what precedes it
            bounds.append(i)
        elif unicodedata.combining(ch) or unicodedata.combining(nfc("NFD", ch)[0]):
            # a mark, or a starter that decomposes to one (Tibetan U+0F73, U+0F75, U+0F81): NFC may compose
            # a later mark across it, so it starts no piece
            continue
        else:  # a non-ASCII starter: a boundary unless it composes or reorders with the piece before
            piece = text[bounds[-1] : i]
            if nfc("NFC", piece + ch) == nfc("NFC", piece) + nfc("NFC", ch):
                bounds.append(i)
    return bounds


def nfc_map(text: str) -> NFCText:
    """`text` in NFC with the map back to its own offsets; the identity (no copy) when already NFC.

    Only the non-ASCII runs (with the character before each, which marks may compose with) can
    change; ASCII between them is a boundary NFC never crosses, so each run is normalised alone."""
    if unicodedata.is_normalized("NFC", text):
        return NFCText(text, text)
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def same(a: int, b: int) -> None:
        parts.append(text[a:b])
        starts.extend(range(a, b))
        ends.extend(range(a + 1, b + 1))

    done = 0
    for m in _NON_ASCII.finditer(text):
        lo, hi = max(done, m.start() - 1), m.end()
        same(done, lo)
        run = text[lo:hi]
        if unicodedata.is_normalized("NFC", run):
            same(lo, hi)
        else:
            bounds = _nfc_segments(text, lo, hi) + [hi]
            for a, b in zip(bounds, bounds[1:]):
                piece = text[a:b]
                norm = unicodedata.normalize("NFC", piece)
                if norm == piece:
                    same(a, b)
                else:
                    parts.append(norm)
                    starts.extend([a] * len(norm))
                    ends.extend([b] * len(norm))
        done = hi
    same(done, len(text))
    out = "".join(parts)
    if out != unicodedata.normalize("NFC", text):  # never seen; if it happens, map coarsely but safely
        log.warning("NFC of a text did not split into independent pieces; mapping its matches to the whole text")
        out = unicodedata.normalize("NFC", text)
        return NFCText(text, out, (0,) * len(out), (len(text),) * len(out))
    return NFCText(text, out, tuple(starts), tuple(ends))


class TokenizerError(ValueError):
    """The tokenizer cannot give what scoring needs (a fast tokenizer with offsets)."""


@dataclass(frozen=True)
class EncodedText:
    """Token ids of one text with per-token character offsets; special tokens have offsets None."""

    ids: tuple[int, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    has_bos: bool
    offsets_source: str  # "tokenizer" or "decode"

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def _content(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Token positions with a non-empty character span, their starts, ends and running max end."""
        spans = [(k, o[0], o[1]) for k, o in enumerate(self.offsets) if o is not None and o[1] > o[0]]
        pos = [k for k, _, _ in spans]
        starts = [s for _, s, _ in spans]
        ends = [e for _, _, e in spans]
        return pos, starts, ends, list(itertools.accumulate(ends, max))

    def tokens_overlapping(self, start: int, end: int) -> tuple[int, int] | None:
        """(first, last) token positions whose character spans overlap [start, end), or None.

        O(log n): offsets are monotone in their starts (checked by `offsets_look_valid` or built so
        by decoding), so the tokens starting before `end` form a prefix, and the first one ending
        after `start` is found on the running maximum of the ends."""
        pos, starts, ends, maxend = self._content
        hi = bisect.bisect_left(starts, end)  # tokens [0, hi) start before `end`
        lo = bisect.bisect_right(maxend, start)  # first token ending after `start`
        if lo >= hi:
            return None
        last = hi - 1
        while last > lo and ends[last] <= start:  # only with non-monotone ends
            last -= 1
        return pos[lo], pos[last]


def require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets; "
            "load the fast one (AutoTokenizer.from_pretrained(..., use_fast=True))"
        )


def bos_id(tokenizer, add_bos: bool | None) -> int | None:
    """The BOS id to condition the first token on: None when the tokenizer has none or add_bos=False."""
    if add_bos is False:
        return None
    bid = getattr(tokenizer, "bos_token_id", None)
    if bid is None and add_bos:
        raise TokenizerError(f"add_bos=True but {type(tokenizer).__name__} has no BOS token")
    return bid


def offsets_look_valid(text: str, offsets: list[tuple[int, int] | None], start: int = 0) -> bool:
    """True when offsets are in range, non-zero width, monotone, and cover every non-space character
    (from `start` on: the characters before it stand for a special token).

    Coverage is a sweep over the spans (their starts are monotone, checked here), so only the gaps between
    them are read, not every character: this runs for every text compare and evaluate score."""
    n = len(text)
    reach = 0  # the characters before `reach` are covered, or were checked to be whitespace
    last_start = -1
    for span in offsets:
        if span is None:
            continue
        s, e = span
        if not (0 <= s <= e <= n) or s < last_start:
            return False
        if s == e and not _whitespace_around(text, s):
            return False  # a zero-width content token: the Llama-3 offsets bug
        last_start = s
        if s > reach and not _blank(text, max(reach, start), s):
            return False
        reach = max(reach, e)
    return _blank(text, max(reach, start), n)


def _blank(text: str, a: int, b: int) -> bool:
    """Whether text[a:b] is empty or only whitespace."""
    return a >= b or text[a:b].isspace()


def _whitespace_around(text: str, i: int) -> bool:
    return (i < len(text) and text[i].isspace()) or (i > 0 and text[i - 1].isspace()) or i == len(text)


def offsets_by_decoding(
    tokenizer, text: str, ids: list[int], special: list[bool], label: str | None = None
) -> list[tuple[int, int] | None]:
    """Rebuild offsets from the growing decoded prefix: a token covers the characters its bytes
    belong to, so tokens inside one multi-byte character share its span, and a token that ends
    with the first bytes of a character covers it while the next token starts there.

    A tokenizer that normalises to NFC decodes to the NFC form of a text that is not NFC: then the
    offsets are built on the NFC form and mapped back to the text (`nfc_map`)."""
    content = [i for i, sp in zip(ids, special) if not sp]
    # special tokens written in the text (a chat template's "<|eot_id|>") are content here: decoded, not skipped
    decoded = tokenizer.decode(content, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    target, view = text, None
    if decoded != text:
        view = nfc_map(text)
        if not view.identity and unicodedata.normalize("NFC", decoded) == view.text:
            target = view.text
        else:
            view = None
    offsets = _offsets_by_decoding(tokenizer, target, content, special)
    if decoded != target or offsets is None:
        raise TokenizerError(
            f"{_where(label)}{type(tokenizer).__name__}: offsets are invalid and decoding does not reproduce "
            f"the text ({decoded[:60]!r} vs {text[:60]!r}); cannot map terms to tokens"
        )
    if view is not None:
        offsets = [None if o is None else view.to_original(*o) for o in offsets]
    return offsets


def _where(label: str | None) -> str:
    return f"{label}: " if label else ""


def _offsets_by_decoding(
    tokenizer, text: str, content: list[int], special: list[bool]
) -> list[tuple[int, int] | None] | None:
    offsets: list[tuple[int, int] | None] = []
    done, k = 0, 0  # characters of the text that the tokens so far decode completely
    for sp in special:
        if sp:
            offsets.append(None)
            continue
        k += 1
        prefix = tokenizer.decode(content[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        head = prefix.rstrip("\ufffd")
        partial = len(head) < len(prefix)  # the token ends inside a character (some of its bytes)
        if not text.startswith(head if partial else prefix) or (partial and not done <= len(head) < len(text)):
            # the decoding does not match the text here (or a byte-fallback decoder replaced earlier
            # bytes of the run too): extend to the next token that matches
            offsets.append((done, -1))
            continue
        # a token that ends inside a character covers that character (the one after the complete part)
        end = len(head) + (1 if partial else 0)
        start = done
        while start < end and text[start].isspace():
            start += 1
        # fill the spans of preceding tokens that did not match
        for j in range(len(offsets) - 1, -1, -1):
            oj = offsets[j]
            if oj is not None and oj[1] == -1:
                offsets[j] = (start, end)
            else:
                break
        offsets.append((start, end) if end > start else (done, end))
        done = len(head)  # a character left incomplete is where the next token starts
    if any(o is not None and o[1] == -1 for o in offsets):
        return None
    return offsets


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def fill_normalisation_gaps(text: str, offsets: list[tuple[int, int] | None]) -> list[tuple[int, int] | None]:
    """Give combining marks no token covers (a normalising tokenizer composed them into the character
    before them) to the tokens that end just before them: those tokens stand for them. Only marks,
    and only after a token of non-zero width: any other gap is left for the decoding fallback."""
    covered = [False] * len(text)
    for o in offsets:
        if o is not None:
            for i in range(max(o[0], 0), min(o[1], len(text))):
                covered[i] = True
    grow: dict[int, int] = {}  # a token end -> the end of the uncovered marks after it
    for o in offsets:
        if o is None or o[1] <= o[0] or o[1] >= len(text) or covered[o[1]]:
            continue
        e = o[1]
        while e < len(text) and not covered[e] and _is_mark(text[e]):
            e += 1
        if e > o[1]:
            grow[o[1]] = e
    return [o if o is None or o[1] <= o[0] or o[1] not in grow else (o[0], grow[o[1]]) for o in offsets]


def encode(tokenizer, text: str, add_bos: bool | None = None, label: str | None = None) -> EncodedText:
    """Token ids and character offsets of `text`, with one BOS in front where the tokenizer has one.

    `label` (e.g. "text 'q17'") names the text in any error. Offsets refer to `text` as given,
    also when the tokenizer normalises it (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"{_where(label)}texts must be strings, got {type(text).__name__}: {text!r:.80}")
    try:
        return _encode(tokenizer, text, add_bos, label)
    except TokenizerError as exc:
        if label and not str(exc).startswith(label):
            raise TokenizerError(f"{label}: {exc}") from exc
        raise


def _encode(tokenizer, text: str, add_bos: bool | None, label: str | None) -> EncodedText:
    # verbose=False: long texts are expected here (windows handle them); no "longer than maximum" warning
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    special = [i in special_ids and (s, e) == (0, 0) for i, (s, e) in zip(ids, enc["offset_mapping"])]
    # drop trailing specials (EOS appended by some templates): nothing after the text is scored
    while ids and special[-1]:
        ids.pop()
        special.pop()
    offsets = [None if sp else tuple(o) for sp, o in zip(special, enc["offset_mapping"])]
    # exactly one BOS: drop a leading run of specials, then prepend BOS where wanted
    want = bos_id(tokenizer, add_bos)
    lead = 0
    while lead < len(ids) and special[lead]:
        lead += 1
    # a text that itself begins with the BOS string (a chat template's output, lm-eval #3333) gets that
    # BOS from the tokenizer with offsets: it is the one BOS as well, not a second one
    skip = 0  # characters of such literal BOS strings at the start of the text
    bos, bos_text = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "bos_token", None)
    while (
        bos is not None
        and isinstance(bos_text, str)
        and bos_text
        and lead < len(ids)
        and ids[lead] == bos
        and offsets[lead] == (skip, skip + len(bos_text))
        and text.startswith(bos_text, skip)
    ):
        special[lead], offsets[lead] = True, None
        skip += len(bos_text)
        lead += 1
    leading = ids[:lead]
    if want is not None:
        if leading.count(want) > 1:
            log.debug("collapsing %d BOS tokens into one", leading.count(want))
        leading = [i for i in leading if i != want]
        leading = [want] + leading
    elif add_bos is False:
        leading = [i for i in leading if i != getattr(tokenizer, "bos_token_id", None)]
    ids = leading + ids[lead:]
    special = [True] * len(leading) + special[lead:]
    offsets = [None] * len(leading) + offsets[lead:]
    source = "tokenizer"
    valid = offsets_look_valid(text, offsets, skip)
    if not valid and not unicodedata.is_normalized("NFC", text):
        filled = fill_normalisation_gaps(text, offsets)
        if offsets_look_valid(text, filled, skip):  # a normalising tokenizer: marks composed into a character
            offsets, valid = filled, True
    if not valid:
        log.warning(
            "%s%s gave invalid character offsets; rebuilding them by decoding", _where(label), type(tokenizer).__name__
        )
        rest = offsets_by_decoding(tokenizer, text[skip:], ids, special, label)
        offsets = [None if o is None else (o[0] + skip, o[1] + skip) for o in rest]
        source = "decode"
    else:
        offsets = _without_dummy_prefix(tokenizer, text, ids, offsets)
    return EncodedText(tuple(ids), tuple(offsets), has_bos=want is not None, offsets_source=source)


def _without_dummy_prefix(tokenizer, text: str, ids: list[int], offsets: list) -> list:
    """SentencePiece-style tokenizers prefix the text with a space marker; where "▁" becomes a token of
    its own (before CJK, emoji or a digit in Llama 2), they give it the span of the text's first
    character, so a term at the very start would count it while the same term mid-text (where "▁" spans
    the space before it) does not. That token gets an empty span at its start: context, not the term."""
    first = next((k for k, o in enumerate(offsets) if o is not None), None)
    if first is None:
        return offsets
    s, e = offsets[first]
    piece = tokenizer.convert_ids_to_tokens(ids[first])
    if e > s and isinstance(piece, str) and piece and set(piece) == {"\u2581"} and not text[s:e].isspace():
        offsets = list(offsets)
        offsets[first] = (s, s)
    return offsets
