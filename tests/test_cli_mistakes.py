"""The command line's answers to a user's plausible mistakes: a folder or a QA file where another file is
expected, JSON where lines of words or texts are, a misspelt specialty. Each is one line naming the file or
value (exit 2) before any model loads, never a run that exits 0 with a wrong or empty result."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

from specprobe.app.cli import main


def _questions() -> Path:
    """The built-in QA file (S-MedQA JSON)."""
    return Path(str(files("specprobe") / "data" / "demo" / "questions.json"))


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `specprobe argv`: it must fail with exit 2 and one error line, no traceback; the line."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _compare(tmp_path: Path, *extra: str) -> list[str]:
    """`compare` argv on models that do not exist: the mistakes below are refused before any model loads."""
    return ["compare", "--base", str(tmp_path / "no-base"), "--tuned", str(tmp_path / "no-lora"), *extra]


def test_a_qa_file_given_as_terms_says_it_is_qa_data(tmp_path, capsys):
    err = _error(capsys, [*_compare(tmp_path, "--terms", str(_questions())), "--out", str(tmp_path / "o")])
    assert "questions.json" in err and "QA data, not terms" in err and "terms build" in err
    assert "'Question'" in err and "got dict: {" not in err  # the record's keys, not a cut repr of it


def test_a_qa_file_given_as_a_lexicon_says_it_is_qa_data(capsys):
    for action in ("show", "stats"):
        err = _error(capsys, ["terms", action, str(_questions())])
        assert "questions.json: not a specprobe lexicon" in err and "QA data" in err and "terms build" in err


@pytest.mark.parametrize("suffix", [".json", ".txt"])
def test_json_given_as_control_words_is_refused(tmp_path, capsys, suffix):
    """A lexicon (or any JSON) as --controls was read one line a word: exit 0, with '"scispacy": "0.6.2",' and
    the like scored as control words."""
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"chest pain": ["Cardiology"]}))
    controls = tmp_path / f"controls{suffix}"
    controls.write_text(json.dumps({"schema": "specprobe.terms.lexicon", "terms": {"a": {}}}, indent=1))
    err = _error(capsys, [*_compare(tmp_path, "--terms", str(terms), "--controls", str(controls)), "--out", "o"])
    assert f"--controls {controls}: holds JSON, not one word per line" in err


def test_plain_control_words_are_still_read(tmp_path):
    from specprobe.probe.options import read_controls

    words = tmp_path / "words.txt"
    words.write_text("table\n[chair]\n\nwindow\n")
    assert read_controls(str(words)) == ["table", "[chair]", "window"]


@pytest.mark.parametrize("name", ["questions.json", "questions.txt"])
def test_a_qa_file_given_as_general_texts_is_refused(tmp_path, capsys, name):
    """`analyze general-text --texts questions.json` scored each line of the JSON as one general text (exit 0)."""
    texts = tmp_path / name
    texts.write_text(json.dumps(json.loads(_questions().read_text(encoding="utf-8"))[:3]))
    argv = ["analyze", "general-text", "--base", str(tmp_path / "b"), "--adapter", str(tmp_path / "a")]
    err = _error(capsys, [*argv, "--texts", str(texts), "--out", str(tmp_path / "o")])
    assert f"--texts {texts}: holds JSON, not one text a line" in err and ".jsonl" in err
    assert not (tmp_path / "o").exists()


def test_trajectory_refuses_a_specialty_no_term_has(tmp_path, capsys):
    """A misspelt --specialty gave an own-advantage table of blanks at every step, and exit 0."""
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"chest pain": ["Cardiology"], "seizure": ["Neurology"]}))
    argv = ["analyze", "trajectory", "--base", str(tmp_path / "b"), "--adapter", str(tmp_path / "a")]
    argv += ["--terms", str(terms), "--data", str(_questions()), "--out", str(tmp_path / "o")]
    err = _error(capsys, [*argv, "--specialty", "Cardiologyy"])
    assert "--specialty 'Cardiologyy': no term has this specialty" in err and "Cardiology, Neurology" in err
    assert not (tmp_path / "o").exists()


def test_trajectory_specialty_is_matched_as_its_analysis_matches_it(tmp_path):
    """The check takes what `Trajectory.own_advantage` takes: any case, and 'all' (no own specialty)."""
    from specprobe.probe.analyses.model_cli import _check_own_specialty

    terms = {"chest pain": ["Cardiology"]}
    for ok in ("cardiology", " Cardiology ", "all", None):
        _check_own_specialty(ok, terms)


def test_a_folder_given_for_a_file_names_it_and_what_it_holds(tmp_path, capsys):
    """A results folder where its file is expected was '[Errno 21] Is a directory: ...'."""
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "comparison.json.gz").write_bytes(b"")
    argv = ["analyze", "seen-unseen", "--comparison", str(folder), "--adapter", str(tmp_path)]
    err = _error(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert f"{folder} is a folder, not a file" in err and "comparison.json.gz" in err and "Errno" not in err
    for argv in (
        ["terms", "show", str(folder)],
        ["terms", "build", str(folder), "--out", str(tmp_path / "lex.json")],
        [*_compare(tmp_path, "--terms", str(folder)), "--out", str(tmp_path / "o")],
    ):
        err = _error(capsys, argv)
        assert f"{folder} is a folder, not a file" in err and "Errno" not in err, err


def _adapter_folder(tmp_path: Path) -> Path:
    """A PEFT adapter folder (its config only: these mistakes are refused before anything loads)."""
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base-model"}))
    return adapter


def test_an_adapter_given_as_the_base_model_says_so(tmp_path, capsys):
    """finetune --base ADAPTER said "cannot load a tokenizer ... install sentencepiece"; evaluate --model ADAPTER
    said to pass it as `tuned`, a flag evaluate does not have."""
    adapter = _adapter_folder(tmp_path)
    argv = ["finetune", "--base", str(adapter), "--data", str(_questions()), "--out", str(tmp_path / "o")]
    err = _error(capsys, argv)
    assert f"--base {adapter} is a PEFT adapter folder, not a base model" in err and "(org/base-model)" in err
    argv = ["evaluate", "--model", str(adapter), "--data", str(_questions()), "--out", str(tmp_path / "e.json")]
    err = _error(capsys, argv)
    assert f"--model {adapter} is a PEFT adapter folder" in err and "as --adapter" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "e.json").exists()


def test_an_adapter_given_as_the_base_model_says_so_in_the_python_api(tmp_path):
    """finetune.train(base=ADAPTER) said "cannot load a tokenizer ... install sentencepiece", ModelPair.load
    (compare, evaluate) "pass it as `tuned`" (evaluate has no `tuned`); both now name what it is and its base."""
    from specprobe.core.models import ModelLoadError, ModelPair, load_tokenizer
    from specprobe.finetune import train

    adapter = _adapter_folder(tmp_path)
    said = "is a PEFT adapter folder, not a base model: give the model it was trained on (org/base-model)"
    with pytest.raises(ModelLoadError, match=re.escape(f"base {adapter} {said} as base")):
        train(str(adapter), _questions(), None, tmp_path / "o", max_steps=1, progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelLoadError, match=re.escape(f"base {adapter} {said} as base, and the adapter as `tuned`")):
        ModelPair.load(str(adapter), device="cpu")
    with pytest.raises(ModelLoadError, match=re.escape(f"model {adapter} {said} instead")):
        load_tokenizer(str(adapter))


@pytest.mark.parametrize(
    "extra, message",
    [
        # was: an "accuracy matrix" of the base alone, exit 0
        (["--matrix"], "--matrix scores adapters beside the base: give --adapter"),
        # was: "unknown variant 'tuned'; this pair has ('base',)" after the model loaded
        (["--variant", "tuned"], "--variant tuned scores an adapter: give it as --adapter"),
    ],
)
def test_evaluate_without_the_adapter_its_options_need(tmp_path, capsys, extra, message):
    argv = ["evaluate", "--model", str(tmp_path / "no-model"), "--data", str(_questions())]
    assert message in _error(capsys, [*argv, "--out", str(tmp_path / "e.json"), *extra])


def test_finetune_refuses_an_output_it_cannot_write_before_the_model_loads(tmp_path, capsys):
    """Was "[Errno 30] Read-only file system" (or "Permission denied") after the tokenizer and model loaded."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["finetune", "--base", str(tmp_path / "no-model"), "--data", str(_questions())]
    err = _error(capsys, [*argv, "--out", str(afile / "lora")])
    assert f"--out {afile / 'lora'}: {afile} is a file, not a folder" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--save-steps", "50", "--max-steps", "1"], "step 50 is after the run's last step (1)"),
        (["--target-modules", "nope", "--max-steps", "1"], "cannot put LoRA on target modules ['nope']"),
    ],
)
def test_a_finetune_refused_leaves_no_empty_out_folder(tiny_llama, tmp_path, capsys, extra, message):
    """Refused after the output lock made --out (and its parents): they were left behind, empty."""
    out = tmp_path / "runs" / "lora"
    argv = ["finetune", "--base", str(tiny_llama[0]), "--data", str(_questions()), "--out", str(out)]
    assert message in _error(capsys, [*argv, "--no-progress", *extra])
    assert not (tmp_path / "runs").exists()


