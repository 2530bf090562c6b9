"""The word-index pre-check never rules out a term the regex would find (it only saves regex runs)."""

from __future__ import annotations

import random

from specprobe.probe.occurrences import MatchOptions, TextIndex, find_spans

ALL_OPTIONS = [MatchOptions(c, w, f) for c in (False, True) for w in (False, True) for f in (False, True)]


def test_precheck_is_exact_on_tricky_cases():
    cases = [
        ("Severe HEART  failure noted.", "heart failure"),
        ("Non-small-cell lung cancer.", "non-small-cell lung cancer"),
        ("Risk: the \u212aidney (Kelvin-sign K).", "kidney"),  # regex IGNORECASE equates U+212A with k
        ("Diagno\u017fis pending.", "diagnosis"),  # long s
        ("\u0130nsulin given.", "insulin"),  # dotted capital I
        ("fi\u0131brosis", "fiibrosis"),
        ("Caf\u00e9 au lait spots.", "caf\u00e9 au lait spots"),
        ("x-ray, CT and MRI", "CT"),
        ("heartbeat", "heart"),
    ]
    for text, term in cases:
        for opts in ALL_OPTIONS:
            if find_spans(text, term, opts):
                assert TextIndex(text, opts).may_occur(term), (text, term, opts)
    # and it does rule out what cannot occur
    assert not TextIndex("Chest pain at rest.").may_occur("heart failure")
    assert not TextIndex("heartbeat").may_occur("heart")  # whole word by default
    assert TextIndex("heartbeat", MatchOptions(whole_word=False)).may_occur("heart")


def test_precheck_never_misses_on_random_texts():
    rng = random.Random(0)
    alphabet = list("abcdeiksABCDEIKS -,.") + ["\u212a", "\u017f", "\u0130", "\u0131", "\u00e9", "\n"]
    misses = checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        start = rng.randint(0, max(0, len(text) - 1))
        term = (
            text[start : start + rng.randint(1, 8)]
            if text and rng.random() < 0.7
            else "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        )
        if rng.random() < 0.5:
            term = term.swapcase()
        for opts in ALL_OPTIONS:
            if find_spans(text, term, opts):
                checked += 1
                misses += not TextIndex(text, opts).may_occur(term)
    assert checked > 500 and misses == 0


def test_locate_finds_the_same_occurrences_as_brute_force(smedqa_path):
    from specprobe.core.encoding import encode
    from specprobe.probe.prepare import locate
    from specprobe.terms.build import build_lexicon
    from specprobe.terms.datasets import TextRecord, load_qa
    from specprobe.testing.tiny_models import train_tokenizer

    lexicon = build_lexicon(smedqa_path)
    terms = {t: tuple(s) for t, s in lexicon.term_specialties().items()}
    records = [TextRecord(r.id, r.context_text(), tuple(r.specialties)) for r in load_qa(smedqa_path)][:150]
    assert any(not r.text.isascii() for r in records)
    tok = train_tokenizer("llama", vocab_size=500, lines=[r.text for r in records])
    encodings = [encode(tok, r.text) for r in records]
    found = {(o.text_index, o.term, o.start, o.end) for o in locate(records, encodings, terms, False, MatchOptions())}
    brute = {(ti, t, s, e) for ti, r in enumerate(records) for t in terms for s, e in find_spans(r.text, t)}
    assert found == brute and len(found) > 100
