"""Lexicon: save/load roundtrip, atomic write, filter, merge, the probe contract (contexts, term_specialties)."""

import json
import re
from pathlib import Path

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


def test_reassigning_a_filtered_lexicon_with_its_own_rule_changes_nothing():
    """z was recomputed over the terms a filter kept, not the build's per-specialty totals (meta["totals"]):
    re-applying the same rule moved z-scores (by up to 0.3 on S-MedQA), enough to flip a specialty near 1.96."""
    lex = _toy()
    kept = lex.filter(predicate=lambda e: e.term != "fever").reassign()
    for term, entry in kept.terms.items():
        assert entry.z == pytest.approx(lex[term].z, abs=1e-9) and entry.specialties == lex[term].specialties


def test_merge_joins_a_term_each_half_named_by_another_surface():
    """Two halves of one corpus named the same term by their own commonest surface ("headaches", "headache"):
    merge kept two terms, each with half the counts (z off by up to 1.9 on S-MedQA); it joins them on the
    normalised key and names the pooled term by its pooled commonest surface, as a build on both would."""

    def half(surfaces: list[str], first: int) -> Lexicon:
        recs = [QARecord(f"q{first + i}", "x", ("a", "b"), "a", ("Neurology",)) for i in range(len(surfaces))]
        mentions = [[_m(surface, 0, "HP:0002315", "headache")] for surface in surfaces]
        return lexicon_from_mentions(recs, mentions, meta={"sources": []})

    a, b = half(["headaches"] * 3 + ["headache"], 0), half(["headache"] * 3, 10)
    assert set(a.terms) == {"headaches"} and set(b.terms) == {"headache"}
    merged = a.merge(b)
    assert set(merged.terms) == {"headache"}
    entry = merged["headache"]
    assert entry.count == 7 and entry.counts == {"Neurology": 7} and entry.surfaces == {"headaches": 3, "headache": 4}


def test_merge_pools_the_questions_per_specialty():
    a = _toy()
    a.meta["questions_per_specialty"] = {"Cardiology": 4, "Neurology": 4}
    b = _toy()
    b.meta["questions_per_specialty"] = {"Cardiology": 1, "Neurology": 2}
    assert a.merge(b).meta["questions_per_specialty"] == {"Cardiology": 5, "Neurology": 6}


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
    toy = _toy()
    a = Lexicon(toy.terms, {**toy.meta, "sources": [src], "backend": "offline"})
    with pytest.raises(ValueError, match="same data .*count its terms twice"):
        a.merge(Lexicon(toy.terms, {**toy.meta, "sources": [dict(src)], "backend": "offline"}))
    other = {"path": str(tmp_path / "e.json"), "sha256": "cd" * 32, "format": "auto"}
    with pytest.raises(ValueError, match="different backends"):
        a.merge(Lexicon(toy.terms, {**toy.meta, "sources": [other], "backend": "scispacy"}))
    merged = a.merge(Lexicon(toy.terms, {**toy.meta, "sources": [other], "backend": "offline"}))
    assert merged["seizure"].count == 2 * a["seizure"].count


def _three_specialties(z_min: float) -> Lexicon:
    """Cardiology and Neurology terms, and Pediatrics questions whose only term ("fever") is in every question:
    with z_min 3 no term is assigned Pediatrics, so the specialties assigned to terms leave it out."""
    specs = ["Cardiology"] * 6 + ["Neurology"] * 6 + ["Pediatrics"] * 6
    recs = [QARecord(f"q{i}", "x", ("a", "b"), "a", (s,)) for i, s in enumerate(specs)]
    own = {"Cardiology": [_m("palpitations", 0, "X:1")] * 3, "Neurology": [_m("headache", 0, "X:2")] * 2}
    mentions = [own.get(s, []) + [_m("fever", 0, "X:3")] for s in specs]
    return lexicon_from_mentions(recs, mentions, rule=AssignmentRule(use_ontology=False, z_min=z_min), meta={})


def _without(lex: Lexicon, path, field: str) -> Path:
    data = json.loads(json.dumps(lex.to_dict()))
    del data["meta"][field]
    path.write_text(json.dumps(data))
    return path


