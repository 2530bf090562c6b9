"""Loaders: every format, malformed-record errors naming file/item/field, skip_bad."""

import json

import pytest

from specprobe.terms.datasets import DataError, QARecord, load_qa, load_qa_report


def _smedqa(tmp_path, items, name="s.json"):
    p = tmp_path / name
    p.write_text(json.dumps(items))
    return p


GOOD = {"Question": "A man has chest pain.", "Specialty": "Cardiology", "Options": ["a", "b", "c", "d"], "Answer": "b"}


def test_smedqa_string_and_list_specialty(tmp_path):
    p = _smedqa(tmp_path, [GOOD, dict(GOOD, Specialty=["Cardiology", "Emergency medicine"])])
    recs = load_qa(p)
    assert recs[0].specialties == ("Cardiology",)
    assert recs[1].specialties == ("Cardiology", "Emergency medicine")
    assert recs[0].answer_index == 1
    assert recs[0].context_text().endswith("D. d")


def test_old_signature_still_works(tmp_path):
    recs = load_qa(_smedqa(tmp_path, [GOOD]), skip_bad=False)
    assert isinstance(recs[0], QARecord)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({k: v for k, v in GOOD.items() if k != "Options"}, "Options"),
        (dict(GOOD, Answer="zzz"), "Answer"),
        (dict(GOOD, Question=""), "Question"),
        (dict(GOOD, Specialty=3), "Specialty"),
    ],
)
def test_malformed_record_error_names_file_index_field(tmp_path, bad, field):
    p = _smedqa(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(DataError) as exc:
        load_qa(p)
    msg = str(exc.value)
    assert str(p) in msg and "item 2" in msg and field in msg


def test_skip_bad_reports(tmp_path, caplog):
    p = _smedqa(tmp_path, [GOOD, dict(GOOD, Answer="zzz"), GOOD])
    recs, skipped = load_qa_report(p, skip_bad=True)
    assert len(recs) == 2 and len(skipped) == 1 and "item 1" in skipped[0]
    with caplog.at_level("WARNING"):
        assert len(load_qa(p, skip_bad=True)) == 2
    assert "skipped 1" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_qa(tmp_path / "nope.json")


def test_medqa_jsonl(tmp_path):
    p = tmp_path / "m.jsonl"
    rows = [
        {"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer_idx": "B", "meta_info": "step1"},
        {"question": "Q2?", "options": {"A": "x", "B": "y"}, "answer_idx": "C"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"m.jsonl: item 1 \(line 2\): field 'answer_idx'"):
        load_qa(p)
    recs = load_qa(p, skip_bad=True)
    assert recs[0].answer == "y" and recs[0].options == ("x", "y")


def test_medqa_answer_text_that_contradicts_answer_idx_is_an_error(tmp_path):
    """MedQA rows give the answer twice, as text and as a letter; when they disagree (options reordered,
    the letter not updated) the letter's option was taken as gold silently."""
    p = tmp_path / "m.jsonl"
    row = {"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer": "y", "answer_idx": "A"}
    p.write_text(json.dumps(row))
    with pytest.raises(DataError, match=r"item 0 \(line 1\): field 'answer' 'y' is not option A 'x'"):
        load_qa(p)
    p.write_text(json.dumps(dict(row, answer_idx="B")))
    assert load_qa(p)[0].answer == "y"


def test_medmcqa(tmp_path):
    p = tmp_path / "mc.json"
    row = {
        "id": "q1",
        "question": "Q?",
        "opa": "a",
        "opb": "b",
        "opc": "c",
        "opd": "d",
        "cop": 3,
        "subject_name": "Medicine",
    }
    p.write_text(json.dumps(row) + "\n")
    rec = load_qa(p, mapping={"cop_base": 1})[0]
    assert rec.answer == "c" and rec.specialties == ("Medicine",) and rec.id == "q1"
    assert load_qa(p, mapping={"cop_base": 0}, format="medmcqa")[0].answer == "d"
    for bad in (9, True):  # a JSON true was option 1 (a)
        p.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, id="q2", cop=bad)) + "\n")
        with pytest.raises(DataError, match=r"mc.json: item 1 \(line 2\): field 'cop'"):
            load_qa(p, mapping={"cop_base": 1})


