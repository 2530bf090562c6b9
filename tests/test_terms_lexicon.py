"""Lexicon: save/load roundtrip, atomic write, filter, merge, the probe contract (contexts, term_specialties)."""

import json

import pytest

from specprobe.terms.build import lexicon_from_mentions
from specprobe.terms.datasets import DataError, QARecord, load_qa
from specprobe.terms.extract.base import Mention
from specprobe.terms.lexicon import REQUIRED_FIELDS, SCHEMA_VERSION, Lexicon, TermEntry, sha256_file
from specprobe.terms.specialties import AssignmentRule


def _m(surface, start, cid, norm=None):
    return Mention(
        surface, start, start + len(surface), surface.capitalize(), cid, "hpo", (cid,), norm or surface.lower()
    )


def _toy():
    recs = [
        QARecord(f"q{i}", "x", ("a", "b"), "a", (spec,))
        for i, spec in enumerate(["Cardiology"] * 4 + ["Neurology"] * 4)
    ]
    mentions = [[_m("myocardial infarction", 0, "HP:0001658")] for _ in range(4)] + [
        [_m("seizures", 0, "HP:0001250", "seizure")],
        [_m("seizure", 0, "HP:0001250")],
        [_m("seizure", 0, "HP:0001250")],
        [_m("fever", 0, "HP:0001945")],
    ]
    return lexicon_from_mentions(recs, mentions, meta={"sources": []})


def test_build_from_mentions():
    lex = _toy()
    assert set(lex.terms) == {"myocardial infarction", "seizure", "fever"}
    assert lex["seizure"].surfaces == {"seizures": 1, "seizure": 2}
    assert lex["seizure"].counts == {"Neurology": 3} and lex["seizure"].questions == ["q4", "q5", "q6"]
    ts = lex.term_specialties()
    assert ts["myocardial infarction"] == ("Cardiology",)
    assert ts["seizure"] == ("Neurology",)
    assert lex["myocardial infarction"].z["Cardiology"] > 0 > lex["myocardial infarction"].z["Neurology"]


