"""Terms and texts as tables: a pandas DataFrame, a Hugging Face `datasets.Dataset`, or a .parquet,
.jsonl, .csv or .tsv file (a Path or a string), with the columns named by arguments.

A table is read as its rows, never iterated as its column names; a table without the needed column,
a DatasetDict, a missing or damaged file are each one error naming the input, the column or the line.
End to end, compare() gives the same numbers for the same terms and texts in every container.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from specprobe.probe import compare
from specprobe.probe.inputs import (
    materialize,
    normalize_terms,
    normalize_texts,
    terms_from_frame,
    texts_from_frame,
)
from specprobe.terms.datasets import TextRecord

datasets = pytest.importorskip("datasets")
pytest.importorskip("pyarrow")

TERMS = pd.DataFrame(
    {"term": ["seizure", "chest pain", "cirrhosis"], "specialty": ["Neurology", "Cardiology;Emergency", None]}
)
WANT_TERMS = {"seizure": ("Neurology",), "chest pain": ("Cardiology", "Emergency"), "cirrhosis": ()}
TEXTS = pd.DataFrame(
    {
        "id": ["007", "a2", "a3"],
        "text": [
            "The patient had a seizure last month; the budget was cut.",
            "Chest pain at rest and another seizure, said the team.",
            "Cirrhosis with ascites; the chest pain resolved this month.",
        ],
        "specialty": ["Neurology", "Cardiology", "Gastroenterology"],
    }
)
WANT_TEXTS = [TextRecord(i, t, (s,)) for i, t, s in zip(TEXTS["id"], TEXTS["text"], TEXTS["specialty"])]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    """`frame` as a table file of the type its name says (test helper)."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        recs = [{k: v for k, v in r.items() if v is not None} for r in frame.to_dict(orient="records")]
        path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


# -- the previous bug: a DataFrame iterated as its column names ----------------------------------------------------
def test_a_dataframe_of_terms_is_read_as_rows_not_column_names():
    got = normalize_terms(TERMS)
    assert got == WANT_TERMS and "term" not in got and "specialty" not in got


def test_a_dataframe_of_texts_is_read_as_rows_not_column_names():
    got = normalize_texts(TEXTS, None, {})
    assert got == WANT_TEXTS and all(r.text not in ("id", "text", "specialty") for r in got)


def test_a_dataframe_without_the_column_is_a_clear_error():
    with pytest.raises(ValueError, match=r"terms DataFrame has no term column 'term' \(columns: \['word'\]\)"):
        normalize_terms(pd.DataFrame({"word": ["seizure"]}))
    with pytest.raises(ValueError, match=r"texts DataFrame has no text column 'text'.*'question'"):
        normalize_texts(pd.DataFrame({"question": ["q"]}), None, {})


def test_errors_about_a_table_file_name_the_file(tmp_path):
    """A texts or terms table given as a path is read into a DataFrame first; its errors once named a
    "texts DataFrame", leaving the user to guess which of their files it was."""
    texts = tmp_path / "notes.csv"
    texts.write_text("question\nq\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"notes\.csv has no text column 'text' \(columns: \['question'\]\); rename it$"
    ):
        normalize_texts(materialize(str(texts)), None, {})
    terms = tmp_path / "terms.jsonl"
    terms.write_text('{"term": "seizure"}\n{"term": ""}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"terms\.jsonl row 1 \(index 1\): column 'term' must be a non-empty string"):
        normalize_terms(materialize(str(terms)))


@pytest.mark.parametrize("function", [terms_from_frame, texts_from_frame])
def test_a_path_of_another_file_type_is_called_that_not_a_missing_dataframe(function):
    """ "t.xlsx" as a string was told "needs a pandas DataFrame", though a table path is taken too; it is
    the file type that is not read, and the error names it and the suffixes that are."""
    with pytest.raises(ValueError, match=r"t\.xlsx: unsupported file type; use one of \.parquet"):
        function("t.xlsx")
    with pytest.raises(TypeError, match=r"needs a table: a pandas DataFrame, .* file; got a int$"):
        function(42)


# -- Hugging Face datasets --------------------------------------------------------------------------------------
def test_a_hf_dataset_reads_like_its_dataframe():
    assert normalize_terms(datasets.Dataset.from_pandas(TERMS)) == WANT_TERMS
    assert normalize_texts(datasets.Dataset.from_pandas(TEXTS), None, {}) == WANT_TEXTS


def test_columns_are_named_by_arguments():
    renamed = TEXTS.rename(columns={"id": "qid", "text": "question", "specialty": "dept"})
    ds = datasets.Dataset.from_pandas(renamed)
    assert texts_from_frame(ds, id="qid", text="question", specialty="dept") == WANT_TEXTS
    words = TERMS.rename(columns={"term": "word", "specialty": "field"})
    assert terms_from_frame(datasets.Dataset.from_pandas(words), term="word", specialty="field") == WANT_TERMS
    assert normalize_terms(words, term_column="word", specialty_column="field") == WANT_TERMS


def test_a_dataset_dict_asks_for_a_split():
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_pandas(TEXTS)})
    with pytest.raises(TypeError, match=r"texts is a DatasetDict; pick one split, e.g. texts=ds\['test'\]"):
        normalize_texts(dd, None, {})