def _medmcqa_file(tmp_path, cops, name="mc.jsonl"):
    p = tmp_path / name
    rows = [
        {"id": f"q{i}", "question": f"Q{i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": c}
        for i, c in enumerate(cops)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_medmcqa_cop_base_is_read_from_the_file(tmp_path):
    """The Hugging Face copy counts cop from 0: read as 1-based, a 0 was an error (dropped with skip_bad) and
    every other answer silently the next option; the file's numbers now say which base it uses."""
    hf = _medmcqa_file(tmp_path, [0, 1, 2, 3, 1], "hf.jsonl")  # answers a b c d b
    records, skipped = load_qa_report(hf, skip_bad=True)
    assert [r.answer for r in records] == ["a", "b", "c", "d", "b"] and skipped == []  # was: c d d c, 1 skipped
    original = _medmcqa_file(tmp_path, [4, 1, 2, 3], "orig.jsonl")  # answers d a b c
    assert [r.answer for r in load_qa(original)] == ["d", "a", "b", "c"]
    assert [r.answer for r in load_qa(hf, mapping={"cop_base": 0})] == ["a", "b", "c", "d", "b"]  # auto format


@pytest.mark.parametrize(
    "cops, seen, from_0, from_1",
    [([1, 2, 3, 2], "only 1, 2, 3", "bcdc", "abcb"), ([0, 4, 2], "both 0 and 4", "ac", "db")],
)
def test_medmcqa_cop_base_the_file_cannot_tell_is_asked_for(tmp_path, cops, seen, from_0, from_1):
    """A file with no 0 and no 4 fits both bases (was: read as 1-based, silently a shifted answer if it was
    the 0-based copy): it is refused, in one line naming the file, until the base is passed."""
    p = _medmcqa_file(tmp_path, cops)
    with pytest.raises(DataError) as info:
        load_qa(p, skip_bad=True)
    msg = str(info.value)
    assert msg.startswith(f"{p}: field 'cop' holds {seen}") and '"cop_base": 0' in msg and "\n" not in msg
    assert "".join(r.answer for r in load_qa(p, mapping={"cop_base": 0}, skip_bad=True)) == from_0
    assert "".join(r.answer for r in load_qa(p, mapping={"cop_base": 1}, skip_bad=True)) == from_1
    for base in (2, "0", True):
        with pytest.raises(DataError, match=rf"mapping 'cop_base' {base!r} must be 0 or 1"):
            load_qa(p, mapping={"cop_base": base}, format="medmcqa")


def test_instruction_format(tmp_path):
    p = tmp_path / "i.json"
    rows = [
        {
            "instruction": "Answer the question.",
            "input": "A woman has a rash.\nA. Psoriasis\nB. Eczema\nC. Acne",
            "output": "B. Eczema",
            "specialty": "Dermatology",
        },
        {"instruction": "Answer.", "input": "Q?\n(A) one\n(B) two", "output": "two"},
        {"instruction": "Answer.", "input": "Q? no options", "output": "A"},
    ]
    p.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"item 2: field 'input'"):
        load_qa(p)
    recs = load_qa(p, skip_bad=True)
    assert recs[0].question == "A woman has a rash." and recs[0].answer == "Eczema"
    assert recs[0].specialties == ("Dermatology",)
    assert recs[1].answer == "two"


def test_instruction_output_that_is_an_option_text_starting_with_a_letter(tmp_path):
    """An output equal to an option's text is that option, even when it starts like a letter answer
    ("A ruptured spleen" was read as letter A, the first option); "B." and "(C)" stay letters."""
    p = tmp_path / "i.jsonl"
    q = "A man fell.\nA. Aspirin\nB. A ruptured spleen\nC. Rest"
    outs = ["A ruptured spleen", "B. A ruptured spleen", "(C)", "A", "A. Aspirin"]
    p.write_text("".join(json.dumps({"instruction": "Pick.", "input": q, "output": o}) + "\n" for o in outs))
    assert [r.answer for r in load_qa(p)] == ["A ruptured spleen", "A ruptured spleen", "Rest", "Aspirin", "Aspirin"]


