"""Offline dictionary backend: ICD-10-CM and HPO names matched in text, longest match first.

Works with PyPI packages alone (no model download). Texts are tokenised by spaCy's blank English tokenizer;
dictionary strings by the same tokenizer, so both sides agree. Matching is on normalised tokens
(lower case, simple English plural stripping: "seizures" -> "seizure", "arteries" -> "artery"), scanning
left to right and taking the longest dictionary entry at each position (a token trie walk, equivalent to
spaCy's PhraseMatcher with a greedy longest-match filter). Abbreviations (`abbreviations`): dictionary entries
written as abbreviations ("COPD", "TRAbs") match only as written, an abbreviation in the text never matches an
ordinary word, an abbreviation defined in the text itself ("... pulmonary embolism (PE) ...") is resolved to its
long form with scispaCy's AbbreviationDetector (which needs no model), and a short one (<= 4 characters) that the
text does not define is a term only through the curated list. The concept and canonical name of a match follow
`canonical`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from ..ontology import Concept, all_concepts
from . import canonical as canon
from .abbreviations import abbreviation_key, curated_abbreviations, is_abbreviation, is_short
from .base import Mention, as_text_list, iter_progress
from .normalise import normalise_phrase, normalise_token

MAX_TERM_TOKENS = 8
_WORDY = re.compile(r"[A-Za-z]")
_PLAIN = re.compile(r"^[A-Za-z]{2,}( [A-Za-z]{2,})*$")


@functools.lru_cache(maxsize=1)
def generic_terms() -> frozenset[str]:
    """Normalised strings never used as terms (`specprobe/data/terms/generic_terms.txt`)."""
    text = (resources.files("specprobe") / "data" / "terms" / "generic_terms.txt").read_text(encoding="utf-8")
    out = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(" ".join(normalise_token(t) for t in line.split()))
    return frozenset(out)


@dataclass
class _Entry:
    concepts: list[int]
    norm: str
    strings: dict[int, str]  # concept index -> its ontology string that this entry matches


class OfflineExtractor:
    """Dictionary matcher over ICD-10-CM and HPO concept names (see the module docstring)."""

    name = "offline"

    def __init__(
        self, concepts: Sequence[Concept] | None = None, abbreviations: bool = True, extra_generic: Sequence[str] = ()
    ) -> None:
        import spacy
        from spacy.lang.en.stop_words import STOP_WORDS

        self.nlp = spacy.blank("en")
        self.abbreviations = abbreviations
        if abbreviations:
            import scispacy.abbreviation  # noqa: F401  (registers the factory)

            self.nlp.add_pipe("abbreviation_detector")
        self.concepts: list[Concept] = list(concepts if concepts is not None else all_concepts())
        self._stop = {w.lower() for w in STOP_WORDS}
        self._generic = set(generic_terms()) | {" ".join(normalise_token(t) for t in g.split()) for g in extra_generic}
        self._ci: dict[tuple[str, ...], _Entry] = {}  # case-insensitive, normalised tokens
        self._cs: dict[tuple[str, ...], _Entry] = {}  # case-sensitive abbreviations, exact tokens
        self._norms: dict[str, str] = {}  # phrase -> its normalised tokens, as entries key them (`_normalised`)
        self._build()

    # ----------------------------------------------------------------------------------- dictionary
    def _keep(self, norm_tokens: tuple[str, ...]) -> bool:
        content = [t for t in norm_tokens if _WORDY.search(t) and t not in self._stop]
        if not content or " ".join(norm_tokens) in self._generic:
            return False
        if len(norm_tokens) == 1 and len(norm_tokens[0]) < 4:
            return False
        return True

    def _build(self) -> None:
        strings, owners = [], []
        for i, c in enumerate(self.concepts):
            for s in c.synonyms:
                strings.append(s)
                owners.append(i)
        for toks, owner, s in zip(self._tokenise_all(strings), owners, strings):
            if not toks or len(toks) > MAX_TERM_TOKENS:
                continue
            if len(toks) == 1 and is_abbreviation(toks[0]):
                key = (abbreviation_key(toks[0]),)
                entry = self._cs.setdefault(key, _Entry([], key[0].lower(), {}))
            else:
                norm = tuple(normalise_token(t) for t in toks)
                if not self._keep(norm):
                    continue
                entry = self._ci.setdefault(norm, _Entry([], " ".join(norm), {}))
            if owner not in entry.concepts:
                entry.concepts.append(owner)
                entry.strings[owner] = s
        self._max_len = max((len(k) for k in self._ci), default=1)
        self._curated = {k: e for k, v in curated_abbreviations().items() if (e := self._long_form_entry(v))}

    def _tokenise_all(self, strings: list[str]) -> list[tuple[str, ...]]:
        """spaCy tokens of each string; plain space-separated words (most names) take a fast path that gives
        the same tokens."""
        out: list[tuple[str, ...] | None] = [tuple(s.split()) if _PLAIN.match(s) else None for s in strings]
        hard = [i for i, t in enumerate(out) if t is None]
        for i, doc in zip(hard, self.nlp.tokenizer.pipe([strings[i] for i in hard], batch_size=2000)):
            out[i] = tuple(t.text for t in doc)
        return out  # type: ignore[return-value]

    def _normalised(self, phrase: str) -> str:
        """`phrase` normalised exactly as dictionary strings are (this tokenizer, `normalise_token`), so that a
        concept's title compares equal to the entry it spells; cached, as each mention ranks its concepts."""
        if phrase not in self._norms:
            self._norms[phrase] = " ".join(normalise_token(t) for t in self._tokenise_all([phrase])[0])
        return self._norms[phrase]

    def lookup(self, phrase: str) -> list[Concept]:
        """The concepts a phrase names exactly (after normalisation); [] if it is not in the dictionary."""
        toks = tuple(t.text for t in self.nlp.make_doc(phrase))
        entry = self._abbreviation_entry(toks[0]) if len(toks) == 1 and is_abbreviation(toks[0]) else None
        entry = entry or self._ci.get(tuple(normalise_token(t) for t in toks))
        return [self.concepts[i] for i in entry.concepts] if entry else []

    def _long_form_entry(self, long: str) -> _Entry | None:
        """The entry a long form names: the whole of it, else its longest tail ("new-onset atrial
        fibrillation" -> "atrial fibrillation")."""
        lt = tuple(normalise_token(t.text) for t in self.nlp.make_doc(long))
        return next((self._ci[lt[k:]] for k in range(len(lt)) if lt[k:] in self._ci), None)

    def _spelled_out(self, short: str, long: str) -> _Entry | None:
        """The ontology abbreviation `short` when the text's own long form agrees with it: the long form names no
        concept, but shares at least half its words with a name of the abbreviation's concept ("TSH receptor
        autoantibodies (TRAbs)" ~ "Anti-TSH receptor antibody positivity")."""
        entry = self._cs.get((abbreviation_key(short),)) if is_abbreviation(short) else None
        words = set(normalise_phrase(long).split()) - self._stop
        if entry is None or not words:
            return None
        for k in entry.concepts:
            if any(len(words & set(normalise_phrase(s).split())) * 2 >= len(words) for s in self.concepts[k].synonyms):
                return entry
        return None

    def _abbreviation_entry(self, token: str) -> _Entry | None:
        """What an abbreviation the text does not define stands for: the curated list's long form, else an
        ontology abbreviation written the same way, unless it is short (ambiguous out of context)."""
        key = abbreviation_key(token)
        if key in self._curated:
            return self._curated[key]
        return None if is_short(key) else self._cs.get((key,))

    def _mention(
        self, doc, i: int, j: int, entry: _Entry, abbreviation_of: str | None = None, norm: str | None = None
    ) -> Mention:
        """The mention of doc[i:j]; `norm` (default: the entry's) is the term key it counts for."""
        span = doc[i:j]
        cs = [self.concepts[k] for k in entry.concepts]
        primary, canonical = canon.choose(
            [(self.concepts[k], entry.strings[k]) for k in entry.concepts], entry.norm, self._normalised
        )
        return Mention(
            span.text,
            span.start_char,
            span.end_char,
            canonical,
            primary.id,
            primary.source,
            tuple(c.id for c in cs),
            norm or entry.norm,
            abbreviation_of,
        )

    # ----------------------------------------------------------------------------------- matching
    def _match_doc(self, doc) -> list[Mention]:
        texts = [t.text for t in doc]
        norms = [normalise_token(t) for t in texts]
        # each abbreviation the text defines: (its long form's entry, the long form), or None where the long form
        # names no concept ("costovertebral angle (CVA)"): then the text's own meaning rules out any other reading
        short_forms: dict[str, tuple[_Entry, str] | None] = {}
        if self.abbreviations:
            for short in doc._.abbreviations:
                long = short._.long_form
                entry = self._long_form_entry(long.text) or self._spelled_out(short.text, long.text)
                key = abbreviation_key(short.text)  # "UTIs" later in the text is the defined "UTI"
                if short_forms.get(key) is None:
                    short_forms[key] = (entry, long.text) if entry is not None else None
        out: list[Mention] = []
        i, n = 0, len(doc)
        while i < n:
            hit = self._abbreviation_hit(texts[i], i, short_forms)
            for L in range(min(self._max_len, n - i), 0, -1):
                if L == 1 and is_abbreviation(texts[i]):
                    break  # an abbreviation is never an ordinary word ("CAGE", "ALT")
                entry = self._ci.get(tuple(norms[i : i + L]))
                if entry is not None and (hit is None or i + L > hit[0]):
                    hit = (i + L, entry, None, None)
                    break
            if hit is None:
                i += 1
                continue
            j, entry, long_text, norm = hit
            out.append(self._mention(doc, i, j, entry, long_text, norm))
            i = j
        return out

    def _abbreviation_hit(
        self, token: str, i: int, short_forms: dict[str, tuple[_Entry, str] | None]
    ) -> tuple[int, _Entry, str | None, str | None] | None:
        """A one-token match of an abbreviation at position i: (end, entry, long form, term key). One defined in
        the text counts for its long form's term, as does its plural ("UTIs" after "... (UTI)"), and one it defines as
        something no concept names is no term ("posterior descending artery (PDA)": not the curated patent ductus
        arteriosus); a curated or ontology one is a term of its own ("COPD", so that it can be found in texts) with
        the concept of its long form (see `_abbreviation_entry`)."""
        if abbreviation_key(token) in short_forms:
            defined = short_forms[abbreviation_key(token)]
            if defined is None:  # defined in the text as something no concept names: not the curated reading
                return None
            entry, long_text = defined
            return i + 1, entry, long_text, None
        if not is_abbreviation(token):
            return None
        entry = self._abbreviation_entry(token)
        if entry is None:
            return None
        return i + 1, entry, None, abbreviation_key(token).lower()

    def extract(self, text: str) -> list[Mention]:
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str], progress: bool = False) -> list[list[Mention]]:
        import warnings

        with warnings.catch_warnings():  # scispaCy's detector warns that its global matcher has no patterns
            warnings.filterwarnings("ignore", message=r".*\[W036\]")
            texts = as_text_list(texts)
            docs = self.nlp.pipe(texts, batch_size=64)
            return [self._match_doc(d) for d in iter_progress(docs, len(texts), progress, "extracting terms")]


@functools.lru_cache(maxsize=1)
def default_offline_extractor() -> OfflineExtractor:
    """One shared extractor with the default dictionary (building it takes a few seconds)."""
    return OfflineExtractor()
