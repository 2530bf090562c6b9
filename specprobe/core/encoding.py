"""Tokenize texts with trustworthy character offsets and exactly one BOS where the model has one.

Offsets come from the fast tokenizer; they are checked (in range, non-zero width, monotone, and
covering every non-space character) because some tokenizers report zero-width or shifted offsets
(tokenizers #1553). Where the check fails we rebuild offsets by incremental decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


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


def offsets_look_valid(text: str, offsets: list[tuple[int, int] | None]) -> bool:
    """True when offsets are in range, non-zero width, monotone, and cover every non-space character."""
    covered = [False] * len(text)
    last_start = -1
    for span in offsets:
        if span is None:
            continue
        s, e = span
        if not (0 <= s <= e <= len(text)) or s < last_start:
            return False
        if s == e and not _whitespace_around(text, s):
            return False  # a zero-width content token: the Llama-3 offsets bug
        last_start = s
        for i in range(s, e):
            covered[i] = True
    return all(c or ch.isspace() for c, ch in zip(covered, text))


def _whitespace_around(text: str, i: int) -> bool:
    return (i < len(text) and text[i].isspace()) or (i > 0 and text[i - 1].isspace()) or i == len(text)


def offsets_by_decoding(tokenizer, text: str, ids: list[int], special: list[bool]) -> list[tuple[int, int] | None]:
    """Rebuild offsets from the growing decoded prefix; tokens inside one character share its span."""
    content = [i for i, sp in zip(ids, special) if not sp]
    offsets: list[tuple[int, int] | None] = []
    prev_end, k = 0, 0
    for sp in special:
        if sp:
            offsets.append(None)
            continue
        k += 1
        prefix = tokenizer.decode(content[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        complete = not prefix.endswith("\ufffd")
        end = len(prefix.rstrip("\ufffd")) if complete else None
        if end is None or not text.startswith(prefix):
            # partial character: extend to the next character boundary once it completes
            offsets.append((prev_end, -1))
            continue
        start = prev_end
        while start < end and text[start].isspace():
            start += 1
        # fill the spans of preceding partial-character tokens
        for j in range(len(offsets) - 1, -1, -1):
            if offsets[j] is not None and offsets[j][1] == -1:
                offsets[j] = (start, end)
            else:
                break
        offsets.append((start, end) if end > start else (prev_end, end))
        prev_end = end
    decoded = tokenizer.decode(content, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if decoded != text or any(o is not None and o[1] == -1 for o in offsets):
        raise TokenizerError(
            f"{type(tokenizer).__name__}: offsets are invalid and decoding does not reproduce the text "
            f"({decoded[:60]!r} vs {text[:60]!r}); cannot map terms to tokens"
        )
    return offsets


def encode(tokenizer, text: str, add_bos: bool | None = None) -> EncodedText:
    """Token ids and character offsets of `text`, with one BOS in front where the tokenizer has one."""
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r:.80}")
    # verbose=False: long texts are expected here (windows handle them); no "longer than maximum" warning
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    special = [i in special_ids and (s, e) == (0, 0) for i, (s, e) in zip(ids, enc["offset_mapping"])]
    # drop trailing specials (EOS appended by some templates): nothing after the text is scored
    while ids and special[-1]:
        ids.pop(), special.pop()
    offsets = [None if sp else tuple(o) for sp, o in zip(special, enc["offset_mapping"])]
    # exactly one BOS: drop a leading run of specials, then prepend BOS where wanted
    want = bos_id(tokenizer, add_bos)
    lead = 0
    while lead < len(ids) and special[lead]:
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
    if not offsets_look_valid(text, offsets):
        log.warning("%s gave invalid character offsets; rebuilding them by decoding", type(tokenizer).__name__)
        offsets = offsets_by_decoding(tokenizer, text, ids, special)
        source = "decode"
    return EncodedText(tuple(ids), tuple(offsets), has_bos=want is not None, offsets_source=source)