def test_instruction_question_lines_lettered_like_options_stay_question(tmp_path):
    """A question line that starts like an option ("E. coli grew ...", "C. difficile ...") became an extra
    option, cut the question there and re-lettered the answer (A -> B): the options are the last run lettered
    A, B, C, ... in order; a repeated letter starts no option."""
    q = "A 30-year-old woman has dysuria.\nE. coli grows from her urine culture.\nWhich drug is first line?"
    opts = "A. Nitrofurantoin\nB. Vancomycin\nC. Caspofungin\nD. Acyclovir"
    rows = [
        {"instruction": "Pick.", "input": f"{q}\n{opts}", "output": "A"},
        {"instruction": "Pick.", "input": f"C. difficile was found.\nA. baumannii too.\nWhy?\n{opts}", "output": "B"},
        {"instruction": "Pick.", "input": "Which?\nA. one\n\nB. two\nC. three\nB. again", "output": "C"},
    ]
    p = tmp_path / "i.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second, third = load_qa(p)
    assert first.question == q and first.options == ("Nitrofurantoin", "Vancomycin", "Caspofungin", "Acyclovir")
    assert first.answer == "Nitrofurantoin"
    assert second.question == "C. difficile was found.\nA. baumannii too.\nWhy?" and second.answer == "Vancomycin"
    assert third.options == ("one", "two", "three") and third.answer == "three"


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("A ruptured spleen.", "A ruptured spleen"),  # was read as letter A
        ("a ruptured spleen", "A ruptured spleen"),
        ("C. A ruptured spleen", "A ruptured spleen"),
        ("(C) A ruptured spleen.", "A ruptured spleen"),
        ("B)", "Cholecystitis"),
        ("The answer is pancreatitis.", "Pancreatitis"),
    ],
)
def test_instruction_output_with_punctuation_names_its_option(tmp_path, output, answer):
    q = "Pain.\nA. Appendicitis\nB. Cholecystitis\nC. A ruptured spleen\nD. Pancreatitis"
    p = tmp_path / "i.jsonl"
    p.write_text(json.dumps({"instruction": "Pick.", "input": q, "output": output}) + "\n")
    assert load_qa(p)[0].answer == answer


def test_instruction_output_whose_letter_and_text_disagree_is_refused(tmp_path):
    q = "Pain.\nA. Appendicitis\nB. Cholecystitis"
    p = tmp_path / "i.jsonl"
    p.write_text(json.dumps({"instruction": "Pick.", "input": q, "output": "A. Cholecystitis"}) + "\n")
    with pytest.raises(DataError, match=r"names option A by letter but B by text"):
        load_qa(p)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # an unquoted comma in the last cell: the specialty was read as "Obstetrics" alone
        ("Which drug?,x,y,B,Obstetrics, gynecology", r"item 1: line 3 has 6 cells for 5 columns"),
        # a row cut short: the specialty was silently none
        ("Which drug?,x,y,B", r"item 1: line 3 has 4 cells for 5 columns \(no 'spec'\)"),
    ],
)
def test_csv_row_with_more_or_fewer_cells_than_the_header_is_an_error(tmp_path, line, message):
    p = tmp_path / "d.csv"
    p.write_text(f'q,o1,o2,ans,spec\nChest pain?,MI,PE,A,"Obstetrics, gynecology"\n{line}\n')
    mapping = {
        "question": "q",
        "options": ["o1", "o2"],
        "answer": "ans",
        "answer_format": "letter",
        "specialty": "spec",
    }
    with pytest.raises(DataError, match=f"d.csv: {message}"):
        load_qa(p, mapping=mapping)
    (rec,) = load_qa(p, mapping=mapping, skip_bad=True)  # a quoted comma is one cell
    assert rec.specialties == ("Obstetrics, gynecology",)