def test_finetune_on_a_finished_run_says_it_returned_it(tiny_llama, tmp_path, capsys):
    """A rerun of a finished run printed "wrote adapter OUT: ..." as if it had trained again."""
    out = tmp_path / "lora"
    argv = ["finetune", "--base", str(tiny_llama[0]), "--data", str(_questions()), "--out", str(out)]
    argv += ["--max-steps", "1", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote adapter {out}: 1 steps")
    assert main([*argv, "--save-steps", "1"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"returned the finished run in {out}, nothing trained: 1 steps"), said
    assert "wrote" not in said


@pytest.mark.parametrize("body", ["", "# nothing set yet\n"])
def test_run_refuses_an_experiment_file_without_keys(tmp_path, capsys, monkeypatch, body):
    """An empty (or wrong) experiment file ran the whole demo study into ./specprobe-demo."""
    import specprobe.app.experiment as experiment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiment, "run_experiment", lambda *a, **k: pytest.fail("the demo study started"))
    config = tmp_path / "experiment.toml"
    config.write_text(body)
    err = _error(capsys, ["run", str(config)])
    assert f"{config}: no keys" in err and "specprobe demo" in err
    assert not (tmp_path / "specprobe-demo").exists()


def test_run_names_a_missing_or_folder_experiment_file(tmp_path, capsys):
    assert "experiment file not found: " in _error(capsys, ["run", str(tmp_path / "nope.toml")])
    assert f"{tmp_path} is a folder, not a file" in _error(capsys, ["run", str(tmp_path)])


def _mapping(specialty: str) -> str:
    return json.dumps(
        {"question": "q", "options": ["a", "b"], "answer": "ans", "answer_format": "letter", "specialty": specialty}
    )


def test_a_csv_column_the_mapping_misspells_is_refused(tmp_path, capsys):
    """--mapping '{..., "specialty": "Spec"}' on a file whose column is 'spec' built a lexicon without any
    specialty (exit 0): the column was read as empty in every row."""
    data = tmp_path / "qa.csv"
    data.write_text("q,a,b,ans,spec\nA patient with chest pain and angina?,x,y,A,Cardiology\n")
    argv = ["terms", "build", str(data), "--out", str(tmp_path / "lex.json"), "--mapping"]
    err = _error(capsys, [*argv, _mapping("Spec")])
    assert f"{data}: no column 'Spec' (its columns: q, a, b, ans, spec)" in err
    assert not (tmp_path / "lex.json").exists()
    assert main([*argv, _mapping("spec")]) == 0  # the right name reads the specialty
    capsys.readouterr()
    err = _error(capsys, ["terms", "build", str(data), "--out", str(tmp_path / "l2.json")])  # no mapping at all
    assert "no columns 'question', 'options', 'answer' (its columns: q, a, b, ans, spec)" in err


def test_a_jsonl_key_the_mapping_misspells_is_refused(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    row = {"q": "A patient with chest pain?", "a": "x", "b": "y", "ans": "A", "spec": "Cardiology"}
    data.write_text(json.dumps(row) + "\n" + json.dumps({**row, "spec": "Neurology"}) + "\n")
    argv = ["terms", "build", str(data), "--out", str(tmp_path / "lex.json"), "--mapping"]
    err = _error(capsys, [*argv, _mapping("Spec")])
    assert f"{data}: no record has the key 'Spec' the mapping names" in err and "'spec'" in err


def test_layers_remote_ndif_refuses_a_local_base_before_anything_loads(tmp_path, capsys):
    """NDIF runs the models it hosts: a local --base failed, after the texts were prepared, with the hub
    client's "Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/path'"."""
    base = tmp_path / "base"
    base.mkdir()
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"chest pain": ["Cardiology"]}))
    argv = ["layers", "--base", str(base), "--tuned", str(tmp_path / "lora"), "--terms", str(terms)]
    err = _error(capsys, [*argv, "--remote", "ndif", "--out", str(tmp_path / "o")])
    assert f"--remote ndif runs a model NDIF hosts, named by its hub id; --base {base} is a local folder" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_or_file_adapter_is_named_as_such(tmp_path, capsys):
    """trajectory --adapter with a typo said "no manifest.json; pass a list of (step, adapter folder) instead"
    (advice for the Python API); seen-unseen --adapter FILE said "adapter directory not found" for a file
    that is there."""
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"chest pain": ["Cardiology"]}))
    afile = tmp_path / "adapter_model.safetensors"
    afile.write_bytes(b"x")
    argv = ["analyze", "trajectory", "--base", str(tmp_path / "b"), "--terms", str(terms), "--out", str(tmp_path / "o")]
    err = _error(capsys, [*argv, "--adapter", str(tmp_path / "lroa")])
    assert f"adapter folder not found: {tmp_path / 'lroa'}" in err and "pass a list" not in err
    assert f"adapter {afile} is a file, not a folder" in _error(capsys, [*argv, "--adapter", str(afile)])
    from specprobe.probe.training_data import read_adapter_manifest  # seen-unseen's reader of --adapter

    with pytest.raises(NotADirectoryError, match="is a file, not a folder; give the adapter's folder"):
        read_adapter_manifest(str(afile))


