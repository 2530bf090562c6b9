"""Lexicon: save/load roundtrip, atomic write, filter, merge, the probe contract (contexts, term_specialties)."""

import json

import pytest

from specprobe.terms.build import lexicon_from_mentions
from specprobe.terms.datasets import QARecord
from specprobe.terms.extract.base import Mention
from specprobe.terms.lexicon import SCHEMA_VERSION, Lexicon, TermEntry, sha256_file
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
