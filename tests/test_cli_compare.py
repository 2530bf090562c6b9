"""`specprobe compare` end to end on a tiny model, and the command line's answers to bad input."""

import json
import os
import re

import pandas as pd
import pytest

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


def test_by_term_csv_reads_back_as_a_terms_table(tiny_llama, tmp_path, capsys):
    """by_term.csv wrote a term's specialties as Python tuple text, "('Cardiology', 'Emergency')", which the
    terms-table reader (--terms FILE.csv) took for one specialty of that name; now ";"-joined, as it splits them."""
    from specprobe.probe.cli import read_terms

    base, adapter = tiny_llama
    given = {"seizure": ["Neurology"], "chest pain": ["Cardiology", "Emergency"], "rest": []}
    (terms := tmp_path / "terms.json").write_text(json.dumps(given))
    (data := tmp_path / "qa.json").write_text(
        json.dumps(
            [{"Question": "Chest pain, a seizure, then rest.", "Specialty": "X", "Options": ["a"], "Answer": "a"}]
        )
    )
    args = ["compare", "--base", str(base), "--tuned", str(adapter), "--terms", str(terms), "--data", str(data)]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "out" / "by_term.csv")
    assert set(table.loc[~table["is_control"], "specialties"].fillna("")) == {"Neurology", "Cardiology;Emergency", ""}
    (only_terms := tmp_path / "terms.csv").write_text(table[~table["is_control"]].to_csv(index=False))
    assert read_terms(str(only_terms)) == {t: tuple(s) for t, s in given.items()}


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