def test_evaluate_matrix_names_an_adapter_file_as_a_file(tmp_path, capsys):
    """evaluate --matrix --adapter FILE said "adapter directory not found" for a file that is there (the
    check trajectory and seen-unseen share now)."""
    afile = tmp_path / "adapter_model.safetensors"
    afile.write_bytes(b"x")
    argv = ["evaluate", "--model", str(tmp_path / "no-model"), "--data", str(_questions()), "--matrix"]
    argv += ["--out", str(tmp_path / "m.json")]
    assert f"adapter {afile} is a file, not a folder" in _error(capsys, [*argv, "--adapter", str(afile)])
    err = _error(capsys, [*argv, "--adapter", str(tmp_path / "lroa")])
    assert f"adapter folder not found: {tmp_path / 'lroa'}" in err


def test_a_medmcqa_file_whose_cop_cannot_tell_its_base_says_what_finetune_takes(tmp_path, capsys):
    """The refusal told finetune (and evaluate, compare, run) to pass --mapping, an option only terms build had;
    then that they take no mapping. Now each takes --mapping (tests/test_mapping_commands.py), and it says so."""
    rows = [
        {"id": f"q{i}", "question": f"Q{i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": i}
        for i in (1, 2, 3)
    ]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _error(capsys, ["finetune", "--base", str(tmp_path / "b"), "--data", str(data), "--out", str(tmp_path / "o")])
    assert f"{data}: field 'cop' holds only 1, 2, 3" in err and "(CLI: --mapping" not in err
    assert "--mapping '{\"cop_base\": 0}' (or 1) on the command line (terms build, finetune, evaluate" in err


