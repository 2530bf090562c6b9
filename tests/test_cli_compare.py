"""`specprobe compare` end to end on a tiny model."""

import json

import pandas as pd

from specprobe.app.cli import main
from specprobe.probe import Comparison


def test_cli_compare_writes_results(tiny_llama, tmp_path, capsys):
    base, adapter = tiny_llama
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"seizure": ["Neurology"], "chest pain": ["Cardiology"], "absent term": ["Neurology"]}))
    data = tmp_path / "qa.json"
    data.write_text(
        json.dumps(
            [
                {
                    "Question": "A man with chest pain and a seizure. What is the diagnosis?",
                    "Specialty": "Cardiology",
                    "Options": ["a", "b", "c", "d"],
                    "Answer": "a",
                },
                {
                    "Question": "After the seizure the patient slept. Chest pain was absent.",
                    "Specialty": "Neurology",
                    "Options": ["a", "b", "c", "d"],
                    "Answer": "b",
                },
            ]
        )
    )
    rc = main(
        [
            "compare",
            "--base",
            str(base),
            "--tuned",
            str(adapter),
            "--terms",
            str(terms),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Cardiology" in out and "absent term" in out
    comp = Comparison.load(tmp_path / "out" / "comparison.json.gz")
    assert set(comp.to_pandas()["text_id"]) == {"qa:0", "qa:1"}
    assert len(pd.read_csv(tmp_path / "out" / "by_specialty.csv")) >= 2


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    rc = main(
        [
            "compare",
            "--base",
            str(tmp_path / "nope"),
            "--tuned",
            str(tmp_path / "nope2"),
            "--terms",
            str(tmp_path / "missing.txt"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "missing.txt" in err and "Traceback" not in err


def test_terms_tables_are_read_by_column(tmp_path):
    """`--terms` takes a CSV/TSV/JSONL table (a `term` column, optional specialties) like the Python API."""
    import pytest

    from specprobe.probe.cli import read_terms

    csv = tmp_path / "terms.csv"
    csv.write_text("term,specialty\nseizure,Neurology\nchest pain,Cardiology;Emergency\n", encoding="utf-8")
    assert read_terms(str(csv)) == {"seizure": ("Neurology",), "chest pain": ("Cardiology", "Emergency")}
    jsonl = tmp_path / "terms.jsonl"
    jsonl.write_text('{"term": "seizure", "specialties": ["Neurology"]}\n', encoding="utf-8")
    assert read_terms(str(jsonl)) == {"seizure": ("Neurology",)}
    plain = tmp_path / "terms.txt"  # not a table: one term per line, a comma is part of the term
    plain.write_text("term,specialty\n", encoding="utf-8")
    assert read_terms(str(plain)) == ["term,specialty"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,specialty\nseizure,Neurology\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"bad\.csv has no term column 'term' \(columns: \['name', 'specialty'\]\); rename it$"
    ):
        read_terms(str(bad))
    empty = tmp_path / "empty_term.tsv"
    empty.write_text("term\tspecialty\n\tCardiology\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty_term\.tsv row 0 .*non-empty string"):
        read_terms(str(empty))