def test_csv_with_mapping(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("qid,q,o1,o2,o3,ans,spec\n1,Chest pain?,MI,PE,GERD,A,Cardiology;Emergency medicine\n2,Q?,x,y,z,Q,\n")
    mapping = {
        "id": "qid",
        "question": "q",
        "options": ["o1", "o2", "o3"],
        "answer": "ans",
        "answer_format": "letter",
        "specialty": "spec",
    }
    with pytest.raises(DataError, match=r"d.csv: item 1: field 'ans'"):
        load_qa(p, mapping=mapping)
    recs = load_qa(p, mapping=mapping, skip_bad=True)
    assert recs[0].id == "1" and recs[0].answer == "MI"
    assert recs[0].specialties == ("Cardiology", "Emergency medicine")


def test_jsonl_with_mapping(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text("".join(json.dumps({"text": "Q?", "choices": ["a", "b"], "label": k}) + "\n" for k in (1, 0)))
    recs = load_qa(
        p,
        format="jsonl",
        mapping={"question": "text", "options": "choices", "answer": "label", "answer_format": "index"},
    )
    assert [r.answer for r in recs] == ["b", "a"]


@pytest.mark.parametrize(
    ("labels", "base", "answers"),
    [
        ([1, 2, 3], None, None),  # cannot tell: refused (it was read from 0: b, c, d)
        ([1, 2, 4], None, ["a", "b", "d"]),  # a 4 of 4 options: from 1
        ([0, 2, 3], None, ["a", "c", "d"]),  # a 0: from 0
        ([0, 2, 4], None, None),  # both: refused
        ([1, 2, 3], 1, ["a", "b", "c"]),  # said
        ([1, 2, 3], 0, ["b", "c", "d"]),
        ([1, 2, 3], 2, None),  # not 0 or 1
    ],
)
def test_index_answers_count_from_what_the_file_shows_or_the_mapping_says(tmp_path, labels, base, answers):
    """An index answer column counted from 1 was read from 0 (index_base defaulted to 0): every answer one
    option later, an error only where an answer was the last option, and silently so with skip_bad."""
    rows = [{"q": f"Q{k}?", "opts": ["a", "b", "c", "d"], "y": label} for k, label in enumerate(labels)]
    for path in (tmp_path / "i.jsonl", tmp_path / "i.csv"):
        if path.suffix == ".csv":
            lines = ["q,o1,o2,o3,o4,y"] + [f"{r['q']},a,b,c,d,{r['y']}" for r in rows]
            path.write_text("\n".join(lines) + "\n")
            mapping = {"question": "q", "options": ["o1", "o2", "o3", "o4"], "answer": "y", "answer_format": "index"}
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            mapping = {"question": "q", "options": "opts", "answer": "y", "answer_format": "index"}
        if base is not None:
            mapping["index_base"] = base
        if answers is None:
            with pytest.raises(DataError, match=r"index_base"):
                load_qa(path, mapping=mapping)
        else:
            assert [r.answer for r in load_qa(path, mapping=mapping)] == answers


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("letter", "B", "b"),
        ("letter", "(c)", "c"),
        ("letter", "B.", "b"),
        ("letter", "", None),  # was option A
        ("letter", "BC", None),  # was option B
        ("letter", "D", None),  # a letter beyond the options
        ("index", 1, "b"),
        ("index", "2", "c"),
        ("index", 2.0, "c"),
        ("index", -1, None),  # was the last option
        ("index", 3, None),
        ("index", 1.5, None),  # was option b
        ("index", "x", None),
    ],
)
def test_mapped_answers_name_exactly_one_option(tmp_path, fmt, value, expected):
    """A letter or index answer that names no option (empty, two letters, negative, fractional, out of
    range) is an error naming the field, never a silently chosen option."""
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"text": "Q?", "choices": ["a", "b", "c"], "label": value}) + "\n")
    mapping = {"question": "text", "options": "choices", "answer": "label", "answer_format": fmt, "index_base": 0}
    if expected is None:
        with pytest.raises(DataError, match=r"m.jsonl: item 0 \(line 1\): field 'label'"):
            load_qa(p, format="jsonl", mapping=mapping)
    else:
        assert load_qa(p, format="jsonl", mapping=mapping)[0].answer == expected


def test_mapped_options_must_be_non_empty(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"text": "Q?", "choices": ["a", "  "], "label": "a"}) + "\n")
    with pytest.raises(DataError, match="non-empty option strings"):
        load_qa(p, format="jsonl", mapping={"question": "text", "options": "choices", "answer": "label"})


