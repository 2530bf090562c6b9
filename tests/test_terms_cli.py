"""`specprobe terms build/show/stats/export` through `specprobe.app.cli.main`."""

import json

import pytest

from specprobe.app.cli import main
from specprobe.terms.lexicon import Lexicon

ITEMS = [
    {
        "Question": "A 60-year-old man has crushing chest pain. ECG shows an acute myocardial infarction.",
        "Specialty": "Cardiology",
        "Options": ["Aspirin", "Insulin", "Lithium", "Heparin"],
        "Answer": "Aspirin",
    },
    {
        "Question": "A man with atrial fibrillation and heart failure.",
        "Specialty": "Cardiology",
        "Options": ["a", "b", "c", "d"],
        "Answer": "a",
    },
    {
        "Question": "A girl has seizures and ataxia.",
        "Specialty": "Neurology",
        "Options": ["a", "b", "c", "d"],
        "Answer": "b",
    },
    {
        "Question": "A woman has psoriasis plaques.",
        "Specialty": "Dermatology",
        "Options": ["a", "b", "c", "d"],
        "Answer": "c",
    },
    {"Question": "Broken", "Specialty": "Dermatology", "Options": ["a"], "Answer": "zzz"},
]


@pytest.fixture()
def data(tmp_path):
    p = tmp_path / "qa.json"
    p.write_text(json.dumps(ITEMS))
    return p


def test_build_show_stats_export(data, tmp_path, capsys):
    out = tmp_path / "lex.json"
    assert main(["terms", "build", str(data), "--out", str(out)]) == 2  # malformed item 4
    assert "item 4" in capsys.readouterr().err
    assert main(["terms", "build", str(data), "--out", str(out), "--skip-bad", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 malformed" in captured.err and "wrote" in captured.out
    lex = Lexicon.load(out)
    ts = lex.term_specialties()
    assert ts["atrial fibrillation"] == ("Cardiology",)
    assert "Neurology" in ts["seizures"]
    assert lex.contexts()[0].text.startswith("A 60-year-old man")

    assert main(["terms", "show", str(out), "--specialty", "Cardiology", "--top", "5"]) == 0
    assert "atrial fibrillation" in capsys.readouterr().out
    assert main(["terms", "stats", str(out)]) == 0
    assert "Cardiology" in capsys.readouterr().out
    assert main(["terms", "stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["terms"] == len(lex)
    csv_path = tmp_path / "lex.csv"
    assert main(["terms", "export", str(out), "--csv", "--out", str(csv_path)]) == 0
    assert csv_path.read_text().startswith("term,canonical,count,specialties")

    # a display command's output is its result: --quiet keeps it (and drops only progress and logs)
    assert main(["-q", "terms", "show", str(out), "--specialty", "Cardiology", "--top", "5"]) == 0
    assert "atrial fibrillation" in capsys.readouterr().out
    assert main(["terms", "stats", str(out), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["terms"] == len(lex)


def test_build_options(data, tmp_path):
    out = tmp_path / "lex.json"
    assert (
        main(
            [
                "terms",
                "build",
                str(data),
                "--out",
                str(out),
                "--skip-bad",
                "--no-progress",
                "--signals",
                "ontology",
                "--min-count",
                "1",
            ]
        )
        == 0
    )
    lex = Lexicon.load(out)
    assert lex.rule.use_corpus is False


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["terms", "show", str(tmp_path / "missing.json")]) == 2
    assert "lexicon file not found" in capsys.readouterr().err
