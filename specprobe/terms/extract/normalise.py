"""String normalisation shared by the dictionary matcher and the canonical-name rules: lower case and simple
English plural stripping, applied the same way to dictionary strings and text. The typographic apostrophe counts as
the ASCII one: S-MedQA writes "Crohn\u2019s disease" (U+2019) where the dictionary has "Crohn's disease"."""

from __future__ import annotations

import re

#: the apostrophes that count as one: ASCII and the right single quotation mark, which spaCy's tokenizer
#: splits off ("\u2019s", "\u2019") as it does "'" (the probe's term matching equates them too)
APOSTROPHES = "'\u2019"
_ASCII_APOSTROPHE = str.maketrans({a: "'" for a in APOSTROPHES})


def ascii_apostrophes(text: str) -> str:
    """`text` with every apostrophe of `APOSTROPHES` written as the ASCII one (same length)."""
    return text.translate(_ASCII_APOSTROPHE)


def normalise_token(token: str) -> str:
    """Lower-case and strip a regular English plural or a final "e" (same rule for dictionary and text), so
    "seizures" ~ "seizure", "headaches" ~ "headache", "arteries" ~ "artery"; the typographic apostrophe is
    the ASCII one ("\u2019s" ~ "'s"). Only used to compare strings."""
    t = ascii_apostrophes(token.lower())
    if len(t) <= 3 or not t.isalpha():
        return t
    if t.endswith("ies") and len(t) > 4:
        return t[:-3] + "y"
    if t.endswith("es"):
        return t[:-2]
    if t.endswith("s") and not t.endswith(("ss", "us", "is", "ys")):
        return t[:-1]
    if t.endswith("e") and t[-2] not in "aeiou":  # "headache" ~ "headach(es)", not "agalactiae" ~ "agalactia"
        return t[:-1]
    return t


def normalise_phrase(phrase: str) -> str:
    """Normalised form of a phrase, tokenised on whitespace and hyphens (a cheap approximation)."""
    return " ".join(normalise_token(t) for t in re.findall(r"\w+|[^\w\s]", phrase))
