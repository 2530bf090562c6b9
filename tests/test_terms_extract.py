"""Extraction backends: the offline dictionary matcher, and the scispaCy backend's file checks."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.terms.extract import get_extractor
from specprobe.terms.extract.offline import normalise_token
from specprobe.terms.extract.scispacy_backend import (
    ENV_LINKER,
    ENV_MODEL,
    LINKER_FILES,
    MissingResourceError,
    resolve_paths,
)


@pytest.fixture(scope="module")
def offline():
    return get_extractor("offline")


def test_normalise_token():
    assert normalise_token("Seizures") == normalise_token("seizure")
    assert normalise_token("headaches") == normalise_token("headache")
    assert normalise_token("arteries") == normalise_token("artery")
    assert normalise_token("abscess") == "abscess"


def test_offline_longest_match_plural_case(offline):
    text = "A boy with Acute Myocardial Infarction and new seizures."
    ms = offline.extract(text)
    surfaces = [m.surface for m in ms]
    assert "Acute Myocardial Infarction" in surfaces  # longest match wins over "myocardial infarction"
    assert "seizures" in surfaces
    for m in ms:
        assert text[m.start : m.end] == m.surface
        assert m.concept_id and m.source in ("hpo", "icd10cm") and m.canonical


def test_offline_abbreviation_defined_in_text(offline):
    text = "He has chronic obstructive pulmonary disease (COPD). His COPD got worse."
    ms = offline.extract(text)
    copd = [m for m in ms if m.surface == "COPD"]
    assert len(copd) == 2
    assert all(m.norm == ms[0].norm and m.abbreviation_of for m in copd)


@pytest.mark.parametrize(
    "text",
    [
        "The posterior descending artery (PDA) is occluded. The PDA supplies the inferior wall.",
        "He was given advanced life support (ALS). ALS was stopped after ten minutes.",
        "She has costovertebral angle (CVA) tenderness. The CVA tenderness is on the right.",
        "She has CVA tenderness on her right side.",  # S-MedQA validation: costovertebral angle, not stroke
    ],
)
def test_an_abbreviation_the_text_defines_otherwise_is_not_the_curated_reading(offline, text):
    """A text's own definition whose long form names no concept fell through to the curated list: PDA became
    patent ductus arteriosus, ALS amyotrophic lateral sclerosis, CVA stroke (a Neurology term in a pyelonephritis
    vignette); an undefined CVA is ambiguous (costovertebral angle tenderness) and not listed."""
    short = text.split("(")[1].split(")")[0] if "(" in text else "CVA"
    assert not [m for m in offline.extract(text) if m.surface == short]


def test_offline_plural_of_defined_abbreviation_is_the_same_term(offline):
    """'UTIs' after '... (UTI)' became a term of its own ('utis', S-MedQA validation) instead of counting for
    urinary tract infection; a plural definition ('(UTIs)') covers the singular too."""
    for text in (
        "A urinary tract infection (UTI) is diagnosed. Prevent future UTIs.",
        "Recurrent urinary tract infections (UTIs) are common. This UTI resolved.",
    ):
        short = [m for m in offline.extract(text) if m.surface.startswith("UTI")]
        assert len(short) == 2
        assert {m.norm for m in short} == {"urinary tract infection"} and all(m.abbreviation_of for m in short)


def test_offline_generic_words_skipped(offline):
    assert offline.extract("The patient has a history of disease.") == []


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown extraction backend"):
        get_extractor("nope")


def test_scispacy_paths_missing_named(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_MODEL, raising=False)
    monkeypatch.delenv(ENV_LINKER, raising=False)
    with pytest.raises(MissingResourceError) as exc:
        resolve_paths()
    assert ENV_MODEL in str(exc.value) and ENV_LINKER in str(exc.value)
    model = tmp_path / "en_core_sci_sm"
    model.mkdir()
    with pytest.raises(MissingResourceError, match="has no config.cfg"):
        resolve_paths(model, require_linker=False)
    (model / "config.cfg").write_text("")
    linker = tmp_path / "linker"
    linker.mkdir()
    (linker / "nmslib_index.bin").write_text("")
    with pytest.raises(MissingResourceError) as exc:
        resolve_paths(model, linker)
    for f in LINKER_FILES[1:]:
        assert f in str(exc.value)
    assert "knowledge base" in str(exc.value)
    for f in LINKER_FILES:
        (linker / f).write_text("")
    (linker / "kb.jsonl").write_text("")
    paths = resolve_paths(model, linker)
    assert paths["kb"] == linker / "kb.jsonl" and paths["model"] == model
    monkeypatch.setenv(ENV_MODEL, str(model))
    assert resolve_paths(require_linker=False)["linker_dir"] is None


def test_scispacy_backend_error_is_clear_in_cli(monkeypatch, tmp_path, capsys):
    from specprobe.app.cli import main

    monkeypatch.delenv(ENV_MODEL, raising=False)
    data = tmp_path / "d.json"
    data.write_text('[{"Question": "Q?", "Specialty": "Cardiology", "Options": ["a", "b"], "Answer": "a"}]')
    assert main(["terms", "build", str(data), "--out", str(tmp_path / "l.json"), "--backend", "scispacy"]) == 2
    assert "scispaCy backend: no scispaCy model given" in capsys.readouterr().err


_HAVE = bool(os.environ.get(ENV_MODEL) and os.environ.get(ENV_LINKER))


@pytest.mark.skipif(not _HAVE, reason=f"scispaCy model/linker files absent (set ${ENV_MODEL} and ${ENV_LINKER})")
def test_scispacy_backend_real():
    ex = get_extractor("scispacy")
    ms = ex.extract("The patient had a myocardial infarction and seizures.")
    assert ms and all(m.concept_id for m in ms)


def test_a_plural_ending_in_a_vowel_and_e_is_its_singular_term(offline):
    """ "knees" read "kne" and "toes" "to" (not "knee", "toe"), "eyes" "ey", "kidneys" stayed whole: "hammer toes"
    matched nothing, "dry eye" missed the dictionary's "dry eyes", "polycystic kidneys" was another term."""
    for plural, singular in (
        ("hammer toes", "hammer toe"),
        ("dry eye", "dry eyes"),
        ("polycystic kidneys", "polycystic kidney"),
    ):
        got = {(m.surface, m.norm) for m in offline.extract(f"The patient has {plural}.")}
        want = {(singular, m.norm) for m in offline.extract(f"The patient has {singular}.")}
        assert len(want) == 1 and {n for _, n in got} == {n for _, n in want}, (plural, got, want)


