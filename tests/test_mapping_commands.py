"""--mapping (a QA file's columns, or MedMCQA's cop_base) for every command that reads a QA file, not only
`terms build`: finetune, evaluate, compare and run could not read a MedMCQA file whose cop numbers (1..3)
cannot tell their base, and the refusal said they "take no mapping". With a mapping each reads it, records it
beside the file's sha256 (manifest, run identity, result metadata, split key), and without one each refuses
with the one-line error naming the file and --mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specprobe.app.cli import main
from specprobe.terms.datasets import load_qa
from specprobe.utils.io import sha256_file
from tests.test_cli_mistakes import _error

COP0 = json.dumps({"cop_base": 0})
COP1 = json.dumps({"cop_base": 1})
SUBJECTS = ("Cardiology", "Neurology")
QUESTIONS = (
    "A man with crushing chest pain and angina at rest needs which drug first?",
    "Which drug stops a prolonged seizure in a child at home?",
    "After a myocardial infarction, which medicine lowers the risk of another?",
    "A woman with migraine and aura should avoid which treatment?",
    "Stable angina on exertion in a smoker is best treated with what?",
    "Sudden weakness of one arm and slurred speech suggest what, treated how?",
    "Atrial fibrillation with a fast ventricular rate calls for which agent?",
    "A tremor at rest with rigidity in an old man responds to which medicine?",
)


def _medmcqa(folder: Path) -> Path:
    """A MedMCQA JSON Lines file whose cop holds only 1..3: its base cannot be told without a mapping."""
    rows = [
        {
            "id": f"q{i}",
            "question": QUESTIONS[i],
            "opa": "aspirin",
            "opb": "metoprolol",
            "opc": "nitroglycerin",
            "opd": "heparin",
            "cop": 1 + i % 3,
            "subject_name": SUBJECTS[i % 2],
        }
        for i in range(8)
    ]
    path = folder / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _refused_for_cop(err: str, data: Path) -> None:
    assert f"{data}: field 'cop' holds only 1, 2, 3" in err, err
    assert "--mapping '{\"cop_base\": 0}'" in err and "take no mapping" not in err, err


def test_the_cop_refusal_names_the_commands_that_take_a_mapping(tmp_path):
    data = _medmcqa(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_qa(data)
    said = str(caught.value)
    for command in ("terms build", "finetune", "evaluate", "compare", "`specprobe run` experiment file"):
        assert command in said, said


def test_mapping_argument_is_one_parser_for_every_command():
    """Each command's --mapping is `argtypes.mapping`: bad JSON or a non-object is an argparse error."""
    import argparse

    from specprobe.app.cli import build_parser
    from specprobe.utils import argtypes

    parser = build_parser()
    for argv in (
        ["terms", "build", "d", "--out", "o"],
        ["finetune", "--base", "b", "--data", "d", "--out", "o"],
        ["evaluate", "--data", "d", "--out", "o.json"],
        ["compare", "--base", "b", "--tuned", "t", "--terms", "x", "--out", "o"],
        ["layers", "--base", "b", "--tuned", "t", "--terms", "x", "--out", "o"],
        ["analyze", "seen-unseen", "--comparison", "c", "--adapter", "a", "--out", "o"],
        ["analyze", "trajectory", "--base", "b", "--adapter", "a", "--terms", "x", "--out", "o"],
        ["run", "x.toml"],
        ["demo", "--data", "d"],
    ):
        assert parser.parse_args([*argv, "--mapping", COP0]).mapping == {"cop_base": 0}, argv
        assert parser.parse_args(argv).mapping is None, argv
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be a JSON object such as"):
        argtypes.mapping("[1]")
    with pytest.raises(argparse.ArgumentTypeError, match=r"not valid JSON"):
        argtypes.mapping("{cop_base: 0}")