# ------------------------------------------------------------- bad input: one line naming the option and the file
def _compare_args(tmp_path, *extra):
    """compare arguments whose models are never loaded: every case below is refused before."""
    terms = tmp_path / "terms.txt"
    terms.write_text("seizure\n", encoding="utf-8")
    base = "--base" in extra
    return [
        "compare",
        *([] if base else ["--base", str(tmp_path / "no-base")]),
        "--tuned",
        str(tmp_path / "no-adapter"),
        "--terms",
        str(terms),
        *extra,
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_controls_file_problems_name_the_option_and_the_file(tmp_path, capsys):
    latin1 = tmp_path / "words.txt"
    latin1.write_bytes("caf\u00e9\nhouse\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    cases = {
        str(latin1): r"words\.txt: not valid UTF-8 at byte 3 \(line 1",  # was: 'utf-8' codec can't decode ...
        "Auto": r"--controls 'Auto': not 'auto', 'none', or an existing file",  # was: [Errno 2] ... 'Auto'
        str(empty): r"--controls .*empty\.txt: no words in the file",  # was: ran with no control words
        str(tmp_path): r"--controls .*: a folder, not a file",
    }
    for value, message in cases.items():
        out = tmp_path / "out"
        assert main(_compare_args(tmp_path, "--controls", value, "--out", str(out))) == 2, value
        assert re.search(message, _one_line_error(capsys)), value
        assert not out.exists()


def test_an_out_that_cannot_be_written_is_refused_before_the_models_load(tmp_path, capsys):
    afile = tmp_path / "results.csv"
    afile.write_text("x\n", encoding="utf-8")
    # the models do not exist: the --out error comes first, before any work (it came after the scoring)
    assert main(_compare_args(tmp_path, "--out", str(afile / "sub"))) == 2
    assert re.search(r"--out .*results\.csv/sub: .*results\.csv is a file, not a folder", _one_line_error(capsys))
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(0o555)
        try:
            assert main(_compare_args(tmp_path, "--out", str(readonly / "out"))) == 2
            assert re.search(r"--out .*ro/out: no permission to write in .*ro", _one_line_error(capsys))
        finally:
            readonly.chmod(0o755)


def test_a_lexicon_with_no_data_file_asks_for_texts_before_the_models_load(tmp_path, capsys):
    """A lexicon recording no source data file has no contexts: compare loaded the models, then failed with
    'none of the 1 term(s) occurs in the 0 text(s)'; now it says what to pass before loading anything."""
    from specprobe.probe import compare
    from specprobe.terms.lexicon import Lexicon, TermEntry

    lex = Lexicon({"seizure": TermEntry(term="seizure", specialties=["Neurology"], specific=True)})
    path = lex.save(tmp_path / "lex.json")
    assert main(_compare_args(tmp_path, "--terms", str(path), "--out", str(tmp_path / "o"))) == 2
    err = _one_line_error(capsys)
    assert f"lexicon {path} records no data file" in err and "--data FILE" in err, err
    with pytest.raises(ValueError, match="this lexicon records no data file.* texts="):  # the models do not exist
        compare(str(tmp_path / "no-base"), str(tmp_path / "no-adapter"), terms=lex, progress=False)


def test_a_file_given_as_a_model_is_said_to_be_a_file(tmp_path, capsys):
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(b"\0")
    assert main(_compare_args(tmp_path, "--base", str(weights), "--out", str(tmp_path / "o"))) == 2
    err = _one_line_error(capsys)
    assert "adapter_model.safetensors' is a file; give the folder that holds the model's config.json" in err
    assert "Repo id" not in err  # was: the hub's "Repo id must be in the form 'repo_name' ..."


def test_a_folder_that_is_no_model_is_not_called_a_tokenizer_problem(tmp_path):
    from specprobe.core.models import ModelLoadError, load_tokenizer

    (tmp_path / "empty").mkdir()
    # was: "Couldn't instantiate the backend tokenizer ... install sentencepiece or tiktoken"
    with pytest.raises(ModelLoadError, match=r"'.*empty' is a directory without a config\.json"):
        load_tokenizer(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "extra, message",
    [
        # was: the lens ran, then "--patch/--attribution run locally only; skipped with --remote", exit 0
        (["--remote", "ndif", "--patch"], "--patch and --attribution run locally only; leave them out with --remote"),
        (["--remote", "local", "--attribution"], "--patch and --attribution run locally only"),
        # was: silently ignored
        (["--positions", "scored"], "--positions scored chooses the positions --patch patches; add --patch"),
    ],
)
def test_layers_options_that_would_be_ignored_are_refused(tmp_path, capsys, extra, message):
    args = _compare_args(tmp_path, "--out", str(tmp_path / "o"), *extra)
    assert main(["layers", *args[1:]]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_seen_unseen_names_a_missing_train_data_file(tmp_path, capsys):
    args = ["analyze", "seen-unseen", "--comparison", str(tmp_path / "c.json.gz"), "--adapter", str(tmp_path)]
    assert main([*args, "--train-data", str(tmp_path / "train.json"), "--out", str(tmp_path / "o")]) == 2
    # was: "training data file not found: ... (recorded in <adapter>/manifest.json); pass train_data="
    assert re.search(r"error: --train-data .*train\.json: no such file$", _one_line_error(capsys).strip())


def _options_without_help(command: list[str]) -> list[str]:
    import argparse

    from specprobe.app.cli import build_parser

    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return [
        a.option_strings[-1]
        for a in parser._actions
        if a.option_strings and not a.help and not isinstance(a, argparse._HelpAction)
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["compare"],
        ["layers"],
        ["evaluate"],
        ["finetune"],
        ["demo"],
        ["run"],
        ["analyze", "seen-unseen"],
        ["analyze", "accuracy-link"],
        ["analyze", "trajectory"],
        ["analyze", "general-text"],
    ],
)
def test_every_option_says_what_it_does(command):
    # was: --batch-size, --dtype, --long-texts, --no-progress (compare, layers, analyze trajectory; all but
    # --long-texts, which it has not, analyze general-text), --template, --option-format, --continuation
    # (evaluate), --weight-decay, --trust-remote-code, --gradient-checkpointing (finetune), --metric (accuracy-link)
    assert _options_without_help(command) == []