def test_an_adapter_with_a_damaged_tokenizer_given_as_tuned_is_not_called_a_base(tiny_llama, tmp_path):
    """An adapter folder with its own tokenizer.json (checked against the base's) that does not load was said to
    be 'a PEFT adapter folder, not a base model: give the model it was trained on instead', though it was
    given as tuned; it is the tokenizer's loading error again."""
    import shutil

    from specprobe.core.models import ModelLoadError, ModelPair

    base, adapter = tiny_llama
    shutil.copytree(adapter, tmp_path / "lora")
    (tmp_path / "lora" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"^cannot load a tokenizer from '.*lora': Expecting property name"):
        ModelPair.load(str(base), str(tmp_path / "lora"), device="cpu")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_under_a_data_parallel_launcher_are_refused_before_any_work(
    tmp_path, capsys, monkeypatch, command
):
    """Under torchrun (WORLD_SIZE > 1) every process ran the whole study on one folder, and all but one failed
    on its lock: a confusing failure after the split. It is one line before anything is written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    toml = tmp_path / "exp.toml"
    toml.write_text(f'out = "{out}"\n', encoding="utf-8")
    argv = ["run", str(toml)] if command == "run" else ["demo", "--out", str(out)]
    err = _error(capsys, argv)
    assert f"specprobe {command} runs as one process, not under torchrun or accelerate launch (WORLD_SIZE=2)" in err
    assert "--executor ray" in err and not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--base", "b", "--terms", "t", "--out", "o", "--batch-size", "0"], "--batch-size: must be a"),
        (["finetune", "--rank", "0"], "--rank: must be a positive integer, got 0"),
        (["terms", "build"], "the following arguments are required"),
        (["demo", "--max-steps", "0"], "--max-steps"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_an_argument_argparse_refuses_is_one_line_too(capsys, argv, message):
    """argparse printed its whole usage block (8 to 21 lines) before the one line that says what is wrong."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err and "--help" in err, err


