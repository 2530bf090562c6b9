"""Hardening of the inputs (issue 15, items 5, 6, 9, 13): DataFrames and iterators, duplicate ids and
case-duplicate terms, malformed lexicon files, Unicode normalisation, BOMs, invalid UTF-8 and
--skip-bad. Every bad input gets an error that names the file, the item and the field."""

from __future__ import annotations

import json
import logging
import os
import re
import stat

import pandas as pd
import pytest

from specprobe.core.encoding import TokenizerError, encode
from specprobe.probe.inputs import materialize, normalize_terms, normalize_texts, terms_from_frame, texts_from_frame
from specprobe.probe.occurrences import MatchOptions, find_spans
from specprobe.terms.datasets import DataError, QARecord, TextRecord, load_qa, load_qa_report
from specprobe.terms.lexicon import Lexicon, TermEntry
from specprobe.utils.io import sha256_file

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


# ------------------------------------------------------------------------------------ 5: DataFrames
def test_terms_dataframe_scores_its_rows_not_its_column_names():
    df = pd.DataFrame(
        {
            "term": ["seizure", "myocardial infarction", "psoriasis"],
            "specialty": ["Neurology", "Cardiology;Emergency medicine", None],
        }
    )
    assert normalize_terms(df) == {
        "seizure": ("Neurology",),
        "myocardial infarction": ("Cardiology", "Emergency medicine"),
        "psoriasis": (),
    }
    # Lexicon.to_pandas() layout: a 'specialties' column, ';'-joined
    df2 = pd.DataFrame({"term": ["seizure"], "specialties": ["Neurology;Pediatrics"], "count": [3]})
    assert normalize_terms(df2) == {"seizure": ("Neurology", "Pediatrics")}
    # other column names, by argument; lists in cells
    df3 = pd.DataFrame({"name": ["seizure"], "areas": [["Neurology", "Pediatrics"]]})
    assert terms_from_frame(df3, term="name", specialty="areas") == {"seizure": ("Neurology", "Pediatrics")}
    assert normalize_terms(df3, term_column="name", specialty_column="areas") == {
        "seizure": ("Neurology", "Pediatrics")
    }
    # a column "Term" is found case-insensitively
    assert normalize_terms(pd.DataFrame({"Term": ["ataxia"]})) == {"ataxia": ()}


def test_texts_dataframe_scores_its_rows():
    df = pd.DataFrame({"id": ["q1", "q2"], "text": ["A seizure.", "An MI."], "specialty": ["Neurology", None]})
    assert normalize_texts(df, None, {}) == [
        TextRecord("q1", "A seizure.", ("Neurology",)),
        TextRecord("q2", "An MI.", ()),
    ]
    df2 = pd.DataFrame({"body": ["x", "y"], "qid": [7, 8]})
    assert [r.id for r in texts_from_frame(df2, id="qid", text="body")] == ["7", "8"]
    assert [r.id for r in normalize_texts(pd.DataFrame({"text": ["x", "y"]}), None, {})] == ["text0", "text1"]
    assert [r.text for r in normalize_texts(pd.Series(["x", "y"]), None, {})] == ["x", "y"]
    assert normalize_texts({"q1": "x", "q2": "y"}, None, {}) == [TextRecord("q1", "x"), TextRecord("q2", "y")]