def test_unknown_format(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_qa(p)
    with pytest.raises(ValueError, match="unknown QA format"):
        load_qa(p, format="bogus")


# ------------------------------------------------------------------------- options past J, specialties once
def test_more_than_ten_options_are_lettered_as_the_prompts_letter_them(tmp_path):
    """A question with 11+ options: context_text raised IndexError (letters A-J); it letters them A-Z, as
    `finetune.prompts` does, and a record with more than 26 is an error naming the question (and the
    file and item when it is loaded), never an IndexError."""
    from specprobe.finetune.prompts import LETTERS

    opts = [f"option {k}" for k in range(12)]
    rec = QARecord("q7", "Which?", tuple(opts), opts[11])
    assert rec.context_text().splitlines()[1:] == [f"{LETTERS[k]}. option {k}" for k in range(12)]
    assert rec.context_text().endswith("L. option 11")
    too_many = QARecord("q8", "Which?", tuple(f"o{k}" for k in range(27)), "o0")
    with pytest.raises(DataError, match=r"^question 'q8': 27 options; at most 26 can be lettered \(A-Z\)$"):
        too_many.context_text()
    many = [f"o{k}" for k in range(27)]
    p = _smedqa(tmp_path, [dict(GOOD, Options=opts, Answer=opts[0]), dict(GOOD, Options=many, Answer="o3")])
    with pytest.raises(DataError, match=r"s.json: item 1 \(id 's:1'\): 27 options; at most 26"):
        load_qa(p)
    recs, skipped = load_qa_report(p, skip_bad=True)
    assert len(recs) == 1 and len(skipped) == 1


def test_letters_past_j_in_mapped_and_instruction_files(tmp_path):
    """A letter answer past J names its option (it was "not one of the options"); an instruction file's
    option lines K, L, ... after "J. ..." are options (they were dropped), while a line lettered past J
    elsewhere ("S. aureus ...") stays text."""
    opts = [f"option {k}" for k in range(12)]
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"text": "Q?", "choices": opts, "label": "K"}) + "\n")
    mapping = {"question": "text", "options": "choices", "answer": "label", "answer_format": "letter"}
    assert load_qa(p, format="jsonl", mapping=mapping)[0].answer == "option 10"
    lines = "\n".join(f"{chr(65 + k)}. option {k}" for k in range(12))
    q = "S. aureus grew in culture. Which drug?"
    p = tmp_path / "i.jsonl"
    rows = [{"instruction": "Pick.", "input": f"{q}\n{lines}", "output": out} for out in ("L", "B")]
    rows.append({"instruction": "Pick.", "input": "Which?\nA. one\nB. two\nS. aureus", "output": "B"})
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = load_qa(p)
    assert recs[0].options == tuple(opts) and recs[0].answer == "option 11" and recs[0].question == q
    assert recs[1].answer == "option 1"
    assert recs[2].options == ("one", "two")


def test_a_specialty_listed_twice_is_kept_once(tmp_path):
    """A record listing a specialty twice had it twice (counted twice in the lexicon's corpus signal);
    it is kept once, in first order, from every loader and in records built directly."""
    from specprobe.terms.datasets import TextRecord

    p = _smedqa(tmp_path, [dict(GOOD, Specialty=["Neurology", "Cardiology", " Neurology"])])
    assert load_qa(p)[0].specialties == ("Neurology", "Cardiology")
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("q,a,b,ans,spec\nQ?,x,y,x,Neurology;Cardiology;Neurology\n")
    mapping = {"question": "q", "options": ["a", "b"], "answer": "ans", "specialty": "spec"}
    assert load_qa(csv_file, mapping=mapping)[0].specialties == ("Neurology", "Cardiology")
    rec = QARecord("q", "Q?", ("x", "y"), "x", ("Neurology", "Neurology", "Cardiology"))
    assert rec.specialties == ("Neurology", "Cardiology")
    assert rec.as_text_record().specialties == ("Neurology", "Cardiology")
    assert TextRecord("t", "text", ("Cardiology", "Cardiology")).specialties == ("Cardiology",)
    with pytest.raises(TypeError, match="record 't': specialties must be a sequence of strings, not the string"):
        TextRecord("t", "text", "Cardiology")  # type: ignore[arg-type]


# ------------------------------------------------------------------ JSON Lines, and JSON that is not QA data
def _json_lines(path, items, blank_after=()):
    lines = []
    for k, item in enumerate(items):
        lines.append(item if isinstance(item, str) else json.dumps(item))
        if k in blank_after:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["s.jsonl", "s.ndjson", "s.json"])
def test_smedqa_json_lines_are_read_as_records(tmp_path, name):
    """S-MedQA records one per line were refused, 'not valid JSON (Extra data: line 2 column 1 ...)', whatever
    the suffix; they load as the same records as the JSON list (a .json file of JSON Lines too)."""
    items = [GOOD, dict(GOOD, Question="A girl has seizures.", Specialty="Neurology", Answer="c")]
    (tmp_path / "list").mkdir()
    expected = load_qa(_smedqa(tmp_path / "list", items))
    p = _json_lines(tmp_path / name, items, blank_after=(0,))
    assert load_qa(p) == expected
    assert load_qa(p, format="smedqa") == expected