def _compare_models(base: Path, tuned: Path, tmp_path: Path) -> list[str]:
    """`compare` argv for `base` and `tuned` with one term: the mistakes below are in the models."""
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"seizure": ["Neurology"]}))
    return ["compare", "--base", str(base), "--tuned", str(tuned), "--terms", str(terms), "--out", str(tmp_path / "o")]


def _truncated_copy(folder: Path, into: Path, weights: str) -> Path:
    import shutil

    copy = Path(shutil.copytree(folder, into))
    data = (copy / weights).read_bytes()
    (copy / weights).write_bytes(data[: len(data) // 3])  # an interrupted download or copy
    return copy


@pytest.mark.parametrize("which", ["base", "adapter", "adapter without weights"])
def test_a_damaged_model_or_adapter_folder_is_one_line_naming_it(tiny_llama, tmp_path, capsys, which):
    """A truncated weights file was an "internal error: SafetensorError ..." (exit 1) naming no file, and an
    adapter folder without its weights file sent peft to the Hugging Face hub under the folder's name."""
    base, adapter = tiny_llama
    if which == "base":
        base = _truncated_copy(base, tmp_path / "base", "model.safetensors")
        named, says = base, "truncated or damaged"
    elif which == "adapter":
        adapter = _truncated_copy(adapter, tmp_path / "lora", "adapter_model.safetensors")
        named, says = adapter, "truncated or damaged"
    else:
        adapter = _truncated_copy(adapter, tmp_path / "lora", "adapter_model.safetensors")
        (adapter / "adapter_model.safetensors").unlink()
        named, says = adapter, "no adapter_model.safetensors"
    err = _error(capsys, _compare_models(base, adapter, tmp_path))
    assert str(named) in err and says in err, err


def test_a_tuned_model_of_another_width_is_told_as_such(tiny_llama, tmp_path, capsys):
    """The shapes compared were (vocabulary, hidden), the message named the vocabularies only: "different
    output vocabularies (600 vs 600)"."""
    from specprobe.testing.tiny_models import build_tiny_model

    wide = build_tiny_model("llama", tmp_path / "wide", hidden=128)
    capsys.readouterr()  # the build's own progress output
    err = _error(capsys, _compare_models(tiny_llama[0], wide, tmp_path))
    assert "different hidden sizes (64 vs 128)" in err, err


def test_a_name_that_is_no_local_folder_says_so_beside_the_hub_error(monkeypatch, tmp_path):
    """A mistyped local folder name ("nonexist") was tried on the hub, and the one line said only that the hub
    could not be reached: it says there is no such local folder either."""
    import torch
    from transformers import AutoModelForCausalLM

    from specprobe.core.models import ModelLoadError, load_causal_lm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"cannot load model 'nonexist' \(there is no local folder 'nonexist'"):
        load_causal_lm("nonexist", device=torch.device("cpu"), dtype=torch.float32)


def test_json_read_as_csv_is_a_short_line_that_says_so(tmp_path, capsys):
    """--format csv on JSON lines put the whole first record into the error as its "columns" (17 kB)."""
    rows = json.loads(_questions().read_text())[:3]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _error(capsys, ["terms", "build", str(data), "--out", str(tmp_path / "lex.json"), "--format", "csv"])
    assert len(err) < 600 and "looks like JSON, not CSV" in err and "columns)" in err, err


def test_an_incomplete_adapter_config_names_its_missing_keys(tiny_llama, tmp_path, capsys):
    """{"peft_type": "LORA"} alone failed on tensor shapes, the message saying the adapter was "made for None"."""
    import shutil

    adapter = Path(shutil.copytree(tiny_llama[1], tmp_path / "lora"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    err = _error(capsys, _compare_models(tiny_llama[0], adapter, tmp_path))
    assert "adapter_config.json: lacks 'r', 'target_modules'" in err, err