def test_terms_build_refuses_a_mapping_that_is_no_json_object(tmp_path, capsys):
    """Checked when the arguments are parsed (argparse's usage and error, exit 2), before any work."""
    with pytest.raises(SystemExit) as stop:
        main(["terms", "build", str(_medmcqa(tmp_path)), "--out", str(tmp_path / "l.json"), "--mapping", "[1]"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --mapping: must be a JSON object such as" in err, err
    assert not (tmp_path / "l.json").exists()


def test_finetune_reads_a_file_with_its_mapping_and_records_it(tiny_llama, tmp_path, capsys):
    """finetune --mapping: the manifest's data and the run identity record the mapping next to the sha256;
    a rerun with another mapping into the same folder is another run (refused, not resumed or reused);
    the probe's reader of the training data reads the file again with the recorded mapping."""
    from specprobe.probe.training_data import training_data, training_texts

    data = _medmcqa(tmp_path)
    out = tmp_path / "lora"
    argv = ["finetune", "--base", str(tiny_llama[0]), "--data", str(data), "--out", str(out)]
    argv += ["--max-steps", "1", "--batch-size", "2", "--no-progress"]
    _refused_for_cop(_error(capsys, argv), data)
    assert not out.exists()
    assert main([*argv, "--mapping", COP0]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["mapping"] == {"cop_base": 0} and manifest["data"]["sha256"] == sha256_file(data)
    assert manifest["identity"]["data_mapping"] == {"cop_base": 0}
    err = _error(capsys, [*argv, "--mapping", COP1])  # same file and sha256, other answers
    assert "data_mapping" in err, err
    train = training_data(out)  # from the manifest's path, with its mapping
    assert train.source["mapping"] == {"cop_base": 0} and train.source["n_selected"] == 8
    answers = {r.id: r.answer for r in load_qa(data, mapping={"cop_base": 0})}
    assert train.records and all(r.answer == answers[r.id] for r in train.records)  # the step's 2 questions
    assert training_texts(str(out)) is not None  # compare's texts_in_training_data
    with pytest.raises(ValueError, match=r"is not the one .* records for its training data"):
        training_data(out, data, mapping={"cop_base": 1})
    assert not (tiny_llama[1] / "manifest.json").exists()  # an adapter without one: --train-data, --mapping
    with pytest.raises(ValueError, match=r"field 'cop' holds only 1, 2, 3"):
        training_data(tiny_llama[1], data)
    assert training_data(tiny_llama[1], data, mapping={"cop_base": 0}).source["mapping"] == {"cop_base": 0}


def test_run_identity_without_a_mapping_is_unchanged():
    """A run without a mapping keeps the identity (and so the hash) it had before the mapping was recorded."""
    from specprobe.finetune.run_identity import run_identity
    from specprobe.finetune.train_options import TrainOptions

    def identity(**mapping: dict | None) -> dict:
        return run_identity(
            base="b",
            revision=None,
            base_id={"base_weights_sha256": "w"},
            data_sha256="d",
            specialty=None,
            n_examples=3,
            opts=TrainOptions(),
            precision="fp32",
            world_size=1,
            **mapping,
        )

    assert "data_mapping" not in identity()
    assert identity(data_mapping=None) == identity()
    assert identity(data_mapping={"cop_base": 0})["data_mapping"] == {"cop_base": 0}


def test_evaluate_reads_a_file_with_its_mapping(tiny_llama, tmp_path, capsys):
    """evaluate --mapping (one adapter, --lm-eval-out, --from-lm-eval, --matrix): the result's data
    metadata records the mapping, and the lm-eval samples are written from the file read with it."""
    data = _medmcqa(tmp_path)
    base, adapter = tiny_llama
    argv = ["evaluate", "--model", str(base), "--adapter", str(adapter), "--data", str(data), "--no-progress"]
    _refused_for_cop(_error(capsys, [*argv, "--out", str(tmp_path / "e0.json")]), data)
    lm = tmp_path / "lm"
    out = tmp_path / "e.json"
    assert main([*argv, "--out", str(out), "--mapping", COP0, "--lm-eval-out", str(lm)]) == 0, capsys.readouterr()
    meta = json.loads(out.read_text())["metadata"]
    assert meta["data"]["mapping"] == {"cop_base": 0}
    samples = sorted(lm.glob("*/samples_*.jsonl"))
    assert len(samples) == 2
    docs = [json.loads(line)["doc"] for line in samples[0].read_text().splitlines()]
    assert [d["answer"] for d in docs] == [r.answer for r in load_qa(data, mapping={"cop_base": 0})]
    from_lm = ["evaluate", "--from-lm-eval", f"tuned={samples[-1]}", "--data", str(data)]
    _refused_for_cop(_error(capsys, [*from_lm, "--out", str(tmp_path / "f0.json")]), data)
    assert main([*from_lm, "--out", str(tmp_path / "f.json"), "--mapping", COP0]) == 0, capsys.readouterr()
    matrix = ["evaluate", "--matrix", "--model", str(base), "--adapter", str(adapter), "--data", str(data)]
    matrix += ["--no-progress"]
    _refused_for_cop(_error(capsys, [*matrix, "--out", str(tmp_path / "m0.json")]), data)
    assert main([*matrix, "--out", str(tmp_path / "m.json"), "--mapping", COP0]) == 0, capsys.readouterr()
    assert json.loads((tmp_path / "m.json").read_text())["metadata"]["data"]["mapping"] == {"cop_base": 0}


def test_load_records_refuses_a_mapping_for_records_and_records_a_given_one(tmp_path):
    from specprobe.finetune.data import load_records

    data = _medmcqa(tmp_path)
    records, meta = load_records(data, {"cop_base": 1})
    assert meta["mapping"] == {"cop_base": 1} and meta["sha256"] == sha256_file(data)
    assert "mapping" not in load_records(records)[1]
    with pytest.raises(ValueError, match="the data given are records, already read"):
        load_records(records, {"cop_base": 1})


def test_compare_reads_its_data_with_a_mapping(tiny_llama, tmp_path, capsys):
    data = _medmcqa(tmp_path)
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"chest pain": ["Cardiology"], "angina": ["Cardiology"]}))
    base, adapter = tiny_llama
    argv = ["compare", "--base", str(base), "--tuned", str(adapter), "--terms", str(terms), "--no-progress"]
    argv += ["--controls", "none"]
    _refused_for_cop(_error(capsys, [*argv, "--data", str(data), "--out", str(tmp_path / "c0")]), data)
    err = _error(capsys, [*argv, "--mapping", COP0, "--out", str(tmp_path / "c1")])
    assert "--mapping says how to read --data" in err
    assert main([*argv, "--data", str(data), "--mapping", COP0, "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "comparison.json.gz").is_file()


# -- specprobe run ------------------------------------------------------------------------------------------
def _prepare_only(monkeypatch) -> dict:
    """`specprobe run` stops after `prepare_run` (the split, the adapters to train): what it prepared."""
    import specprobe.app.demo_cli as demo_cli
    import specprobe.app.experiment as experiment

    seen: dict = {}

    def fake_run(config, **_):
        cfg = config.resolved()
        seen["run"] = experiment.prepare_run(cfg, Path(cfg.out).resolve(), say=lambda _: None)

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    monkeypatch.setattr(demo_cli, "_finish", lambda result, started: 0)
    return seen


def test_run_reads_the_data_with_the_config_mapping(tmp_path, capsys, monkeypatch):
    """A `mapping` table in the experiment file (or --mapping) reads the data; the split's files are S-MedQA
    JSON that the later stages read without one; the split key holds the mapping with the file's sha256."""
    from specprobe.app.experiment_stages import data_identity, split_key

    seen = _prepare_only(monkeypatch)
    data = _medmcqa(tmp_path)
    toml = tmp_path / "exp.toml"
    toml.write_text(f'data = "{data}"\nout = "{tmp_path / "out"}"\n')
    _refused_for_cop(_error(capsys, ["run", str(toml)]), data)
    assert not seen
    toml.write_text(toml.read_text() + "mapping = {cop_base = 0}\n")
    assert main(["run", str(toml)]) == 0, capsys.readouterr().err
    run = seen.pop("run")
    sha = sha256_file(data)
    assert run.split == split_key(data_identity(sha, {"cop_base": 0}), 0.3, 0)
    assert run.split["data"] not in (sha, data_identity(sha, {"cop_base": 1}))
    split = load_qa(run.train_path) + load_qa(run.test_path)  # no mapping needed: specprobe's own format
    expected = {r.id: r.answer for r in load_qa(data, mapping={"cop_base": 0})}
    assert {r.id: r.answer for r in split} == expected
    assert main(["run", str(toml), "--mapping", COP1]) == 0, capsys.readouterr().err  # the flag replaces the key
    assert seen["run"].split["data"] == data_identity(sha, {"cop_base": 1})
    answers = {r.id: r.answer for r in load_qa(seen["run"].train_path) + load_qa(seen["run"].test_path)}
    assert answers == {r.id: r.answer for r in load_qa(data, mapping={"cop_base": 1})} != expected


def test_demo_reads_its_data_with_a_mapping(tmp_path, capsys, monkeypatch):
    """`specprobe demo --data F --mapping M` reads F with M (demo had no --mapping); a mapping without --data
    (the built-in questions) is one error line."""
    seen = _prepare_only(monkeypatch)
    data = _medmcqa(tmp_path)
    out = str(tmp_path / "out")
    _refused_for_cop(_error(capsys, ["demo", "--data", str(data), "--out", out]), data)
    assert main(["demo", "--data", str(data), "--out", out, "--mapping", COP0]) == 0, capsys.readouterr().err
    answers = {r.id: r.answer for r in load_qa(seen["run"].train_path) + load_qa(seen["run"].test_path)}
    assert answers == {r.id: r.answer for r in load_qa(data, mapping={"cop_base": 0})}
    err = _error(capsys, ["demo", "--out", out, "--mapping", COP0])
    assert err.endswith("--mapping says how to read --data; give --data, or leave --mapping out"), err


def test_a_run_without_a_mapping_keeps_its_split_key(tmp_path, capsys, monkeypatch):
    """The split key of a run without a mapping is what it was before mappings: the data file's sha256."""
    from specprobe.app.config import builtin_questions

    seen = _prepare_only(monkeypatch)
    toml = tmp_path / "exp.toml"
    toml.write_text(f'out = "{tmp_path / "out"}"\n')
    assert main(["run", str(toml)]) == 0, capsys.readouterr().err
    before = {"data": sha256_file(builtin_questions()), "test_fraction": 0.3, "seed": 0}  # the key's old form
    assert seen["run"].split == before


def test_the_config_mapping_must_be_a_table(tmp_path):
    from specprobe.app.config import ConfigError, ExperimentConfig

    toml = tmp_path / "exp.toml"
    toml.write_text('mapping = "cop_base=0"\n')
    with pytest.raises(ConfigError, match=r"exp.toml: mapping: must be a table"):
        ExperimentConfig.from_toml(toml)
    assert ExperimentConfig(mapping={"cop_base": 1}).recorded()["mapping"] == {"cop_base": 1}


def test_run_refuses_a_mapping_without_data(tmp_path, capsys, monkeypatch):
    """A config (or run --mapping) with a mapping but no data read the built-in questions with it: a column
    mapping failed naming the built-in file the user never gave ("questions.json: item 0: missing field 'q'"),
    and cop_base alone re-split the same questions under a new key. Refused as `demo` refuses it."""
    seen = _prepare_only(monkeypatch)
    toml = tmp_path / "exp.toml"
    toml.write_text(f'out = "{tmp_path / "out"}"\nmapping = {{question = "q", options = ["a", "b"], answer = "x"}}\n')
    for argv in (["run", str(toml)], ["run", str(toml), "--mapping", COP0]):
        err = _error(capsys, argv)
        assert "mapping: says how to read data, but no data is given" in err and "questions.json" not in err, err
    assert not seen
