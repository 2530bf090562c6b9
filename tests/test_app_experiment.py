"""The experiment runner: every stage runs once, reruns skip, a changed option reruns only its dependants."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from specprobe.app.experiment import (
    SPLIT_CODE,
    ConfigError,
    ExperimentConfig,
    check_specialties,
    interleave_by_specialty,
    probe_texts,
    run_experiment,
    split_key,
    split_records,
    split_stage,
)
from specprobe.app.experiment_stages import write_smedqa
from specprobe.app.stages import stage_folder
from specprobe.terms.datasets import QARecord, load_qa


def _config(base, out, **kw) -> ExperimentConfig:
    return ExperimentConfig(
        base=str(base),
        out=str(out),
        specialties=["Cardiology", "Neurology"],
        include_all=False,
        train={"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "rank": 2, "max_length": 128},
        max_texts=8,
        **{"analyses": ["seen_unseen", "accuracy_link"], **kw},  # general_text: tests/test_app_analyses.py
    )


@pytest.mark.slow
def test_stages_are_cached_and_invalidated_precisely(tiny_llama, tmp_path, monkeypatch):
    base, _ = tiny_llama
    log1: list[str] = []
    res = run_experiment(_config(base, tmp_path / "exp"), progress=False, say=log1.append)
    ran = [line.split()[2] for line in log1 if line.startswith("[run ]")]
    assert len(ran) == 12, ran  # split, lexicon, 2 adapters, accuracy, 2 compares, 2 layers, and the analyses:
    assert {"seen-unseen-cardiology", "seen-unseen-neurology", "accuracy_link"} <= set(ran)  # 2 + 1
    assert not any(name.startswith("trajectory") for name in ran), "no trajectory without train.save_steps"
    assert set(res.comparisons) == {"Cardiology", "Neurology"}
    assert {"Cardiology", "Neurology"} <= set(res.compare_matrix["finetune_specialty"])
    assert (tmp_path / "exp" / "compare_matrix.csv").exists()

    log2: list[str] = []
    run_experiment(_config(base, tmp_path / "exp"), progress=False, say=log2.append)
    assert all(not line.startswith("[run ]") for line in log2)

    from specprobe.probe import ModelPair

    loads: list[tuple] = []
    original_load = ModelPair.load
    monkeypatch.setattr(ModelPair, "load", classmethod(lambda cls, *a, **k: loads.append(a) or original_load(*a, **k)))  # pyright: ignore[reportCallIssue]
    log3: list[str] = []
    cfg = _config(base, tmp_path / "exp")
    cfg.compare = {"batch_size": 2}
    run_experiment(cfg, progress=False, say=log3.append)
    reran = [line.split()[2] for line in log3 if line.startswith("[run ]")]
    assert reran[:4] == ["compare-cardiology", "compare-neurology", "layers-cardiology", "layers-neurology"]
    analyses = ["seen-unseen-cardiology", "seen-unseen-neurology"]
    assert reran[4:] == [*analyses, "accuracy_link"], "the analyses of the compare results"
    assert len(loads) == 1, "4 probe stages over 2 adapters load the base once"

    # options that change no trained weight: gradient checkpointing and checkpoint cadence rerun nothing;
    # a tracker retrains (its logs are the adapter stage's files) and the same weights rerun nothing after
    log4: list[str] = []
    cfg.train = {**cfg.train, "gradient_checkpointing": True, "save_every": 1, "keep_checkpoints": 2}
    run_experiment(cfg, progress=False, say=log4.append)
    assert [line for line in log4 if line.startswith("[run ]")] == []
    log5: list[str] = []
    cfg.train = {**cfg.train, "report_to": "tensorboard"}
    run_experiment(cfg, progress=False, say=log5.append)
    assert [line.split()[2] for line in log5 if line.startswith("[run ]")] == [
        "adapter-cardiology",
        "adapter-neurology",
    ]

    from specprobe.app.experiment import ExperimentResult

    reopened = ExperimentResult.load(tmp_path / "exp" / "experiment.json")  # from files alone
    assert isinstance(reopened, ExperimentResult)
    assert set(reopened.layer_views) == {"Cardiology", "Neurology"}
    html = reopened.report(tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Fine-tuning specialty × term specialty" in html and "Is the own specialty best?" in html
    assert "Layer curves (logit lens)" in html

    from specprobe.app.report import accuracy_frame

    acc = accuracy_frame(reopened.accuracy)  # per test specialty: the pooled "ALL" row is not a column of the heatmap
    assert "ALL" not in set(acc["test_specialty"]) and {"Cardiology", "Neurology"} <= set(acc["test_specialty"])
    assert set(acc["train_specialty"]) == {"base", "Cardiology", "Neurology"}


def test_stage_keys_hold_the_train_options_that_change_their_output(tmp_path):
    """The compare, layers, accuracy and trajectory keys held the whole [train] table, so turning on a
    tracker (report_to) reran them; gradient checkpointing retrained. Now the adapter stage keys on what
    changes its weights or its files (report_to's logs, save_steps' snapshots), and the stages after it
    on what changes the weights (the adapter's content is in their keys too)."""
    from specprobe.app.experiment_stages import ProbeInputs, accuracy_key, adapter_key

    (data := tmp_path / "train.json").write_text("[]")
    (lexicon := tmp_path / "lexicon.json").write_text('{"meta": {}}')
    (adapter := tmp_path / "adapter").mkdir()
    plain = {"max_steps": 2, "rank": 2}

    def keys(**extra) -> tuple:
        train = {**plain, **extra}
        probe = ProbeInputs("base", "b", train, data, None, {}, 0).key(adapter, lexicon, [])
        accuracy = accuracy_key("b", split_key("d", 0.2, 0), {"x": str(adapter)}, train, data)
        return adapter_key("b", split_key("d", 0.2, 0), data, "Cardiology", train), accuracy, probe

    adapter0, *after0 = keys()
    for mechanics in ({"gradient_checkpointing": True}, {"save_every": 1, "keep_checkpoints": 3}):
        assert keys(**mechanics) == (adapter0, *after0)
    for files in ({"report_to": "tensorboard"}, {"save_steps": [1]}):
        adapter1, *after1 = keys(**files)
        assert adapter1 != adapter0 and after1 == after0
    assert all(a != b for a, b in zip(keys(rank=4), (adapter0, *after0)))


def test_unknown_specialty_lists_available(tiny_llama, tmp_path):
    base, _ = tiny_llama
    cfg = _config(base, tmp_path / "exp")
    cfg.specialties = ["Astrology"]
    with pytest.raises(ValueError, match="Astrology.*available.*Cardiology"):
        run_experiment(cfg, progress=False, say=lambda s: None)


def test_split_is_deterministic_per_specialty_and_interleaving_covers_all():
    recs = [QARecord(f"{s}{i}", f"q {s}{i}", ("a", "b"), "a", (s,)) for s in "XYZ" for i in range(10)]
    train, test = split_records(recs, 0.3, seed=0)
    assert len(test) == 9 and len(train) == 21 and not {r.id for r in train} & {r.id for r in test}
    assert [r.id for r in split_records(recs, 0.3, seed=0)[1]] == [r.id for r in test]
    assert [r.id for r in split_records(recs, 0.3, seed=1)[1]] != [r.id for r in test]
    assert [r.specialties[0] for r in interleave_by_specialty(test)[:3]] == ["X", "Y", "Z"]


def test_a_question_listed_twice_is_on_one_side_of_the_split(tmp_path):
    """Rows with one text (a duplicate under another id, or the question once per specialty) are one
    question: never in train for one specialty and in test for another, and scored once."""
    recs = [QARecord(f"q{i}", f"question {i}?", ("a", "b"), "a", ("X",)) for i in range(30)]
    recs += [QARecord(f"q{i}-copy", f"question {i}?", ("a", "b"), "a", ("X",)) for i in range(0, 30, 3)]
    recs += [QARecord(f"q{i}", f"question {i}?", ("a", "b"), "a", ("Y",)) for i in range(0, 30, 2)]
    recs += [QARecord(f"y{i}", f"other {i}?", ("a", "b"), "a", ("Y",)) for i in range(20)]
    for seed in range(5):
        train, test = split_records(recs, 0.3, seed)
        texts = [r.context_text() for r in train + test]
        assert len(texts) == len(set(texts)) == 50, "each question once"
        assert {r.context_text() for r in train}.isdisjoint(r.context_text() for r in test)
        assert {r.specialties for r in train + test if r.id in {"q0", "q2"}} == {("X", "Y")}
    data = tmp_path / "data.json"
    write_smedqa(data, recs)
    log: list[str] = []
    folder = split_stage(tmp_path, str(data), "d", 0.3, 0, say=log.append)
    assert any("25 row(s)" in line and "repeat an earlier question" in line for line in log), log
    texts = probe_texts(folder / "test.json", None)  # compare refused a repeated text id
    assert len({t.id for t in texts}) == len(texts)


def test_specialty_errors_come_before_the_base_is_hashed_and_a_text_cap_is_said(tmp_path, monkeypatch):
    """A wrong specialty is told from the data alone (the base's digest can take minutes); max_texts
    leaving test questions out of the probe stages is said, with which ones it keeps."""
    import specprobe.app.experiment as experiment

    def no_base(*args, **kwargs):
        raise AssertionError("the base was hashed before the specialties were checked")

    monkeypatch.setattr(experiment, "base_identity", no_base)
    cfg = ExperimentConfig(out=str(tmp_path), specialties=["Astrology"]).resolved()
    with pytest.raises(ValueError, match="Astrology.*training split.*available"):
        experiment.prepare_run(cfg, tmp_path, say=lambda s: None)
    with pytest.raises(ValueError, match="specialties: 'Cardiology' and 'cardiology' would share"):
        experiment.adapter_targets(["Cardiology", "cardiology"], include_all=False)
    monkeypatch.setattr(experiment, "base_identity", lambda *a, **k: "sha256:x")
    log: list[str] = []
    cfg = ExperimentConfig(out=str(tmp_path), specialties=["Cardiology"], max_texts=5).resolved()
    experiment.prepare_run(cfg, tmp_path, say=log.append)
    # 212: the demo's 9 groups of questions differing only in the patient's age each go to one side
    assert any(line.startswith("[note] max_texts = 5:") and "5 of the 212 test questions" in line for line in log)


def test_a_data_path_that_is_no_file_names_the_key(tmp_path):
    """A mistyped data path said only "[Errno 2] No such file or directory: '...'", naming no key."""
    import specprobe.app.experiment as experiment

    for data, problem in ((tmp_path / "S-MedQA_valdation.json", "no such file"), (tmp_path, "a folder")):
        cfg = ExperimentConfig(out=str(tmp_path / "out"), data=str(data)).resolved()
        with pytest.raises(ConfigError, match=f"^data: .*: {problem}"):
            experiment.prepare_run(cfg, tmp_path, say=lambda s: None)


def test_toml_config_rejects_unknown_keys(tmp_path):
    p = tmp_path / "e.toml"
    p.write_text('out = "x"\nspecialites = ["Cardiology"]\n')
    with pytest.raises(ValueError, match="specialites"):
        ExperimentConfig.from_toml(p)
    p.write_text('out = "x"\nspecialties = ["Cardiology"]\n[train]\nmax_steps = 3\n')
    assert ExperimentConfig.from_toml(p).train == {"max_steps": 3}


def test_a_stage_runs_alone_from_its_declared_inputs(tmp_path):
    """A stage is a plain function of its inputs and returns its output path (so it can run as its own task)."""
    from specprobe.app.config import builtin_questions
    from specprobe.utils.io import sha256_file

    data = str(builtin_questions())
    data_hash = sha256_file(data)
    log: list[str] = []
    folder = split_stage(tmp_path, data, data_hash, 0.3, 0, say=log.append)
    assert folder == stage_folder(tmp_path, "split", split_key(data_hash, 0.3, 0), SPLIT_CODE)
    assert split_stage(tmp_path, data, data_hash, 0.3, 0, say=log.append) == folder
    assert [line.split()[0] for line in log] == ["[run", "[note]", "[done]", "[skip]"]
    assert log[1].startswith("[note] split: 9 group(s) of near-duplicate questions"), log  # demo ages differ
    specialties = check_specialties(folder / "train.json", None, data)
    texts = probe_texts(folder / "test.json", len(specialties))
    assert len(texts) == len(specialties)
    with pytest.raises(ValueError, match="Astrology.*available"):
        check_specialties(folder / "train.json", ["Astrology"], data)


def test_a_result_files_identity_follows_its_numbers_not_its_time_stamps(tmp_path):
    """`stage_of`: what a later stage's key holds of a file it reads: the writing stage's folder and the
    numbers, so a recomputation with other numbers reruns the readers, and a new time stamp does not."""
    import pandas as pd

    from specprobe.app.experiment_stages import stage_of
    from specprobe.core.results import Result

    frame = pd.DataFrame({"term": ["angina", "stroke"], "delta": [0.25, float("nan")]})
    first = Result(frame, {"created": "2026-01-01T00:00:00"}, {"n": 2}).save(tmp_path / "compare-a-1" / "r.json.gz")
    identity = stage_of(first)
    assert identity.startswith("compare-a-1:")
    Result(frame, {"created": "2026-06-01T00:00:00", "seconds": 9}, {"n": 2}).save(first)
    assert stage_of(first) == identity, "only the metadata changed"
    Result(frame.assign(delta=[0.25000001, float("nan")]), {}, {"n": 2}).save(first)
    assert stage_of(first) != identity, "a number changed"
    Result(frame, {}, {"n": 3}).save(first)
    assert stage_of(first) != identity, "the extras changed"
    moved = Result(frame, {}, {"n": 2}).save(tmp_path / "compare-a-2" / "r.json.gz")
    assert stage_of(moved) != identity, "another stage folder"


def _id_less_rows(n: int) -> list[dict]:
    """S-MedQA rows without ids (as the release has them), in two specialties."""
    return [
        {"Question": f"Question {i}?", "Specialty": "XY"[i % 2], "Options": ["a", "b"], "Answer": "a"} for i in range(n)
    ]


def test_the_split_of_data_without_ids_depends_on_its_content_not_its_file_name(tmp_path):
    """Questions without ids are numbered "<file stem>:<row>"; the split hashed that id, so the same data
    saved as a.json and b.json shared about a third of its test questions. It hashes their normalised text
    now: the same test questions under any name, and a row differing only in case or spacing goes with it.
    Ids the data gives are still what the split hashes."""
    import json

    rows = _id_less_rows(60)
    tests = []
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(rows), encoding="utf-8")
        tests.append({r.question for r in split_records(load_qa(tmp_path / name), 0.3, seed=0)[1]})
    assert len(tests[0]) == 18 and tests[0] == tests[1]
    shouted = [dict(r, Question=f"  {r['Question'].upper()} ") for r in rows]
    (tmp_path / "c.json").write_text(json.dumps(shouted), encoding="utf-8")
    assert {r.question.strip().lower() for r in split_records(load_qa(tmp_path / "c.json"), 0.3, 0)[1]} == {
        q.lower() for q in tests[0]
    }
    with_ids = [dict(r, id=f"id{i}") for i, r in enumerate(rows)]
    (tmp_path / "d.json").write_text(json.dumps(with_ids), encoding="utf-8")
    given = load_qa(tmp_path / "d.json")
    by_id = {r.id for r in split_records(given, 0.3, 0)[1]}
    assert by_id == {r.id for r in split_records([replace(r, question=f"Other {r.id}?") for r in given], 0.3, 0)[1]}


