"""Prompt format, continuation positions on three tokenizer conventions, record checks, specialty selection."""

from __future__ import annotations

import pytest

from specprobe.finetune.data import select, specialty_counts
from specprobe.finetune.prompts import PromptFormat, check_record, encode_continuation
from specprobe.core.models import load_tokenizer
from specprobe.terms.datasets import DataError, QARecord

REC = QARecord("q1", "Which drug treats angina?", ("nitroglycerin", "insulin", "heparin"), "heparin", ("Cardiology",))


def test_prompt_and_continuations():
    fmt = PromptFormat()
    assert fmt.prompt(REC) == "Question: Which drug treats angina?\nA. nitroglycerin\nB. insulin\nC. heparin\nAnswer:"
    assert fmt.continuations(REC) == [" A", " B", " C"]
    assert fmt.target(REC) == " C"
    text = PromptFormat(continuation="text")
    assert text.continuations(REC) == [" nitroglycerin", " insulin", " heparin"]
    assert PromptFormat.from_dict(text.to_dict()) == text
    with pytest.raises(ValueError, match="question"):
        PromptFormat(template="no placeholders")
    with pytest.raises(ValueError, match="continuation"):
        PromptFormat(continuation="words")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_continuation_tokens_are_the_option(tiny_dir, arch):
    from conftest import _build

    base, _ = _build(tiny_dir, arch)
    tok = load_tokenizer(str(base))
    fmt = PromptFormat(continuation="text")
    prompt = fmt.prompt(REC)
    for cont in fmt.continuations(REC):
        enc = encode_continuation(tok, prompt, cont)
        assert enc.positions == tuple(range(enc.positions[0], len(enc.ids)))
        assert tok.decode(list(enc.ids[enc.positions[0]:])).strip() == cont.strip()
        assert not enc.straddles
        assert len(enc.ids) > enc.positions[0] - 1 >= 1  # the prompt precedes the continuation
    # left truncation keeps BOS and the continuation, drops prompt tokens
    full = encode_continuation(tok, prompt, " heparin")
    cut = encode_continuation(tok, prompt, " heparin", max_length=len(full.ids) - 5)
    assert len(cut.ids) == len(full.ids) - 5 and cut.n_dropped == 5
    assert cut.ids[len(cut.ids) - len(full.positions):] == full.ids[-len(full.positions):]
    if tok.bos_token_id is not None and full.ids[0] == tok.bos_token_id:
        assert cut.ids[0] == tok.bos_token_id
    eos = encode_continuation(tok, prompt, " C", append_eos=True)
    assert eos.ids[-1] == tok.eos_token_id and eos.positions[-1] == len(eos.ids) - 1


def test_record_checks():
    check_record(REC)
    with pytest.raises(DataError, match="options list is empty"):
        check_record(QARecord("x", "q?", (), "a"), "f.json: item 3")
    with pytest.raises(DataError, match=r"f.json: item 3.*not one of the options"):
        check_record(QARecord("x", "q?", ("a", "b"), "c"), "f.json: item 3")


def test_select_specialty_errors_list_counts():
    recs = [REC, QARecord("q2", "q?", ("a", "b"), "a", ("Neurology",)), QARecord("q3", "q?", ("a", "b"), "b", ("Neurology",))]
    assert specialty_counts(recs) == {"Cardiology": 1, "Neurology": 2}
    assert [r.id for r in select(recs, "neurology")] == ["q2", "q3"]
    assert len(select(recs, "all")) == 3 and len(select(recs, ["Cardiology", "Neurology"])) == 3
    with pytest.raises(DataError, match=r"'Dermatology'.*available: Neurology \(2\), Cardiology \(1\)"):
        select(recs, "Dermatology", "qa.json")
