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