def test_smedqa_json_lines_errors_name_the_line(tmp_path):
    p = _json_lines(tmp_path / "s.jsonl", [GOOD, {k: v for k, v in GOOD.items() if k != "Answer"}], (0,))
    with pytest.raises(DataError, match=r"s.jsonl: item 1 \(line 3\): missing field 'Answer'$"):
        load_qa(p)
    p = _json_lines(tmp_path / "b.jsonl", [GOOD, json.dumps(GOOD)[:30], GOOD])
    with pytest.raises(DataError, match=r"b.jsonl: line 2: not valid JSON \(Unterminated string"):
        load_qa(p)
    recs, skipped = load_qa_report(p, skip_bad=True)
    assert len(recs) == 2 and len(skipped) == 1 and "b.jsonl: line 2: not valid JSON" in skipped[0]


def test_the_real_split_as_json_lines_loads_the_same_records(tmp_path):
    from specprobe.terms.datasets import default_data_path

    real = default_data_path()
    if not real.exists():
        pytest.skip(f"S-MedQA data not found at {real}")
    items = json.loads(real.read_text(encoding="utf-8"))
    p = _json_lines(tmp_path / f"{real.stem}.jsonl", items)
    assert load_qa(p) == load_qa(real)


@pytest.mark.parametrize("fmt", ["auto", "smedqa", "medqa"])
def test_a_lexicon_given_as_qa_data_is_named_as_one(tmp_path, fmt):
    """A lexicon (one pretty-printed JSON object) given as data said 'line 1: not valid JSON (Expecting
    property name enclosed in double quotes, column 2)' though the file is valid JSON."""
    from tests.test_terms_lexicon import _toy

    lex = _toy().save(tmp_path / "lex.json")
    with pytest.raises(DataError, match=r"lex.json: a specprobe term lexicon, not QA data \(expected a JSON list"):
        load_qa(lex, format=fmt)
    one_line = tmp_path / "lex1.json"
    one_line.write_text(json.dumps(json.loads(lex.read_text())))
    with pytest.raises(DataError, match=r"lex1.json: a specprobe term lexicon, not QA data .*--terms"):
        load_qa(one_line, format=fmt)


def test_json_of_another_shape_says_what_was_expected(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"version": 2, "data": [GOOD]}, indent=1))
    with pytest.raises(
        DataError,
        match=r"w.json: the JSON is one object \(keys 'version', 'data'\), not QA data: expected a JSON list of "
        r"question objects, or JSON Lines \(one question object per line\); the questions may be the list under 'data'",
    ):
        load_qa(p)
    p.write_text('{\n "data": [\n  {"Question": "Q?"')  # a JSON document cut short
    with pytest.raises(DataError, match=r"w.json: not valid JSON \(.*line 3.*\), nor JSON Lines \(line 1: "):
        load_qa(p)
    p.write_text('"just text"\n')
    with pytest.raises(DataError, match=r"w.json: line 1: expected a JSON object, got a string"):
        load_qa(p)
    p.write_bytes(__import__("gzip").compress(json.dumps([GOOD]).encode()))
    with pytest.raises(DataError, match=r"w.json: a gzip-compressed file, not UTF-8 text; decompress it first"):
        load_qa(p)


def test_a_null_or_empty_id_is_no_id(tmp_path):
    """A row whose id is null or "" (pandas writes null for a missing id) is numbered "<file stem>:<row>"
    like a row without one; before, every null id became the id "None", shared by all of them."""
    p = _smedqa(tmp_path, [dict(GOOD, id=None), dict(GOOD, id=""), dict(GOOD, id=7), GOOD])
    recs = load_qa(p)
    assert [r.id for r in recs] == ["s:0", "s:1", "7", "s:3"]
    from specprobe.terms.records import ROW_ID  # what the split reads: the loader numbered the row

    assert [bool(r.meta.get(ROW_ID)) for r in recs] == [True, True, False, True]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"answr": "label"}, r"mapping: unknown key 'answr'"),  # was ignored: the "answer" column was read
        ({"question": 3}, r"mapping\.question: must be a column name"),
        ({"options": []}, r"mapping\.options: must be a column name or a list"),
        ({"answer_format": "idx"}, r"mapping\.answer_format: must be text, letter or index"),
    ],
)
def test_a_mapping_with_an_unknown_key_or_a_wrong_value_is_refused(tmp_path, mapping, message):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"question": "Q?", "options": ["a", "b"], "answer": "a", "label": "b"}) + "\n")
    with pytest.raises(DataError, match=message):
        load_qa(p, format="jsonl", mapping=mapping)


def test_an_experiment_mapping_is_checked_when_the_config_is_read():
    from specprobe.app.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match=r"experiment config: mapping: unknown key 'answr'"):
        ExperimentConfig(mapping={"answr": "label"})