BAD_COLLECTIONS = [
    # (what, call, error type, message fragment)
    ("terms generator", lambda: normalize_terms(t for t in ["seizure"]), TypeError, "one-shot iterator"),
    ("terms iter()", lambda: normalize_terms(iter(["seizure"])), TypeError, "terms=list(...)"),
    ("texts generator", lambda: normalize_texts((t for t in ["a"]), None, {}), TypeError, "texts=list(...)"),
    (
        "terms frame without term column",
        lambda: normalize_terms(pd.DataFrame({"name": ["a"]})),
        ValueError,
        "no term column 'term' (columns: ['name'])",
    ),
    (
        "named column absent",
        lambda: terms_from_frame(pd.DataFrame({"term": ["a"]}), specialty="area"),
        ValueError,
        "no specialty column 'area'",
    ),
    (
        "texts frame without text column",
        lambda: normalize_texts(pd.DataFrame({"body": ["a"]}), None, {}),
        ValueError,
        "no text column 'text'",
    ),
    (
        "empty term cell",
        lambda: normalize_terms(pd.DataFrame({"term": ["a", None]})),
        ValueError,
        "row 1 (index 1): column 'term' must be a non-empty string",
    ),
    (
        "non-string text cell",
        lambda: normalize_texts(pd.DataFrame({"text": ["a", 3]}), None, {}),
        TypeError,
        "row 1 (index 1): column 'text' must be a string",
    ),
    (
        "bad specialty cell",
        lambda: normalize_terms(pd.DataFrame({"term": ["a"], "specialty": [3.5]})),
        TypeError,
        "column 'specialty': specialties must be",
    ),
    ("labelled Series", lambda: normalize_terms(pd.Series({"seizure": "Neurology"})), TypeError, "indexed by labels"),
    ("one record, not a list", lambda: normalize_texts({"id": "q", "text": "x"}, None, {}), TypeError, "single record"),
    ("mapping with non-text values", lambda: normalize_texts({"q1": 3}, None, {}), TypeError, "texts['q1']"),
    ("specialties of a wrong type", lambda: normalize_terms({"seizure": 3}), TypeError, "term 'seizure': specialties"),
    (
        "pairs in a list",
        lambda: normalize_terms([("seizure", "Neurology")]),
        TypeError,
        "pass a mapping or a DataFrame",
    ),
    (
        "duplicate given ids",
        lambda: normalize_texts(["a", {"id": "text0", "text": "b"}], None, {}),
        ValueError,
        "duplicate text id 'text0' (texts[0] and texts[1])",
    ),
]