def test_normalise_does_not_conflate_latin_ae():
    assert normalise_token("agalactiae") != normalise_token("agalactia")


# text pieces: eponyms with an apostrophe, plain terms, and characters that must not shift offsets
_EPONYMS = ("Crohn's disease", "Hodgkin's lymphoma", "Graves' disease", "Kaposi's sarcoma", "Hashimoto's thyroiditis")
_PIECES = (
    *_EPONYMS,
    "A woman with",
    "and the patient's",
    "heart failure",
    ";",
    "\r\n",
    "\U0001f600",
    "e\u0301",
    "asthma",
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8))
def test_typographic_apostrophe_matches_as_the_ascii_one(offline, pieces):
    """S-MedQA writes "Hodgkin\u2019s lymphoma" (U+2019, 300 times in the validation split): the same term,
    concept and span as "Hodgkin's lymphoma" (it was the bare "lymphoma", or nothing for "Crohn\u2019s
    disease"); every span is the text's own characters."""
    text = " ".join(pieces)
    typo = text.replace("'", "\u2019")  # same length, so the same spans
    ascii_ms, typo_ms = offline.extract(text), offline.extract(typo)
    assert [(m.start, m.end, m.norm, m.concept_id) for m in typo_ms] == [
        (m.start, m.end, m.norm, m.concept_id) for m in ascii_ms
    ]
    for t, ms in ((text, ascii_ms), (typo, typo_ms)):
        assert all(t[m.start : m.end] == m.surface for m in ms)
    assert sum(m.surface.replace("\u2019", "'") in _EPONYMS for m in typo_ms) == sum(p in _EPONYMS for p in pieces)


