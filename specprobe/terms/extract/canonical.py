"""Which concept a matched string stands for, and the name shown for it (the lexicon's "canonical").

A dictionary string may belong to several concepts, and may be a concept's title, an exact synonym, or an ICD
inclusion term. The rules keep the canonical no more specific than the text:

1. a concept whose title is the string itself wins, then one whose title adds no qualifier absent from the
   string (an ICD code whose title never occurs in text comes after one with a usable title), HPO before
   ICD-10-CM;
2. a concept whose title adds qualifiers ("lichen" -> "Lichen simplex chronicus"), whose title never occurs in
   text ("Other injury of unspecified body region") or which only codes the string when unspecified (an ICD
   "X NOS" inclusion term: "Fracture NOS" under T14.8) is used only when nothing better matches, and then the
   canonical name is the matched string itself ("Fracture", "Lichen"), not the concept's title.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..ontology import Concept
from .normalise import normalise_phrase, normalise_token

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {normalise_token(w) for w in _WORD.findall(text.lower())}


def adds_qualifiers(title: str, matched: str) -> bool:
    """True when `title` has every word of `matched` and more ("Lichen simplex chronicus" vs "Lichen")."""
    t, m = _words(title), _words(matched)
    return bool(m) and m < t


def over_specific(concept: Concept, matched: str) -> bool:
    """True when the concept's title may not stand for `matched` (rule 2 of the module docstring)."""
    title = concept.title
    return title is None or matched in concept.residual or adds_qualifiers(title, matched)


def choose(
    candidates: list[tuple[Concept, str]], norm: str, normalise: Callable[[str], str] = normalise_phrase
) -> tuple[Concept, str]:
    """(primary concept, canonical name) among (concept, the string of it that matched) pairs; `norm` is the
    normalised matched text, and `normalise` how a title is normalised to compare with it (the matcher passes its
    own tokenisation: "Bell's palsy" is "bell 's palsy" there, "bell ' s palsy" by `normalise_phrase`)."""

    def rank(pair: tuple[Concept, str]) -> tuple[bool, bool, bool, bool]:
        c, s = pair
        title = c.title
        asserts_more = s in c.residual or (title is not None and adds_qualifiers(title, s))
        return (title is None or normalise(title) != norm, asserts_more, title is None, c.source != "hpo")

    concept, matched = min(candidates, key=rank)
    return concept, (matched if over_specific(concept, matched) else concept.title or matched)