@pytest.mark.parametrize("what,call,exc,message", BAD_COLLECTIONS, ids=[c[0] for c in BAD_COLLECTIONS])
def test_bad_collections_are_refused_clearly(what, call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_materialize_reads_an_iterator_once():
    gen = (t for t in ["seizure", "ataxia"])
    terms = materialize(gen)
    assert normalize_terms(terms) == normalize_terms(terms) == {"seizure": (), "ataxia": ()}
    same = ["x"]
    assert materialize(same) is same and materialize(None) is None


def test_compare_with_dataframes(tiny_llama):
    from specprobe.probe import ModelPair, compare

    pair = ModelPair.load(str(tiny_llama[0]), str(tiny_llama[1]))
    terms = pd.DataFrame({"term": ["seizure", "Sj\u00f6gren syndrome"], "specialty": ["Neurology", "Rheumatology"]})
    texts = pd.DataFrame(
        {"id": ["a", "b"], "text": ["The patient had a seizure.", "Sjo\u0308gren syndrome was excluded."]}
    )
    comp = compare(pair, terms=terms, texts=texts, controls=None, progress=False)
    rows = comp.to_pandas()
    assert sorted(rows["term"]) == ["Sj\u00f6gren syndrome", "seizure"]
    assert set(rows["text_id"]) == {"a", "b"}
    assert "Sjo\u0308gren syndrome" in set(rows["surface"])  # the text as given
    # generators are read once by compare (not consumed by validation and then reported empty)
    gen = compare(pair, terms=(t for t in ["seizure"]), texts=(t for t in ["a seizure"]), controls=None, progress=False)
    assert list(gen.to_pandas()["term"]) == ["seizure"]


# ------------------------------------------------------------------------------------ 6: duplicates
def test_case_duplicate_terms_are_counted_once(caplog):
    with caplog.at_level(logging.WARNING):
        out = normalize_terms({"Seizure": ["Neurology"], "seizure": ["Pediatrics", "Neurology"], "ataxia": []})
    assert out == {"Seizure": ("Neurology", "Pediatrics"), "ataxia": ()}
    assert "'Seizure' / 'seizure' -> 'Seizure'" in caplog.text and "case-insensitive" in caplog.text
    # NFC and whitespace duplicates are one term too; case-sensitive matching keeps case variants apart
    assert list(normalize_terms(["Sjo\u0308gren", "Sj\u00f6gren"])) == ["Sj\u00f6gren"]
    assert list(normalize_terms(["heart failure", "heart  failure"])) == ["heart failure"]
    assert list(
        normalize_terms(["heart failure", "heart  failure"], match=MatchOptions(flexible_whitespace=False))
    ) == ["heart failure", "heart  failure"]
    assert list(normalize_terms(["MI", "mi"], match=MatchOptions(case_sensitive=True))) == ["MI", "mi"]


def test_lexicon_case_duplicates_are_merged(caplog):
    lex = Lexicon(
        {
            "Seizure": TermEntry("Seizure", specialties=["Neurology"], specific=True),
            "seizure": TermEntry("seizure", specialties=["Pediatrics"], specific=True),
        },
        {},
    )
    with caplog.at_level(logging.WARNING):
        assert normalize_terms(lex) == {"Seizure": ("Neurology", "Pediatrics")}
    assert "counted once" in caplog.text


def _qa_file(path, items):
    path.write_text(json.dumps(items))
    return path


ITEM = {"Question": "A seizure?", "Specialty": "Neurology", "Options": ["a", "b"], "Answer": "a"}


def test_lexicon_contexts_have_unique_ids(tmp_path, caplog):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = _qa_file(tmp_path / "one" / "val.json", [dict(ITEM, id="q1"), dict(ITEM, id="q2")])
    b = _qa_file(tmp_path / "two" / "val.json", [dict(ITEM, id="q1", Question="Another question?")])
    src = lambda p: {"path": str(p), "sha256": sha256_file(p), "format": "auto", "n_skipped": 0}  # noqa: E731
    lex = Lexicon({}, {"sources": [src(a), src(b), src(a)]})  # a is listed twice (a lexicon merged with itself)
    with caplog.at_level(logging.WARNING):
        ctx = lex.contexts()
    assert [r.id for r in ctx] == ["q1", "q2", "q1#2"]
    assert ctx[2].text.startswith("Another question?")
    assert "more than once" in caplog.text and "q1 -> q1#2" in caplog.text
    # the probe's default texts are the same unique records
    assert [r.id for r in normalize_texts(None, lex, {})] == ["q1", "q2", "q1#2"]


BAD_LEXICONS = [
    # (what, terms or whole document, message fragments)
    ("count not a number", {"seizure": {"count": "many"}}, ["term 'seizure'", "field 'count'", "'many'"]),
    ("negative count", {"seizure": {"count": -1}}, ["field 'count'", "non-negative integer"]),
    ("empty term key", {"": {"count": 1}}, ["field 'terms'", "empty term key"]),
    ("blank term key", {"  ": {"count": 1}}, ["empty term key"]),
    ("entry not an object", {"seizure": 3}, ["term 'seizure'", "expected an object"]),
    ("specialties a string", {"seizure": {"specialties": "Neurology"}}, ["field 'specialties'", "list of strings"]),
    ("specific not a bool", {"seizure": {"specific": "yes"}}, ["field 'specific'", "true or false"]),
    ("counts not integers", {"seizure": {"counts": {"Neurology": "2"}}}, ["field 'counts'"]),
    ("z not numbers", {"seizure": {"z": {"Neurology": None}}}, ["field 'z'"]),
    ("terms a list", [], ["field 'terms' must be an object"]),
]


@pytest.mark.parametrize("what,terms,fragments", BAD_LEXICONS, ids=[c[0] for c in BAD_LEXICONS])
def test_malformed_lexicon_is_refused_naming_file_and_field(tmp_path, what, terms, fragments):
    p = tmp_path / "lex.json"
    p.write_text(json.dumps({"schema": "specprobe.terms.lexicon", "schema_version": 1, "meta": {}, "terms": terms}))
    with pytest.raises(DataError) as info:
        Lexicon.load(p)
    msg = str(info.value)
    assert str(p) in msg
    for f in fragments:
        assert f in msg, msg


@pytest.mark.parametrize(
    "meta,field",
    [
        ({"sources": {}}, "meta.sources"),
        ({"sources": [{"sha256": "x"}]}, "meta.sources[0]"),
        ({"specialties": "Neurology"}, "meta.specialties"),
        ({"rule": 1}, "meta.rule"),
    ],
)
def test_malformed_lexicon_meta(tmp_path, meta, field):
    p = tmp_path / "lex.json"
    p.write_text(json.dumps({"schema": "specprobe.terms.lexicon", "schema_version": 1, "meta": meta, "terms": {}}))
    with pytest.raises(DataError, match=field.replace("[", r"\[").replace("]", r"\]")) as info:
        Lexicon.load(p)
    assert str(p) in str(info.value)


def test_lexicon_constructor_and_filter_take_no_wrong_collections():
    with pytest.raises(TypeError, match="needs a mapping term -> TermEntry"):
        Lexicon(pd.DataFrame({"term": ["a"]}))
    with pytest.raises(TypeError, match="term 'a' must map to a TermEntry"):
        Lexicon({"a": {"count": 1}})
    with pytest.raises(ValueError, match="empty or non-string term key"):
        Lexicon({"": TermEntry("")})
    lex = Lexicon({"a": TermEntry("a", specialties=["Cardiology"]), "b": TermEntry("b", specialties=["Neurology"])})
    assert set(lex.filter(specialties="Cardiology").terms) == {"a"}  # one specialty, not its letters


def test_lexicon_from_mentions_checks_lengths():
    from specprobe.terms.build import lexicon_from_mentions
    from specprobe.terms.specialties import SpecialtyMap

    recs = [QARecord("q1", "x", ("a", "b"), "a", ("Neurology",))]
    with pytest.raises(ValueError, match="1 records but 0 lists of mentions"):
        lexicon_from_mentions(recs, [], specialty_map=SpecialtyMap([]))
    lex = lexicon_from_mentions(iter(recs), iter([[]]), specialty_map=SpecialtyMap([]))  # iterators: read once
    assert len(lex) == 0


def test_extractor_texts_are_a_list():
    from specprobe.terms.extract.base import as_text_list

    assert as_text_list(t for t in ["a", "b"]) == ["a", "b"]
    with pytest.raises(TypeError, match="not a single string"):
        as_text_list("a text")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        as_text_list(["a", 3])


# ------------------------------------------------------------------------------------ 9: Unicode
def test_decomposed_text_and_terms_match_under_nfc():
    text = "Sjo\u0308gren syndrome; SJÖGREN SYNDROME; sjögren syndrome."
    spans = find_spans(text, "Sj\u00f6gren syndrome")
    assert [text[s:e] for s, e in spans] == ["Sjo\u0308gren syndrome", "SJÖGREN SYNDROME", "sjögren syndrome"]
    assert find_spans(text, "Sjo\u0308gren syndrome") == spans  # a decomposed term too
    assert find_spans("the \u212aidney", "kidney") == [(4, 10)]  # Kelvin sign: NFC is K
    assert find_spans("aq\u0307b and aq", "aq") == [(9, 11)]  # a mark continues the word


def test_normalising_tokenizer_failure_names_the_text():
    from tokenizers import normalizers

    from specprobe.testing.tiny_models import train_tokenizer

    tok = train_tokenizer("qwen2")
    tok.backend_tokenizer.normalizer = normalizers.NFC()
    enc = encode(tok, "Sjo\u0308gren syndrome", label="text 'q7'")
    assert enc.offsets_source == "tokenizer"
    # a tokenizer whose normalisation cannot be mapped back (it lower-cases): the error names the text
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    real_call = type(tok).__call__

    def zero_width(self, *a, **kw):
        out = real_call(self, *a, **kw)
        out["offset_mapping"] = [(s, s) for s, _ in out["offset_mapping"]]
        return out

    type(tok).__call__ = zero_width
    try:
        with pytest.raises(TokenizerError, match=r"^text 'q7': .*decoding does not reproduce"):
            encode(tok, "Sjo\u0308gren Syndrome", label="text 'q7'")
    finally:
        type(tok).__call__ = real_call


# ------------------------------------------------------------------------------------ 13: files
MEDQA_LINE = {"question": "A seizure?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "qa.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps([ITEM]).encode())
    assert load_qa(p)[0].question == "A seizure?"
    j = tmp_path / "qa.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + json.dumps(MEDQA_LINE).encode() + b"\n")
    assert load_qa(j)[0].answer == "x"
    c = tmp_path / "qa.csv"
    c.write_bytes(b"\xef\xbb\xbfq,a,b,ans\nA seizure?,x,y,x\n")
    assert load_qa(c, mapping={"question": "q", "options": ["a", "b"], "answer": "ans"})[0].answer == "x"
    lex = Lexicon({"seizure": TermEntry("seizure", count=2)}, {})
    lp = lex.save(tmp_path / "lex.json")
    lp.write_bytes(b"\xef\xbb\xbf" + lp.read_bytes())
    assert Lexicon.load(lp)["seizure"].count == 2


@pytest.mark.parametrize("name", ["qa.json", "qa.jsonl", "qa.csv", "lex.json", "map.csv"])
def test_invalid_utf8_names_the_file(tmp_path, name):
    from specprobe.terms.specialties import SpecialtyMap

    p = tmp_path / name
    p.write_bytes(b'[{"Question": "caf\xe9"}]' if ".json" in name else b"q,a\ncaf\xe9,x\n")
    with pytest.raises(DataError) as info:
        if name == "lex.json":
            Lexicon.load(p)
        elif name == "map.csv":
            SpecialtyMap.load(p)
        else:
            load_qa(p, mapping={"question": "q", "options": ["a"], "answer": "a"} if name == "qa.csv" else None)
    line = 1 if ".json" in name else 2
    assert str(p) in str(info.value) and "not valid UTF-8" in str(info.value) and f"line {line}" in str(info.value)


def test_skip_bad_skips_an_invalid_jsonl_line(tmp_path, caplog):
    p = tmp_path / "qa.jsonl"
    p.write_text("\n".join([json.dumps(MEDQA_LINE), '{"question": "broken', json.dumps(MEDQA_LINE)]) + "\n")
    with pytest.raises(DataError, match=r"qa.jsonl: line 2: not valid JSON") as info:
        load_qa(p)
    assert str(p) in str(info.value)
    recs, skipped = load_qa_report(p, skip_bad=True)
    assert len(recs) == 2 and len(skipped) == 1 and "line 2" in skipped[0]
    q = tmp_path / "bad.jsonl"
    q.write_text('{"question": "broken\n{nope\n')
    with pytest.raises(DataError, match="not valid JSON"):
        load_qa_report(q, skip_bad=True)  # nothing parses: not JSON lines at all


def test_terms_build_cli_skip_bad_skips_an_invalid_jsonl_line(tmp_path, capsys):
    from specprobe.app.cli import main

    p = tmp_path / "qa.jsonl"
    good = dict(MEDQA_LINE, question="A girl has seizures and ataxia.", specialty="Neurology")
    p.write_text("\n".join([json.dumps(good), "{not json", json.dumps(good)]) + "\n")
    out = tmp_path / "lex.json"
    assert main(["terms", "build", str(p), "--out", str(out), "--no-progress"]) != 0
    assert "line 2" in capsys.readouterr().err
    assert main(["terms", "build", str(p), "--out", str(out), "--no-progress", "--skip-bad"]) == 0
    assert "skipped 1 malformed" in capsys.readouterr().err
    assert Lexicon.load(out).meta["sources"][0]["n_records"] == 2


# ------------------------------------------------------------------------------------ round trip
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_name = _text.filter(lambda s: s.strip() != "")
_count = st.integers(0, 10**9)
_entries = st.builds(
    TermEntry,
    term=st.just(""),
    canonical=_text,
    concept_ids=st.lists(_text, max_size=3),
    sources=st.lists(_text, max_size=2),
    surfaces=st.dictionaries(_text, _count, max_size=3),
    count=_count,
    counts=st.dictionaries(_text, _count, max_size=3),
    questions=st.lists(_text, max_size=3),
    ontology=st.lists(_text, max_size=2),
    ontology_evidence=st.lists(_text, max_size=2),
    z=st.dictionaries(_text, st.floats(-1e6, 1e6, allow_nan=False), max_size=3),
    specialties=st.lists(_text, max_size=3),
    specific=st.booleans(),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=st.dictionaries(_name, _entries, max_size=6), specialties=st.lists(_text, max_size=4))
def test_lexicon_save_load_roundtrip(tmp_path, terms, specialties):
    from dataclasses import replace

    lex = Lexicon({t: replace(e, term=t) for t, e in terms.items()}, {"specialties": specialties, "sources": []})
    p = lex.save(tmp_path / "lex.json")
    back = Lexicon.load(p)
    assert back.to_dict() == lex.to_dict()
    assert list(back.terms) == list(lex.terms)
    for t, e in lex.terms.items():
        assert replace(back[t], z={}) == replace(e, z={})
        assert back[t].z == {k: round(v, 4) for k, v in e.z.items()}  # z is stored to 4 decimals
    assert p.read_bytes() == Lexicon.load(p).save(tmp_path / "again.json").read_bytes()


# ------------------------------------------------------------------- outputs: permissions, folders, evaluate --out
def test_atomic_writes_get_the_permissions_of_an_ordinary_write(tmp_path):
    from specprobe.utils.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "lexicon.json", "{}")
    finally:
        os.umask(old)
    # was 0o600 (the temporary file's): a lexicon or result no one else in the group could read
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o640)
    atomic_write_text(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a replaced file keeps its permissions


def test_an_atomic_write_onto_a_folder_names_the_folder(tmp_path):
    from specprobe.utils.io import atomic_write_text

    (tmp_path / "out").mkdir()
    # was: "[Errno 21] Is a directory: '<tmp>/.out.x1y2.tmp' -> '<tmp>/out'"
    with pytest.raises(IsADirectoryError, match=r"out is a folder; cannot write a file there$"):
        atomic_write_text(tmp_path / "out", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left


EVALUATE = ["evaluate", "--model", "no-model", "--data", "no-data.json"]


@pytest.mark.parametrize(
    "extra, message",
    [
        # was: "<out> exists; pass --overwrite to replace it", and with --overwrite an error after the scoring
        (["--out", "{tmp}/folder"], r"--out .*folder is a folder; --out names the result file"),
        (["--out", "{tmp}/folder", "--overwrite"], r"--out .*folder is a folder"),
        # was: a JSON result written into results.csv
        (["--out", "{tmp}/results.csv"], r"--out .*results\.csv: the result is JSON \(name it \.json or \.json\.gz\)"),
        # was: --variant silently ignored
        (["--out", "{tmp}/m.json", "--matrix", "--variant", "base"], r"--variant .* --matrix scores them all"),
        # was: --lm-eval-out silently ignored with --matrix
        (["--out", "{tmp}/m.json", "--matrix", "--lm-eval-out", "{tmp}/lm"], r"--lm-eval-out .* not go with --matrix"),
        # was: an error after the scoring (and after --out was written): "Not a directory: '<file>/base'"
        (
            ["--out", "{tmp}/r.json", "--lm-eval-out", "{tmp}/afile"],
            r"--lm-eval-out .*afile is a file; it names a folder",
        ),
    ],
)
def test_evaluate_refuses_outputs_it_cannot_write_before_any_model_loads(tmp_path, capsys, extra, message):
    from specprobe.app.cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    args = [*EVALUATE, *(a.format(tmp=tmp_path) for a in extra)]
    assert main(args) == 2  # the model does not exist: these errors come first
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "m.json").exists()


def test_terms_that_case_insensitive_matching_equates_are_one_term(caplog):
    """re.IGNORECASE equates the micro sign with mu, final with plain sigma, the theta symbol with theta:
    "5 µg dose" and "5 μg dose" were two terms finding the same span, each occurrence counted twice."""
    from specprobe.probe.occurrences import find_spans

    with caplog.at_level(logging.WARNING):
        terms = normalize_terms(
            {"5 \u00b5g dose": ["Pharmacology"], "5 \u03bcg DOSE": ["Pediatrics"], "\u03bf\u03c2": []}
        )
    assert terms == {"5 \u00b5g dose": ("Pharmacology", "Pediatrics"), "\u03bf\u03c2": ()}
    assert "counted once" in caplog.text
    assert find_spans("Give 5 \u03bcg dose now.", "5 \u00b5g dose") == [(5, 14)]


# characters whose case folding is not their lower case (micro sign, final sigma, ...), where lower() alone failed
_UNUSUAL_CASE = [chr(c) for c in range(0x10000) if chr(c).casefold() != chr(c).lower()]


@given(st.sampled_from(_UNUSUAL_CASE) | st.characters(), st.data())
def test_one_character_terms_fold_alike_exactly_when_the_regex_equates_them(a, data):
    """The merge key (`_fold`) equates two characters exactly when case-insensitive matching does (the second
    drawn among the first's case forms, or any character)."""
    from specprobe.probe.occurrences import _fold

    forms = sorted({f[0] for f in (a.lower(), a.upper(), a.casefold(), a.title()) if f})
    b = data.draw(st.sampled_from(forms) | st.characters())

    assert (_fold(a, False) == _fold(b, False)) == bool(re.fullmatch(re.escape(a), b, re.IGNORECASE))