def test_roundtrip(tmp_path):
    lex = _toy()
    p = lex.save(tmp_path / "sub" / "lex.json")
    data = json.loads(p.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    back = Lexicon.load(p)
    assert back.term_specialties() == lex.term_specialties()
    assert back["seizure"].counts == lex["seizure"].counts
    assert back.stats() == lex.stats()


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    lex = _toy()
    p = lex.save(tmp_path / "lex.json")
    before = p.read_text()
    bad = Lexicon({"x": TermEntry("x", z={"A": object()})}, {})  # not JSON-serialisable -> fails mid-write
    with pytest.raises(TypeError):
        bad.save(p)
    assert p.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["lex.json"]  # no temporary file left behind


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Lexicon.load(tmp_path / "none.json")
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a specprobe lexicon"):
        Lexicon.load(p)
    p.write_text(json.dumps({"schema": "specprobe.terms.lexicon", "schema_version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        Lexicon.load(p)


def test_filter_and_for_specialty():
    lex = _toy()
    assert set(lex.filter(min_count=4).terms) == {"myocardial infarction"}
    assert set(lex.filter(specialties=["Neurology"]).terms) == {"seizure"}
    assert "fever" not in lex.filter(specific_only=True).terms
    assert [e.term for e in lex.for_specialty("Neurology")] == ["seizure"]
    with pytest.raises(ValueError, match="unknown specialty"):
        lex.for_specialty("Cardiologgy")
    df = lex.to_pandas()
    assert {"term", "specialties", "count:Cardiology", "z:Neurology"} <= set(df.columns)


def test_merge_pools_counts():
    a, b = _toy(), _toy()
    m = a.merge(b)
    assert m["seizure"].count == 2 * a["seizure"].count
    assert m["seizure"].counts["Neurology"] == 6
    assert m["myocardial infarction"].z["Cardiology"] > a["myocardial infarction"].z["Cardiology"]
    assert m.term_specialties() == a.term_specialties()


def test_reassign_with_another_rule():
    lex = _toy().reassign(AssignmentRule(use_ontology=False, z_min=0.5))
    assert lex.rule.use_ontology is False
    assert "Cardiology" in lex["myocardial infarction"].specialties


def test_contexts_reload_and_hash_check(tmp_path):
    data = tmp_path / "d.json"
    items = [{"Question": "Chest pain?", "Specialty": "Cardiology", "Options": ["MI", "PE"], "Answer": "MI"}]
    data.write_text(json.dumps(items))
    lex = Lexicon({}, {"sources": [{"path": str(data), "sha256": sha256_file(data), "format": "auto", "n_skipped": 0}]})
    ctx = lex.contexts()
    assert ctx[0].text == "Chest pain?\nA. MI\nB. PE" and ctx[0].specialties == ("Cardiology",)
    data.write_text(json.dumps(items * 2))
    with pytest.raises(ValueError, match="changed"):
        lex.contexts()
    data.unlink()
    with pytest.raises(FileNotFoundError, match=str(data)):
        lex.contexts()


# ------------------------------------------------------------------------- required fields, duplicate ids
@pytest.mark.parametrize("missing", ["specific", "specialties", "count", "counts", "questions", "ontology", "z"])
def test_a_term_without_a_required_field_is_refused(tmp_path, missing):
    """A term entry without `specific` (a damaged or hand-edited file) loaded as not specific and silently
    dropped out of term_specialties(); a missing required field names the file, the term and the field."""
    p = _toy().save(tmp_path / "lex.json")
    data = json.loads(p.read_text())
    del data["terms"]["seizure"][missing]
    p.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        Lexicon.load(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: term 'seizure': missing field {missing!r}") and "\n" not in msg, msg


def test_descriptive_fields_may_be_absent_and_a_saved_lexicon_has_every_field(tmp_path):
    lex = _toy()
    p = lex.save(tmp_path / "lex.json")
    data = json.loads(p.read_text())
    assert set(REQUIRED_FIELDS) <= set(data["terms"]["seizure"])  # every version writes every field
    for k in ("canonical", "concept_ids", "sources", "surfaces", "ontology_evidence"):
        del data["terms"]["seizure"][k]
    p.write_text(json.dumps(data))
    back = Lexicon.load(p)
    assert back.term_specialties() == lex.term_specialties() and back["seizure"].surfaces == {}


def test_schema_version_must_be_the_integer(tmp_path):
    p = _toy().save(tmp_path / "lex.json")
    data = json.loads(p.read_text())
    for version in (True, "1", 1.5, None):
        p.write_text(json.dumps(dict(data, schema_version=version)))
        with pytest.raises(DataError, match="is not supported"):
            Lexicon.load(p)


def test_duplicate_question_ids_count_as_contexts_names_them(tmp_path):
    """Questions sharing an id were merged in the build (questions and n_questions undercounted, an exact
    repeat counted twice) while contexts() names the second text "<id>#2" and drops an exact repeat; the
    build counts under the same ids, so each term's questions are contexts the probe reads."""
    item = {"Question": "A seizure?", "Specialty": "Neurology", "Options": ["a", "b"], "Answer": "a"}
    items = [
        dict(item, id="q1"),
        dict(item, id="q1", Question="Another seizure?"),
        dict(item, id="q1"),
        dict(item, id="q2"),
    ]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(items))
    recs = load_qa(data)
    mentions = [[_m("seizure", r.question.index("seizure"), "HP:0001250")] for r in recs]
    src = {"path": str(data), "sha256": sha256_file(data), "format": "auto", "n_skipped": 0}
    lex = lexicon_from_mentions(recs, mentions, meta={"sources": [src]})
    contexts = [c.id for c in lex.contexts()]
    assert contexts == ["q1", "q1#2", "q2"]
    e = lex["seizure"]
    assert e.questions == contexts and e.count == 3 and e.counts == {"Neurology": 3}
    assert lex.meta["questions_per_specialty"]["Neurology"] == 3
    assert lex.to_pandas().set_index("term").loc["seizure", "n_questions"] == 3


def test_merge_refuses_one_data_file_twice_and_mixed_backends(tmp_path):
    """Merging a lexicon with another built from the same file doubled every count and sharpened every
    z-score without a word; pooling two backends' counts mixed incomparable term keys."""
    src = {"path": str(tmp_path / "d.json"), "sha256": "ab" * 32, "format": "auto"}
    a = Lexicon(_toy().terms, {"sources": [src], "backend": "offline"})
    with pytest.raises(ValueError, match="same data .*count its terms twice"):
        a.merge(Lexicon(_toy().terms, {"sources": [dict(src)], "backend": "offline"}))
    other = {"path": str(tmp_path / "e.json"), "sha256": "cd" * 32, "format": "auto"}
    with pytest.raises(ValueError, match="different backends"):
        a.merge(Lexicon(_toy().terms, {"sources": [other], "backend": "scispacy"}))
    merged = a.merge(Lexicon(_toy().terms, {"sources": [other], "backend": "offline"}))
    assert merged["seizure"].count == 2 * a["seizure"].count