def test_a_lexicon_without_its_rule_or_specialties_is_not_reassigned_with_defaults(tmp_path):
    """A file without meta.rule was reassigned with the default rule ("fever" lost Pediatrics, assigned at
    z_min 1), and one without meta.specialties over the specialties its terms have (Pediatrics left out:
    headache's Neurology z 3.239 read 3.107): both silently. Now an error naming the file and field; the
    file still loads and gives its terms (the probe reads no rule)."""
    lex = _three_specialties(z_min=1.0)
    assert lex["fever"].specialties == ["Pediatrics"] and lex.reassign()["fever"].specialties == ["Pediatrics"]
    no_rule = Lexicon.load(_without(lex, tmp_path / "no-rule.json", "rule"))
    assert no_rule.term_specialties() == lex.term_specialties()
    with pytest.raises(DataError, match=r"no-rule\.json: field 'meta\.rule' is missing"):
        no_rule.reassign()
    with pytest.raises(DataError, match="meta.rule"):
        no_rule.merge(lex)
    assert no_rule.reassign(AssignmentRule(use_ontology=False, z_min=1.0))["fever"].specialties == ["Pediatrics"]

    strict = _three_specialties(z_min=3.0)
    assert not [e for e in strict.terms.values() if "Pediatrics" in e.specialties]
    z = strict.reassign()["headache"].z["Neurology"]
    no_specs = Lexicon.load(_without(strict, tmp_path / "no-specs.json", "specialties"))
    with pytest.raises(DataError, match=r"no-specs\.json: field 'meta\.specialties' is missing"):
        no_specs.reassign()
    with pytest.raises(DataError, match="meta.specialties"):
        strict.merge(no_specs)
    no_specs.meta["specialties"] = strict.meta["specialties"]
    assert no_specs.reassign()["headache"].z["Neurology"] == pytest.approx(z)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"use_corpus": "false"}, "'meta.rule.use_corpus' must be true or false, got 'false'"),  # was True
        ({"zmin": 3}, "'meta.rule.zmin' is unknown"),  # was ignored: z_min stayed 1.96
        ({"z_min": None}, "'meta.rule.z_min' must be a number"),  # was a TypeError from math.isfinite
        ({"max_specialties": 0}, "field 'meta.rule': max_specialties must be at least 1"),
    ],
)
def test_a_damaged_rule_is_refused_naming_the_file_and_field(tmp_path, change, message):
    data = _toy().to_dict()
    data["meta"]["rule"].update(change)
    p = tmp_path / "lex.json"
    p.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        Lexicon.load(p)
    assert str(p) in str(info.value) and message in str(info.value)
    data["meta"]["rule"] = {k: v for k, v in _toy().meta["rule"].items() if k != "min_count"}
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"'meta\.rule\.min_count' is missing"):  # was assumed: 1
        Lexicon.load(p)


def test_a_term_met_only_as_a_defined_abbreviation_is_named_as_the_text_writes_it():
    """'TSH receptor autoantibodies (TRAbs)': the long form names no concept, so each 'TRAbs' counts for the
    ontology abbreviation; the term was named by the concept's title, 'anti-thyroid-stimulating hormone receptor
    antibody positivity', which occurs in no text, so the probe found none of its occurrences (1 of the 1,259
    terms built from S-MedQA's validation split)."""
    from specprobe.probe.occurrences import find_spans

    text = "Her TSH receptor autoantibodies (TRAbs) were high; TRAbs persisted."
    long_form = "TSH receptor autoantibodies"
    title = "Anti-thyroid-stimulating hormone receptor antibody positivity"
    mentions = [
        Mention("TRAbs", m.start(), m.end(), title, "HP:0030048", "hpo", ("HP:0030048",), "trab", long_form)
        for m in re.finditer("TRAbs", text)
    ]
    lex = lexicon_from_mentions([QARecord("q0", text, ("a", "b"), "a", ("Endocrinology",))], [mentions])
    assert list(lex.terms) == ["trabs"] and lex["trabs"].canonical == title and lex["trabs"].count == 2
    assert len(find_spans(text, "trabs")) == 2