def test_list_columns_of_specialties_from_a_dataset():
    ds = datasets.Dataset.from_dict({"term": ["seizure", "rash"], "specialties": [["Neurology", "Pediatrics"], []]})
    assert normalize_terms(ds) == {"seizure": ("Neurology", "Pediatrics"), "rash": ()}


# -- files ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv", ".tsv"])
def test_a_table_file_reads_like_its_dataframe(tmp_path, suffix):
    terms = _write(TERMS, tmp_path / f"terms{suffix}")
    texts = _write(TEXTS, tmp_path / f"texts{suffix}")
    for given in (terms, str(terms)):
        assert normalize_terms(given) == WANT_TERMS
    for given in (texts, str(texts)):
        assert normalize_texts(given, None, {}) == WANT_TEXTS  # the CSV id "007" stays a string
    assert isinstance(materialize(texts), pd.DataFrame), "a file is read once, by materialize"


def test_file_errors_name_the_input_and_the_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="terms file not found: .*nothere.csv"):
        normalize_terms(tmp_path / "nothere.csv")
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"texts.jsonl: line 2: not valid JSON"):
        normalize_texts(bad, None, {})
    lexicon_like = tmp_path / "lexicon.json"
    lexicon_like.write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"terms file .*lexicon.json: unsupported file type; use one of .parquet"):
        normalize_terms(lexicon_like)
    with pytest.raises(TypeError, match="not a single string"):
        normalize_terms("seizure")  # a plain string is still one term given without a list, refused


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_gives_the_same_numbers_for_every_container(tiny_llama, tmp_path):
    base, adapter = str(tiny_llama[0]), str(tiny_llama[1])
    controls = ["budget", "month", "team"]
    want = compare(base, adapter, dict(WANT_TERMS), list(WANT_TEXTS), controls=controls, progress=False).to_pandas()
    for terms, texts in (
        (TERMS, TEXTS),
        (_write(TERMS, tmp_path / "t.parquet"), datasets.Dataset.from_pandas(TEXTS)),
        (str(_write(TERMS, tmp_path / "t.csv")), _write(TEXTS, tmp_path / "x.jsonl")),
    ):
        got = compare(base, adapter, terms, texts, controls=controls, progress=False).to_pandas()
        pd.testing.assert_frame_equal(got, want)


def test_integer_ids_with_a_missing_one_keep_their_digits(tmp_path):
    """One missing id made pandas turn an integer id column into floats: id 1 became "1.0" and an id above
    2**53 lost digits, so results no longer joined back to the caller's data (JSON lines, parquet, HF)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": 1, "text": "a seizure"}, {"id": 12345678901234567, "text": "b"}, {"text": "c"}]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.table({"id": pa.array([1, 12345678901234567, None], pa.int64()), "text": ["a seizure", "b", "c"]})
    pq.write_table(table, tmp_path / "t.parquet")
    want = ["1", "12345678901234567", "text2"]
    for source in (str(jsonl), str(tmp_path / "t.parquet"), datasets.Dataset(table)):
        assert [r.id for r in texts_from_frame(source)] == want, source
    floats = pd.DataFrame({"id": [1.0, 2.0, None], "text": ["a", "b", "c"]})  # a frame a user made so
    assert [r.id for r in texts_from_frame(floats)] == ["1", "2", "text2"]
