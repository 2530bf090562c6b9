"""The scispaCy backend end to end, on files made here: a saved blank spaCy pipeline whose entity ruler stands
for the NER model, and a three-concept linker folder (TF-IDF vectors, nmslib index, knowledge base) built the
way scispaCy builds its own. Neither scispaCy's models nor its linker files are on PyPI, so the code after model
loading had never run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("scispacy")
pytest.importorskip("nmslib")

from specprobe.terms.build import build_lexicon  # noqa: E402
from specprobe.terms.extract import get_extractor  # noqa: E402
from specprobe.terms.extract.scispacy_backend import ScispacyExtractor  # noqa: E402

KB = [
    ("C0034065", "Pulmonary Embolism", ["pulmonary embolism", "pulmonary embolus"]),
    ("C0008031", "Chest Pain", ["chest pain", "thoracic pain"]),
    ("C0027051", "Myocardial Infarction", ["myocardial infarction", "heart attack"]),
]
PATTERNS = ["pulmonary embolism", "PE", "chest pain", "myocardial infarction", "MI"]
TEXT = "A woman with pulmonary embolism (PE) and chest pain. The PE resolved; no MI."


def _model(folder: Path) -> Path:
    """A spaCy pipeline folder (config.cfg and all) whose entity ruler finds `PATTERNS`."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": "ENTITY", "pattern": p} for p in PATTERNS])  # type: ignore[attr-defined]
    nlp.to_disk(folder)
    return folder


def _linker(folder: Path) -> Path:
    """The four linker files and a knowledge base .jsonl, as `scispacy.candidate_generation.
    create_tfidf_ann_index` writes them (min_df 1 and a small index: three concepts)."""
    import joblib
    import nmslib
    import numpy
    import scipy.sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    folder.mkdir()
    rows = [{"concept_id": c, "canonical_name": n, "aliases": a, "types": [], "definition": n} for c, n, a in KB]
    (folder / "kb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    aliases = sorted({a for _, n, al in KB for a in [n, *al]})
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=1, dtype=numpy.float32)  # pyright: ignore[reportArgumentType]
    vectors = vectorizer.fit_transform(aliases)
    joblib.dump(vectorizer, folder / "tfidf_vectorizer.joblib")
    scipy.sparse.save_npz(folder / "tfidf_vectors_sparse.npz", vectors)
    (folder / "concept_aliases.json").write_text(json.dumps(aliases))
    index = nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)
    index.addDataPointBatch(vectors)
    index.createIndex({"M": 8, "efConstruction": 50, "post": 0})
    index.saveIndex(str(folder / "nmslib_index.bin"))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("scispacy")
    return {"model": str(_model(root / "model")), "linker_dir": str(_linker(root / "linker"))}


@pytest.fixture(scope="module")
def extractor(files) -> ScispacyExtractor:
    return ScispacyExtractor(**files)


def test_the_backend_loads_local_files_and_links_mentions(extractor):
    ms = extractor.extract(TEXT)
    assert [TEXT[m.start : m.end] for m in ms] == [m.surface for m in ms]
    assert [m.surface for m in ms] == ["pulmonary embolism", "PE", "chest pain", "PE", "MI"]
    linked = {m.surface: (m.concept_id, m.canonical, m.source) for m in ms}
    assert linked["chest pain"] == ("C0008031", "Chest Pain", "umls")
    assert linked["PE"] == ("C0034065", "Pulmonary Embolism", "umls")  # linked through its long form
    assert linked["MI"] == ("", "MI", "scispacy-ner")  # undefined here and no alias: NER alone


def test_an_abbreviation_defined_in_the_text_counts_for_its_long_form(extractor):
    """Each "PE" was the term "PE" beside "pulmonary embolism" (the offline backend counts it for its long
    form): the lexicon split one concept's counts over two terms."""
    ms = extractor.extract(TEXT)
    long = next(m for m in ms if m.surface == "pulmonary embolism")
    short = [m for m in ms if m.surface == "PE"]
    assert len(short) == 2
    assert all(m.norm == long.norm and m.abbreviation_of == "pulmonary embolism" for m in short)
    assert [m.norm for m in ms if m.surface == "MI"] == ["MI"]  # undefined: a term of its own, as written


def test_a_pipeline_without_a_linker_gives_ner_mentions_with_long_forms(files):
    import scispacy.abbreviation  # noqa: F401
    import spacy

    nlp = spacy.load(files["model"])
    nlp.add_pipe("abbreviation_detector")
    ms = ScispacyExtractor.from_pipeline(nlp).extract_many([TEXT, "Chest pain."])
    assert [[m.source for m in doc] for doc in ms] == [["scispacy-ner"] * 5, ["scispacy-ner"]]
    pe = [m for m in ms[0] if m.surface == "PE"]
    assert {(m.norm, m.canonical, m.concept_id) for m in pe} == {("pulmonary embolism", "pulmonary embolism", "")}


@pytest.mark.slow  # builds the offline dictionary that gives the mentions ICD-10-CM/HPO concepts (~10 s)
def test_a_lexicon_built_with_the_backend_counts_the_abbreviation_under_its_long_form(files, tmp_path):
    data = tmp_path / "d.json"
    rows = [
        {"Question": TEXT, "Specialty": "Respiratory medicine", "Options": ["a", "b"], "Answer": "a"},
        {"Question": "Chest pain after a myocardial infarction.", "Specialty": "Cardiology", "Options": ["a", "b"]}
        | {"Answer": "a"},
    ]
    data.write_text(json.dumps(rows))
    assert isinstance(get_extractor("scispacy", **files), ScispacyExtractor)
    lex = build_lexicon(data, backend="scispacy", extractor_options=files)
    assert "PE" not in lex.terms
    pe = lex["pulmonary embolism"]
    assert pe.count == 3 and pe.surfaces == {"pulmonary embolism": 1, "PE": 2}
    assert pe.concept_ids[0] == "C0034065" and pe.canonical == "Pulmonary Embolism"
    assert lex["chest pain"].counts == {"Cardiology": 1, "Respiratory medicine": 1}
