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
    """Case-fold and strip a regular English plural, then a final "e" (same rule for dictionary and text), so
    "seizures" ~ "seizure", "arteries" ~ "artery", "knees" ~ "knee", "toes" ~ "toe", "kidneys" ~ "kidney",
    "calories" ~ "calorie"; a Latin "-ae" stays ("agalactiae" is not "agalactia"); the typographic apostrophe is
    the ASCII one ("\u2019s" ~ "'s"); Greek final sigma is sigma ("ΣΗΨΙΣ" ~ "σηψισ": `str.lower` writes the
    first "σηψις"). Idempotent: a final "e" stays where its stem would normalise further ("disease", not
    "diseas", which reads "disea"), so a normalised form is its own normal form. Only used to compare strings."""
    t = ascii_apostrophes(token.casefold())
    if len(t) <= 3 or not t.isalpha():
        return t
    t = _singular(t)
    if len(t) <= 3 or t.endswith("ae"):  # the plural of a short word ("eyes", "toes") is that word
        return t
    if t.endswith("ie"):  # "calorie" ~ "calories", which reads "calory" as "arteries" reads "artery"
        return t[:-2] + "y"
    if t.endswith("e") and normalise_token(t[:-1]) == t[:-1]:
        return t[:-1]
    return t


def _singular(t: str) -> str:
    """`t` less a regular plural ending: "arteries" -> "artery", "seizures" -> "seizure", "masses" -> "masse"
    (whose final "e" `normalise_token` strips as it does the singular's); "ss", "us", "is" are not plurals."""
    if t.endswith("ies") and len(t) > 4:
        return t[:-3] + "y"
    if t.endswith("s") and not t.endswith(("ss", "us", "is")):
        return t[:-1]
    return t


def normalise_phrase(phrase: str) -> str:
    """Normalised form of a phrase, tokenised on whitespace and hyphens (a cheap approximation)."""
    return " ".join(normalise_token(t) for t in re.findall(r"\w+|[^\w\s]", phrase))