def test_abbreviation_keys_keep_capitals():
    from specprobe.terms.build import lexicon_from_mentions
    from specprobe.terms.datasets import QARecord
    from specprobe.terms.extract.base import Mention

    rec = QARecord("q", "He had an MI.", ("a", "b"), "a", ("Cardiology",))
    m = Mention("MI", 10, 12, "Myocardial infarction", "HP:0001658", "hpo", ("HP:0001658",), "mi")
    assert "MI" in lexicon_from_mentions([rec], [[m]]).terms


def test_scispacy_linker_built_from_local_files_only(monkeypatch, tmp_path):
    """The linker is assembled from the given folder; scispaCy's downloader is never reached."""
    import json

    import joblib
    import scispacy.candidate_generation as cg_mod
    import scispacy.file_cache as fc

    from specprobe.terms.extract.scispacy_backend import _local_linker

    def no_network(*a, **k):
        raise AssertionError("scispaCy tried to download something")

    monkeypatch.setattr(fc, "get_from_cache", no_network)
    monkeypatch.setattr(cg_mod, "load_approximate_nearest_neighbours_index", lambda paths, **k: object())
    monkeypatch.setattr(joblib, "load", lambda path: object())
    for f in LINKER_FILES:
        (tmp_path / f).write_text("")
    (tmp_path / "concept_aliases.json").write_text(json.dumps(["myocardial infarction"]))
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        json.dumps(
            {
                "concept_id": "C0027051",
                "canonical_name": "Myocardial Infarction",
                "aliases": ["myocardial infarction", "heart attack"],
                "types": ["T047"],
            }
        )
        + "\n"
    )
    linker = _local_linker(tmp_path, kb, threshold=0.8)
    assert linker.kb.cui_to_entity["C0027051"].canonical_name == "Myocardial Infarction"
    assert linker.candidate_generator.ann_concept_aliases_list == ["myocardial infarction"]


def test_scispacy_term_keys_keep_abbreviations_case_sensitive():
    """The scispaCy backend keyed a mention by `ent.text.lower()`, so "MS" (multiple sclerosis) and "ms"
    (milliseconds), "AIDS" and "aids" were one term; it follows the offline rule (an abbreviation as
    written, less a plural "s"; other text lower-cased). Tested on a blank spaCy pipeline with an entity
    ruler in place of the scispaCy model."""
    from spacy.lang.en import English

    from specprobe.terms.build import lexicon_from_mentions
    from specprobe.terms.datasets import QARecord
    from specprobe.terms.extract.scispacy_backend import ScispacyExtractor, term_key

    assert [term_key(s) for s in ("MS", "ms", "AIDS", "aids", "TRAbs", "Multiple Sclerosis", "Ms")] == [
        "MS",
        "ms",
        "AIDS",
        "aids",
        "TRAb",
        "multiple sclerosis",
        "ms",
    ]
    nlp = English()
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "ENTITY", "pattern": p} for p in ("MS", "ms", "AIDS", "aids", "Multiple sclerosis")])  # type: ignore[attr-defined]
    ex = ScispacyExtractor.from_pipeline(nlp)
    texts = ["MS relapse after 5 ms.", "AIDS; hearing aids.", "Multiple sclerosis"]
    mentions = ex.extract_many(texts)
    assert [[(m.surface, m.norm) for m in ms] for ms in mentions] == [
        [("MS", "MS"), ("ms", "ms")],
        [("AIDS", "AIDS"), ("aids", "aids")],
        [("Multiple sclerosis", "multiple sclerosis")],
    ]
    recs = [QARecord(f"q{i}", t, ("a", "b"), "a", ("Neurology",)) for i, t in enumerate(texts)]
    lex = lexicon_from_mentions(recs, mentions, meta={"sources": []})
    assert {"MS", "ms", "AIDS", "aids", "multiple sclerosis"} <= set(lex.terms)
    assert lex["MS"].count == lex["ms"].count == 1
