"""Prompt format, continuation positions on three tokenizer conventions, record checks, specialty selection."""

from __future__ import annotations

import pytest

from specprobe.core.models import load_tokenizer
from specprobe.finetune.data import NO_SPECIALTY, explode_specialties, load_selected, select, specialty_counts
from specprobe.finetune.prompts import PromptFormat, check_record, encode_continuation, resolve_format
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
        assert tok.decode(list(enc.ids[enc.positions[0] :])).strip() == cont.strip()
        assert not enc.straddles
        assert len(enc.ids) > enc.positions[0] - 1 >= 1  # the prompt precedes the continuation
    # left truncation keeps BOS and the continuation, drops prompt tokens
    full = encode_continuation(tok, prompt, " heparin")
    cut = encode_continuation(tok, prompt, " heparin", max_length=len(full.ids) - 5)
    assert len(cut.ids) == len(full.ids) - 5 and cut.n_dropped == 5
    assert cut.ids[len(cut.ids) - len(full.positions) :] == full.ids[-len(full.positions) :]
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
    recs = [
        REC,
        QARecord("q2", "q?", ("a", "b"), "a", ("Neurology",)),
        QARecord("q3", "q?", ("a", "b"), "b", ("Neurology",)),
    ]
    assert specialty_counts(recs) == {"Cardiology": 1, "Neurology": 2}
    assert [r.id for r in select(recs, "neurology")] == ["q2", "q3"]
    assert len(select(recs, "all")) == 3 and len(select(recs, ["Cardiology", "Neurology"])) == 3
    with pytest.raises(DataError, match=r"'Dermatology'.*available: Neurology \(2\), Cardiology \(1\)"):
        select(recs, "Dermatology", "qa.json")


def test_one_specialty_explosion_and_record_loading():
    import pandas as pd

    recs = [
        REC,
        QARecord("q2", "q?", ("a", "b"), "a", ("Cardiology", "Neurology")),
        QARecord("q3", "q?", ("a", "b"), "b"),
    ]
    frame = pd.DataFrame({"item_id": [r.id for r in recs], "specialties": [r.specialties for r in recs]})
    rows = explode_specialties(frame)
    assert list(zip(rows["item_id"], rows["specialty"])) == [
        ("q1", "Cardiology"),
        ("q2", "Cardiology"),
        ("q2", "Neurology"),
        ("q3", NO_SPECIALTY),
    ]
    assert specialty_counts(recs) == {"Cardiology": 2, "Neurology": 1, NO_SPECIALTY: 1}
    chosen, meta = load_selected(recs, "Neurology")
    assert [r.id for r in chosen] == ["q2"] and meta["path"] is None and meta["n_records"] == 3
    with pytest.raises(DataError, match="^data: no questions for specialty 'Oncology'"):
        load_selected(recs, "Oncology")


def test_resolve_format_prefers_given_parts_then_trained_then_defaults():
    trained = PromptFormat(template="Q: {question}\n{options}\nA:", continuation="text").to_dict()
    assert resolve_format(None) == PromptFormat()
    assert resolve_format(trained) == PromptFormat.from_dict(trained)
    fmt = resolve_format(trained, option_format="({letter}) {option}", continuation="letter")
    assert (fmt.template, fmt.option_format, fmt.continuation) == (
        "Q: {question}\n{options}\nA:",
        "({letter}) {option}",
        "letter",
    )


def test_library_versions_extra_packages_follow_the_defaults():
    from specprobe.finetune.training import EXTRA_VERSIONS
    from specprobe.utils.provenance import library_versions

    base = library_versions()
    both = library_versions(EXTRA_VERSIONS)
    assert list(both) == list(base) + list(EXTRA_VERSIONS) and {k: both[k] for k in base} == base
    assert library_versions(["specprobe", "no-such-package-xyz"], defaults=False) == {
        "specprobe": base["specprobe"],
        "no-such-package-xyz": "not installed",
    }
    assert library_versions(["no-such-package-xyz"], defaults=False, missing=None) == {}


