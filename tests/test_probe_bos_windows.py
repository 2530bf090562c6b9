"""One BOS also when a text itself begins with the BOS string, and sliding windows that hold exactly
the context an occurrence keeps: flagged `truncated_context` if and only if earlier tokens were dropped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.core.encoding import EncodedText, encode
from specprobe.probe.occurrences import TRUNCATED_CONTEXT
from specprobe.probe.prepare import Occurrence, build_items
from specprobe.testing.tiny_models import train_tokenizer


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def tokenizer(request):
    return train_tokenizer(request.param, 600)


@pytest.mark.parametrize("add_bos", [None, False])
@pytest.mark.parametrize("prefix", ["{bos}", "{bos}{bos}", "{bos} "])
def test_a_text_that_begins_with_the_bos_string_gets_one_bos(tokenizer, prefix, add_bos):
    bos = tokenizer.bos_token_id
    if bos is None:  # Qwen2: no BOS, so a written "<|endoftext|>" is text like any other
        text = "<|endoftext|>The patient had a fever."
        enc = encode(tokenizer, text)
        assert enc.ids[0] == tokenizer.convert_tokens_to_ids("<|endoftext|>") and enc.offsets[0] == (0, 13)
        return
    head = prefix.format(bos=tokenizer.bos_token)
    text = head + "The patient had a fever."
    enc = encode(tokenizer, text, add_bos)
    written = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    n_written = prefix.count("{bos}")
    assert written["input_ids"][:n_written] == [bos] * n_written  # the tokenizer reads the string as BOS
    rest = tuple(written["input_ids"][n_written:])
    assert enc.ids == ((bos,) if add_bos is None else ()) + rest
    assert enc.ids.count(bos) == (1 if add_bos is None else 0)
    # the rest keeps the tokenizer's offsets; the written BOS characters belong to no token
    offsets = enc.offsets[1:] if add_bos is None else enc.offsets
    assert list(offsets) == [tuple(o) for o in written["offset_mapping"][n_written:]]
    assert enc.tokens_overlapping(0, len(tokenizer.bos_token)) is None


def test_a_bos_string_later_in_the_text_is_left_alone(tokenizer):
    if tokenizer.bos_token_id is None:  # Qwen2: nothing is added, the written special token stays
        special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        enc = encode(tokenizer, "The patient <|endoftext|> had a fever.")
        assert enc.ids.count(special) == 1 and enc.ids[0] != special
        return
    text = f"The patient {tokenizer.bos_token} had a fever."
    enc = encode(tokenizer, text)
    assert enc.ids.count(tokenizer.bos_token_id) == 2  # ours, and the one written in the middle


def _encoded(n: int, has_bos: bool) -> EncodedText:
    """n content tokens (ids 100, 101, ...), one character each, after an optional BOS (id 1)."""
    ids = ((1,) if has_bos else ()) + tuple(range(100, 100 + n))
    offsets = ((None,) if has_bos else ()) + tuple((k, k + 1) for k in range(n))
    return EncodedText(ids, offsets, has_bos=has_bos, offsets_source="tokenizer")


@st.composite
def windows(draw):
    has_bos = draw(st.booleans())
    max_length = draw(st.integers(2, 12))
    n = draw(st.integers(2, 40))
    enc = _encoded(n, has_bos)
    occs = []
    for _ in range(draw(st.integers(1, 6))):
        first = draw(st.integers(1, len(enc) - 1))
        last = draw(st.integers(first, min(len(enc) - 1, first + max_length - 2)))
        occs.append(Occurrence(0, "t", (), first, last + 1, False, first, last))
    return enc, occs, max_length


@settings(max_examples=300, deadline=None)
@given(windows())
def test_windows_keep_the_longest_context_and_flag_only_a_cut(case):
    enc, occs, max_length = case
    items, where = build_items([enc], occs, max_length, "window")
    for occ, (item_i, slots) in zip(occs, where):
        item = items[item_i]
        assert len(item.ids) <= max_length
        got = [item.positions[s] for s in slots]
        assert [item.ids[p] for p in got] == list(enc.ids[occ.first : occ.last + 1])  # the term's own tokens
        context = item.ids[: got[0]]
        full = enc.ids[: occ.first]
        if occ.last + 1 <= max_length:  # the whole text up to the term fits: nothing is cut
            assert context == full and TRUNCATED_CONTEXT not in occ.flags
        else:
            assert TRUNCATED_CONTEXT in occ.flags
            assert len(item.ids[: got[-1] + 1]) == max_length  # the longest window that fits
            if enc.has_bos:
                assert context[0] == enc.ids[0] and full[len(full) - len(context) + 1 :] == context[1:]
            else:
                assert len(context) >= 1 and full[len(full) - len(context) :] == context


@pytest.mark.parametrize("has_bos", [True, False])
def test_a_term_longer_than_any_window_is_refused_clearly(has_bos):
    enc = _encoded(30, has_bos)
    first = 20
    occ = Occurrence(0, "long term", (), 0, 10, False, first, first + 7)  # 8 tokens
    with pytest.raises(ValueError, match="'long term' has 8 tokens, more than fit in a window of max_length=8 tokens"):
        build_items([enc], [occ], 8, "window")
    build_items([enc], [Occurrence(0, "t", (), 0, 7, False, first, first + 6)], 8, "window")  # 7 tokens fit


def _zero_width_offsets(tok, monkeypatch) -> None:
    """`tok` gives every token a zero-width offset at its start, as the Llama-3 tokenizers did (tokenizers #1553)."""
    real_call = type(tok).__call__

    def zero_width(self, *a, **kw):
        out = real_call(self, *a, **kw)
        out["offset_mapping"] = [(s, s) for s, _ in out["offset_mapping"]]
        return out

    monkeypatch.setattr(type(tok), "__call__", zero_width)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_decoded_offsets_give_a_token_only_the_characters_its_bytes_belong_to(arch, monkeypatch):
    """The offsets rebuilt by decoding (tokenizers #1553) equal the tokenizer's own where a token holds a
    letter and the first bytes of the next character ("a" + half of "ï"): the token after it covers
    only that character, not the letter before it too."""
    tok = train_tokenizer(arch, 600)
    text = "naïve Sjögren, x😀y café 000aÀ"
    good = encode(tok, text)
    assert good.offsets_source == "tokenizer"
    assert any(o is not None and o[1] - o[0] == 2 and not text[o[0] : o[1]].isascii() for o in good.offsets)
    _zero_width_offsets(tok, monkeypatch)
    bad = encode(tok, text)
    assert bad.offsets_source == "decode" and bad.ids == good.ids
    for g, b in zip(good.offsets, bad.offsets):
        assert (g is None) == (b is None)
        if g is not None:
            assert text[g[0] : g[1]].strip() == text[b[0] : b[1]].strip(), (g, b)


@pytest.mark.parametrize("term", ["日本", "45"])
def test_a_term_at_the_start_has_the_tokens_it_has_mid_text(term):
    """Llama's dummy-prefix "▁" before CJK or a digit is a token of its own with the first character's
    span: at the start of a text it was counted in the term, mid-text (spanning the space) it was not."""
    tokenizer = train_tokenizer("llama", 600)
    start, middle = encode(tokenizer, f"{term} is far"), encode(tokenizer, f"The {term} is far")
    assert tokenizer.convert_ids_to_tokens(start.ids[1]) == "\u2581"  # the case in question
    first, last = start.tokens_overlapping(0, len(term))
    m_first, m_last = middle.tokens_overlapping(4, 4 + len(term))
    assert start.ids[first : last + 1] == middle.ids[m_first : m_last + 1]
    assert tokenizer.convert_ids_to_tokens(start.ids[first]) != "\u2581"


def test_occurrences_scored_in_a_cut_window_are_reported_in_the_log(caplog):
    """A text longer than max_length was scored in windows with only the row flag to show it; prepare()
    (compare, the layer views, patching) now also says how many occurrences lost their earlier text."""
    from specprobe.probe.prepare import prepare

    tok = train_tokenizer("llama", 600)
    text = "The patient had pain. " + "The committee met again today. " * 6 + "Then pain again."
    with caplog.at_level("WARNING", logger="specprobe.probe.prepare"):
        prep = prepare(tok, ["pain"], [text], controls=None, max_length=16)
    assert [TRUNCATED_CONTEXT in o.flags for o in prep.occs] == [False, True]
    assert "1 of 2 occurrence(s), in 1 text(s) longer than the context of 16 tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="specprobe.probe.prepare"):
        prepare(tok, ["pain"], [text], controls=None, max_length=1000)
    assert "occurrence" not in caplog.text


@pytest.mark.parametrize(
    ("arch", "text"),
    [
        ("gpt2", "Chat: <|start_header_id|>user<|end_header_id|>\n\nThe patient has heart failure.<|eot_id|>"),
        ("llama", "Sjögren\nsyndrome, naïve: heart failure"),  # byte-fallback tokens, special in the tiny tokenizer
    ],
)
def test_decoded_offsets_keep_special_tokens_written_in_the_text(arch, text, monkeypatch):
    """Offsets rebuilt by decoding skipped special tokens, so a text holding written ones (a chat template's
    header and turn markers), or byte-fallback pieces a tokenizer registers as special, never decoded to
    itself: a TokenizerError where the tokenizer's own offsets were broken (tokenizers #1553)."""
    tok = train_tokenizer(arch, 600)
    if arch == "gpt2":
        tok.add_special_tokens(
            {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
        )
    good = encode(tok, text)
    assert good.offsets_source == "tokenizer"
    _zero_width_offsets(tok, monkeypatch)
    bad = encode(tok, text)
    assert bad.offsets_source == "decode" and bad.ids == good.ids
    start = text.index("heart failure")
    covering = [k for k, o in enumerate(good.offsets) if o is not None and o[0] < start + 13 and o[1] > start]
    assert [k for k, o in enumerate(bad.offsets) if o is not None and o[0] < start + 13 and o[1] > start] == covering