def test_the_split_is_recomputed_when_its_code_changes():
    """The split stage's key includes the code of the split (`SPLIT_CODE`): an experiment folder split by
    the earlier rule is split again, and its adapters, keyed on the training file's content, are retrained
    rather than mixed with the new test questions."""
    import inspect
    from pathlib import Path

    import specprobe
    from specprobe.terms.records import split_identity

    package = Path(specprobe.__file__).parent
    for fn in (split_records, split_identity):
        source = Path(inspect.getsourcefile(fn) or "").relative_to(package).as_posix()
        assert any(source == part or source.startswith(part + "/") for part in SPLIT_CODE), source


def test_a_question_listed_with_two_answers_is_an_error(tmp_path):
    """Rows of one question (merged into one by the split) with different answers: before, the first
    row's answer was kept silently; a question has one gold answer, so it is an error naming both."""
    import json

    from specprobe.terms.datasets import DataError

    rows = _id_less_rows(10)
    rows.append(dict(rows[3], Specialty="Y", Answer="b"))
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    message = f"{data}: rows 'qa:3' and 'qa:10' give the question 'Question 3?' different answers, 'a' and 'b'"
    with pytest.raises(DataError, match=re.escape(message)):
        split_stage(tmp_path, str(data), "d", 0.3, 0, say=lambda s: None)
    rows[-1]["Answer"] = "a"  # the same answer: merged, as before
    data.write_text(json.dumps(rows), encoding="utf-8")
    train, test = split_records(load_qa(data), 0.3, 0)
    assert len(train) + len(test) == 10