def test_cli_help_texts_print_as_written():
    import argparse

    from specprobe.finetune.cli import register

    parser = argparse.ArgumentParser(prog="specprobe")
    sub = parser.add_subparsers()
    register(sub)
    text = sub.choices["evaluate"].format_help()
    assert "Wilson 95% intervals" in " ".join(text.split()) and "%%" not in text
    assert "%%" not in sub.choices["finetune"].format_help()


def test_a_specialty_listed_twice_counts_the_question_once():
    import pandas as pd

    from specprobe.finetune.evaluation import accuracy_table

    recs = [QARecord("q1", "q?", ("a", "b"), "a", ("Cardiology", "Cardiology")), QARecord("q2", "q?", ("a", "b"), "b")]
    assert specialty_counts(recs) == {"Cardiology": 1, NO_SPECIALTY: 1}
    frame = pd.DataFrame(
        {"model": "m", "specialties": [("C", "C", "N"), ("C",)], "correct": [True, False], "correct_norm": True}
    )
    assert list(explode_specialties(frame)["specialty"]) == ["C", "N", "C"]
    acc = accuracy_table(frame).set_index("specialty")
    assert acc.loc["C", "n"] == 2 and acc.loc["C", "n_correct"] == 1 and acc.loc["N", "n"] == 1


def test_answer_options_are_every_copy_of_the_answer_text():
    from specprobe.finetune.prompts import answer_options

    assert answer_options(REC) == {2}
    dup = QARecord("d", "q?", ("x", "y", "x"), "x")
    assert answer_options(dup) == {0, 2} and dup.answer_index == 0


def test_a_specialty_spelled_two_ways_selects_every_spelling():
    """Data with "Cardiology" and "cardiology": selecting either (matched case-insensitively) keeps the
    questions of both; before, only the spelling seen last was kept, even when asked for the other exactly."""
    from specprobe.finetune.data import data_specialties

    recs = [
        QARecord("q1", "q?", ("a", "b"), "a", ("Cardiology",)),
        QARecord("q2", "q?", ("a", "b"), "a", ("Cardiology",)),
        QARecord("q3", "q?", ("a", "b"), "a", ("cardiology",)),
        QARecord("q4", "q?", ("a", "b"), "a", ("Neurology",)),
    ]
    for asked in ("Cardiology", "cardiology", "CARDIOLOGY"):
        assert [r.id for r in select(recs, asked)] == ["q1", "q2", "q3"]
        assert data_specialties(recs, asked) == ["Cardiology", "cardiology"]
    assert data_specialties(recs[:2], "cardiology") == ["Cardiology"]


def test_a_specialty_named_with_a_comma_is_one_specialty(tmp_path):
    """A specialty the data spells with a comma ("Obstetrics, gynecology") is that specialty, not the
    comma list "Obstetrics" and "gynecology" (which selected the questions of two other specialties); a
    comma list of other names is still a list."""
    from specprobe.finetune.data import data_specialties
    from specprobe.probe.training_data import training_data

    recs = [
        QARecord("q1", "q1?", ("a", "b"), "a", ("Obstetrics, gynecology",)),
        QARecord("q2", "q2?", ("a", "b"), "a", ("Obstetrics",)),
        QARecord("q3", "q3?", ("a", "b"), "a", ("Gynecology",)),
    ]
    for asked in ("Obstetrics, gynecology", " obstetrics, GYNECOLOGY", ["Obstetrics, gynecology"]):
        assert [r.id for r in select(recs, asked)] == ["q1"]
    assert data_specialties(recs, ["Obstetrics, gynecology", "Gynecology"]) == ["Gynecology", "Obstetrics, gynecology"]
    assert [r.id for r in select(recs, "Obstetrics,Gynecology")] == ["q2", "q3"]
    assert [r.id for r in select(recs[:1] + recs[:1], "Obstetrics, gynecology")] == ["q1", "q1"]
    # an adapter folder without a manifest: the records are taken as given, filtered by the specialty
    trained = training_data(str(tmp_path), train_data=recs, specialty="Obstetrics, gynecology")
    assert [r.id for r in trained.records] == ["q1"] and trained.specialties == ("Obstetrics, gynecology",)
