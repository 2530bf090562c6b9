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


# ------------------------------------------------------------------------------ outputs, inputs, options
def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture()
def lexicon(tmp_path):
    from tests.test_terms_lexicon import _toy

    return _toy().save(tmp_path / "lex.json")


def test_export_never_replaces_its_lexicon_nor_an_existing_file(lexicon, tmp_path, capsys):
    """`terms export lex.json --csv --out lex.json` exited 0 and replaced the lexicon by its CSV, and any
    existing --out was overwritten without --overwrite."""
    before = lexicon.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(lexicon)
    for out in (lexicon, link):
        for extra in ([], ["--overwrite"]):
            assert main(["terms", "export", str(lexicon), "--csv", "--out", str(out), *extra]) == 2
            assert _err_line(capsys).endswith(f"--out {out} is the lexicon it reads; write to another file")
    assert lexicon.read_bytes() == before
    csv_path = tmp_path / "lex.csv"
    csv_path.write_text("keep me\n")
    assert main(["terms", "export", str(lexicon), "--csv", "--out", str(csv_path)]) == 2
    assert _err_line(capsys).endswith(f"{csv_path} exists; pass --overwrite to replace it")
    assert csv_path.read_text() == "keep me\n"
    assert main(["terms", "export", str(lexicon), "--out", str(csv_path), "--overwrite"]) == 0  # --csv optional
    assert csv_path.read_text().startswith("term,canonical,count,specialties")
    assert main(["terms", "export", str(lexicon), "--out", str(tmp_path)]) == 2
    assert _err_line(capsys).endswith(f"--out {tmp_path} is a folder; give the name of a file to write")


def test_build_reads_smedqa_json_lines(tmp_path, capsys):
    """An S-MedQA file one record per line was 'not valid JSON (Extra data: line 2 column 1 ...)'."""
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps(item) + "\n" for item in ITEMS[:4]))
    out = tmp_path / "lex.json"
    assert main(["terms", "build", str(p), "--out", str(out), "--no-progress"]) == 0
    assert "from 4 records" in capsys.readouterr().out
    assert Lexicon.load(out).term_specialties()["atrial fibrillation"] == ("Cardiology",)


def test_a_lexicon_given_as_data_says_so(lexicon, tmp_path, capsys):
    """was: 'lex.json: line 1: not valid JSON (Expecting property name enclosed in double quotes, column 2)'"""
    assert main(["terms", "build", str(lexicon), "--out", str(tmp_path / "new.json"), "--no-progress"]) == 2
    assert "lex.json: a specprobe term lexicon, not QA data (expected a JSON list" in _err_line(capsys)
    assert not (tmp_path / "new.json").exists()


@pytest.mark.parametrize("top", ["-3", "0", "x"])
def test_show_top_must_be_a_positive_integer(lexicon, top, capsys):
    """--top -3 printed every term and --top 0 only the header, both exit 0."""
    with pytest.raises(SystemExit) as info:
        main(["terms", "show", str(lexicon), "--top", top])
    assert info.value.code == 2
    assert "argument --top: must be a positive integer" in capsys.readouterr().err


def test_build_refuses_an_unwritable_out_before_extracting(data, tmp_path, monkeypatch, capsys):
    """--out a folder (with --overwrite), a path under a file, or the data file itself failed only after the
    extraction; they are refused before it."""
    import specprobe.terms.build as build

    def no_extraction(*args, **kwargs):
        raise AssertionError("extraction started")

    monkeypatch.setattr(build, "build_lexicon", no_extraction)
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (folder, f"--out {folder} is a folder; give the name of a file to write"),
        (data / "lex.json", f"--out {data / 'lex.json'}: {data} is a file, not a folder"),
        (data, f"--out {data} is the data file it reads; write to another file"),
    ]
    before = data.read_bytes()
    for out, message in cases:
        assert main(["terms", "build", str(data), "--out", str(out), "--overwrite", "--no-progress"]) == 2
        assert _err_line(capsys).endswith(message)
    assert data.read_bytes() == before


def _terms_parser(action: str):
    import argparse

    from specprobe.app.cli import build_parser

    parser = build_parser()
    for name in ("terms", action):
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


@pytest.mark.parametrize("action", ["build", "show", "stats", "export"])
def test_every_terms_option_and_argument_says_what_it_does(action):
    """The every-option-has-help check of tests/test_cli_compare.py, for the terms subcommands and their
    positional arguments. was: --backend, --format, --signals (build), --top and the lexicon argument
    (show), --json (stats), the lexicon argument (stats, export)."""
    from tests.test_cli_compare import _options_without_help

    assert _options_without_help(["terms", action]) == []
    assert [a.dest for a in _terms_parser(action)._actions if not a.option_strings and not a.help] == []


def test_export_csv_is_optional_and_its_help_says_so(lexicon, capsys):
    """--csv was required (leaving it out was an argparse error) while its help, "write CSV", read like an
    optional flag; CSV is the default and only format, so the flag may be left out and its help says so."""
    csv = next(a for a in _terms_parser("export")._actions if "--csv" in a.option_strings)
    assert not csv.required and "default" in csv.help
    assert main(["terms", "export", str(lexicon)]) == 0
    assert capsys.readouterr().out.startswith("term,canonical,count,specialties")


def test_stats_of_a_lexicon_whose_source_records_only_its_path(tmp_path, capsys):
    """Lexicon.load accepts a source with only a path (a lexicon made in Python); `terms stats` then failed
    with 'specprobe terms: error: sha256' (a KeyError)."""
    from specprobe.terms.lexicon import TermEntry

    p = tmp_path / "lex.json"
    meta = {"sources": [{"path": "/data/qa.json"}], "specialties": ["Cardiology"]}
    Lexicon({"mi": TermEntry("mi", count=1, specialties=["Cardiology"], specific=True)}, meta).save(p)
    assert main(["terms", "stats", str(p)]) == 0
    assert "source: /data/qa.json (no sha256 recorded)" in capsys.readouterr().out
