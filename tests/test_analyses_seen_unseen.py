"""seen_unseen: a term planted only in an adapter's training questions lands in "seen" and stands out;
the training data is read from the manifest and checked; the group rule is a partition."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.probe import compare
from specprobe.probe.analyses import SeenUnseen, seen_unseen, seen_unseen_files, seen_unseen_table, training_data
from specprobe.probe.analyses.groups import GROUPS, SEEN, UNSEEN_OTHER, UNSEEN_SAME, assign_groups
from specprobe.terms.datasets import DataError, QARecord

PLANTED = "zorblax"  # occurs in the Cardiology training questions and nowhere in the base's corpus
TERMS = {PLANTED: ["Cardiology"], "digoxin": ["Cardiology"], "seizure": ["Neurology"], "migraine": ["Neurology"]}
CONTROLS = ["patient", "drug"]


def training_questions() -> list[QARecord]:
    """Cardiology questions whose answer is the planted term, plus Neurology questions (filtered out of
    the Cardiology run) that mention "seizure": it must not count as seen."""
    cardio = [
        QARecord(
            f"c{i}",
            f"Which drug helps patient {i} with chest pain?",
            (PLANTED, "aspirin", "rest"),
            PLANTED,
            ("Cardiology",),
        )
        for i in range(8)
    ]
    neuro = [
        QARecord(
            f"n{i}",
            f"Which drug stops a seizure in patient {i}?",
            ("valproate", "rest", "water"),
            "valproate",
            ("Neurology",),
        )
        for i in range(4)
    ]
    return cardio + neuro


def write_qa(path: Path, records: list[QARecord]) -> Path:
    rows = [
        {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
        for r in records
    ]
    path.write_text(json.dumps(rows))
    return path


def probe_texts() -> list[dict]:
    """Held-out texts in the training prompt's shape; each holds one term of every group and the controls."""
    return [
        {
            "id": f"t{i}",
            "text": f"Question: Which drug helps patient {40 + i} with {'a seizure' if i % 2 else 'migraine'} or "
            f"palpitations?\nA. digoxin\nB. {PLANTED}\nC. rest\nAnswer: {PLANTED}",
        }
        for i in range(10)
    ]


@pytest.fixture(scope="module")
def planted(tiny_llama, tmp_path_factory):
    """A Cardiology adapter trained (few steps, high learning rate) on questions answered by the planted
    term, and its Comparison on held-out texts."""
    from specprobe.finetune import train

    base = str(tiny_llama[0])
    root = tmp_path_factory.mktemp("planted")
    data = write_qa(root / "train.json", training_questions())
    run = train(
        base, data, "Cardiology", root / "adapter", max_steps=16, batch_size=4, learning_rate=2e-2,
        warmup_ratio=0.0, continuation="text", progress=False,
    )  # fmt: skip
    comp = compare(base, str(run.path), TERMS, probe_texts(), controls=CONTROLS, progress=False)
    return root, data, run.path, comp


def test_planted_term_is_seen_and_stands_out(planted):
    _, _, adapter, comp = planted
    result = seen_unseen(comp, adapter)
    groups = result.extras["term_groups"]
    assert groups == {PLANTED: SEEN, "digoxin": UNSEEN_SAME, "seizure": UNSEEN_OTHER, "migraine": UNSEEN_OTHER}
    table = result.groups().set_index("group")
    tests = result.tests().set_index("contrast")
    print("\n" + result.summary())
    seen = table.loc[SEEN]
    for other in (UNSEEN_SAME, UNSEEN_OTHER):
        assert seen["ci_low"] > table.loc[other, "ci_high"], f"seen does not stand out from {other}"
        contrast = tests.loc[f"{SEEN} - {other}"]
        # over the texts the one seen word stands out; as words are random too, one seen word against one or
        # two unseen words can give no p below 1/3, and no CI (one word has no spread to resample):
        # nothing is said about seen words in general
        assert contrast["mean_diff"] > 0 and contrast["p_text"] < 0.05
        assert pd.isna(contrast["ci_low"]) and pd.isna(contrast["ci_high"])
        assert contrast["n_words_a"] == 1 and contrast["p_word_min"] >= 1 / 3
        assert contrast["p_value"] == max(contrast["p_text"], contrast["p_word"]) and contrast["p_holm"] >= 1 / 3
        assert contrast["n_pairs"] == len(probe_texts())
    n_cardio = sum(r.specialties == ("Cardiology",) for r in training_questions())
    assert result.extras["train_counts"] == {PLANTED: n_cardio}  # once in each Cardiology question's options
    assert result.metadata["n_training_questions"] == n_cardio


def test_training_data_is_read_from_the_manifest_and_checked(planted, tmp_path):
    root, data, adapter, comp = planted
    train = training_data(adapter)
    cardio = {r.question for r in training_questions() if r.specialties == ("Cardiology",)}
    assert train.specialties == ("Cardiology",) and {r.question for r in train.records} == cardio
    assert train.source["checked"] and train.source["path"] == str(data)
    # the data file changed since training: refused, naming both hashes
    changed = tmp_path / "changed.json"
    write_qa(changed, training_questions()[:-1])
    with pytest.raises(ValueError, match="not the data this adapter was trained on"):
        seen_unseen(comp, adapter, changed)
    # a moved copy of the same file is accepted when named
    moved = shutil.copy(data, tmp_path / "moved.json")
    assert seen_unseen(comp, adapter, moved).extras["term_groups"][PLANTED] == SEEN
    # a manifest naming another specialty than asked
    with pytest.raises(ValueError, match="records training on"):
        training_data(adapter, specialty="Neurology")


def test_adapter_without_manifest_needs_train_data(planted, tiny_llama, tmp_path):
    _, data, adapter, comp = planted
    bare = shutil.copytree(adapter, tmp_path / "bare")
    (Path(bare) / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.*train_data"):
        seen_unseen(comp, bare)
    given_data = seen_unseen(comp, bare, data, specialty="Cardiology")
    assert given_data.metadata["training_data"]["checked"] is False
    assert given_data.trained_on == ["Cardiology"]
    assert given_data.extras["term_groups"] == seen_unseen(comp, adapter).extras["term_groups"]
    # a comparison made with other adapter weights is refused
    other = compare(str(tiny_llama[0]), str(tiny_llama[1]), TERMS, probe_texts()[:2], controls=None, progress=False)
    with pytest.raises(ValueError, match="not this adapter's comparison"):
        seen_unseen(other, adapter)


def test_roundtrip_report_and_files(planted, tmp_path):
    _, _, adapter, comp = planted
    comp_path = comp.save(tmp_path / "comparison.json.gz")
    result = seen_unseen_files(comp_path, adapter, tmp_path / "seen_unseen.json.gz")
    again = SeenUnseen.load(tmp_path / "seen_unseen.json.gz")
    assert isinstance(again, SeenUnseen)
    assert again.to_pandas().equals(result.to_pandas())
    assert again.groups().equals(result.groups()) and again.extras == result.extras
    assert all(isinstance(s, tuple) for s in again.to_pandas()["specialties"])
    html = again.report(tmp_path / "seen_unseen.html").read_text()
    assert "Seen vs unseen" in html and PLANTED in html
    stacked = seen_unseen_table({"cardio": result, "again": again}, "tests")
    assert list(stacked["adapter"].unique()) == ["cardio", "again"]


def test_cli_writes_outputs(planted, tmp_path, monkeypatch, capsys):
    from specprobe.app.cli import main
    from tests.test_analyses_accuracy_link import stop_csv_writing_after_the_header

    _, data, adapter, comp = planted
    comp_path = comp.save(tmp_path / "comparison.json.gz")
    out = tmp_path / "out"
    args = ["analyze", "seen-unseen", "--comparison", str(comp_path), "--adapter", str(adapter), "--out", str(out)]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"seen_unseen.json.gz", "seen_unseen_groups.csv", "seen_unseen_tests.csv"}
    assert main(args) == 2  # existing outputs are kept without --overwrite
    assert main([*args[:-2], "--out", str(tmp_path / "o2"), "--train-data", str(tmp_path / "nope.json")]) == 2
    # a rerun stopped while writing the CSVs keeps the last run's (they were written in place: header only)
    before = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    stop_csv_writing_after_the_header(monkeypatch)
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == before and len(before) == 3


def test_the_specialty_filter_is_trainings_own(tmp_path):
    """The analysis restated finetune's selection; a comma list ('Cardiology,Neurology', which finetune
    takes) selected nothing here, and an unknown specialty said only that no question was selected. Now one
    rule (terms.selection.select): the list selects both, an unknown name lists the available ones."""
    recs = training_questions()
    both = training_data(str(tmp_path), train_data=recs, specialty="Cardiology,Neurology")
    assert {s for r in both.records for s in r.specialties} >= {"Cardiology", "Neurology"}
    with pytest.raises(DataError, match="no questions for specialty 'Cardiologgy'; available: "):
        training_data(str(tmp_path), train_data=recs, specialty="Cardiologgy")


def test_a_run_shorter_than_an_epoch_saw_only_the_questions_its_steps_drew(tiny_llama, tmp_path, caplog):
    """max_steps=2 of 4 questions each over 12 questions: 8 were drawn. A term of only the other 4 was
    counted seen (12 of 12 terms seen, n_training_questions 12); now 8 and 8. compare counts the scored
    texts that were training questions (memorisation, not shift: the README's quickstart scores them), with
    a warning, and says 0 for held-out texts."""
    from specprobe.finetune import train
    from specprobe.finetune.train_examples import group_indices

    recs = [
        QARecord(
            f"c{i}",
            f"Which drug helps patient {i} with marker{i} pain?",
            ("aspirin", "rest"),
            "aspirin",
            ("Cardiology",),
        )
        for i in range(12)
    ]
    data = write_qa(tmp_path / "train.json", recs)
    run = train(str(tiny_llama[0]), data, "Cardiology", tmp_path / "adapter", max_steps=2, batch_size=4, progress=False)
    drawn = {recs[i].id for k in range(2) for i in group_indices(12, 0, 0, k, 4)}
    questions = [r.question for r in recs if r.id in drawn]  # write_qa writes no ids
    assert [r.question for r in training_data(run.path).records] == questions
    terms = {f"marker{i}": ["Cardiology"] for i in range(12)}
    texts = [{"id": f"t{i}", "text": f"A patient with marker{i} pain"} for i in range(12)]
    comp = compare(str(tiny_llama[0]), str(run.path), terms, texts, controls=None, progress=False)
    assert comp.metadata["texts_in_training_data"] == 0
    with caplog.at_level("WARNING", logger="specprobe.probe.compare"):
        on_training = compare(
            str(tiny_llama[0]), str(run.path), terms, [r.as_text_record() for r in recs], controls=None, progress=False
        )
    assert on_training.metadata["texts_in_training_data"] == 8
    assert "8 of 12 texts are questions the adapter was trained on" in caplog.text
    result = seen_unseen(comp, run.path)
    seen = {t for t, g in result.extras["term_groups"].items() if g == SEEN}
    assert seen == {f"marker{r.id[1:]}" for r in recs if r.id in drawn} and len(seen) == 8
    assert result.metadata["n_training_questions"] == 8
    manifest = json.loads((run.path / "manifest.json").read_text())
    with pytest.raises(ValueError, match="'steps_per_epoch' is 9"):
        training_data({**manifest, "steps_per_epoch": 9})


SPECS = st.lists(st.sampled_from(["A", "B", "C", "d"]), max_size=3, unique=True)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.dictionaries(st.text("abcxyz", min_size=1, max_size=6), SPECS, max_size=12),
    st.dictionaries(st.text("abcxyz", min_size=1, max_size=6), st.integers(0, 3), max_size=12),
    st.one_of(st.none(), st.lists(st.sampled_from(["a", "B", "c"]), min_size=1, max_size=2, unique=True)),
)
def test_groups_partition_the_terms(term_specs, counts, trained):
    groups = assign_groups(term_specs, counts, trained)
    assert set(groups) == set(term_specs) and set(groups.values()) <= set(GROUPS)
    for term, group in groups.items():
        in_training = counts.get(term, 0) > 0
        same = bool(term_specs[term]) and (
            trained is None or bool({s.lower() for s in term_specs[term]} & {t.lower() for t in trained})
        )
        assert (group == SEEN) == in_training
        assert (group == UNSEEN_SAME) == (not in_training and same)
        assert (group == UNSEEN_OTHER) == (not in_training and not same)


def test_manifest_dict_of_an_all_specialties_run(tmp_path):
    """A run on every specialty: all its questions are training questions, and every unseen term with a
    specialty is 'same'; a wrong count in the manifest is refused."""
    from specprobe.utils.io import sha256_file

    data = write_qa(tmp_path / "train.json", training_questions())
    manifest = {
        "data": {"path": str(data), "sha256": sha256_file(data)},
        "specialty": None,
        "filter": {"n_examples": 12},
    }
    train = training_data(manifest)
    assert train.specialties is None and len(train.records) == len(training_questions())
    groups = assign_groups({"seizure": ["Neurology"], "digoxin": ["Cardiology"], "x": []}, {"seizure": 1}, None)
    assert groups == {"seizure": SEEN, "digoxin": UNSEEN_SAME, "x": UNSEEN_OTHER}
    with pytest.raises(ValueError, match="filter.n_examples"):
        training_data({**manifest, "filter": {"n_examples": 3}})
    with pytest.raises(ValueError, match="'data' is missing"):
        training_data({"specialty": None})


def test_summaries_without_control_words():
    rows = [
        {"text_id": f"t{i}", "term": term, "specialties": ("A",), "is_control": False, "group": group,
         "train_count": int(group == SEEN), "n_tokens": 1, "delta": v, "delta_per_token": v}
        for i in range(4)
        for term, group, v in (("s", SEEN, 1.0 + i), ("u", UNSEEN_SAME, 0.5 * i))
    ]  # fmt: skip
    result = SeenUnseen(pd.DataFrame(rows, columns=SeenUnseen.columns), {}, {"adapter": "A", "trained_on": ["A"]})
    groups = result.groups().set_index("group")
    assert groups.loc["control", "n"] == 0 and groups.loc[UNSEEN_OTHER, "n"] == 0
    tests = result.tests().set_index("contrast")
    assert tests.loc[f"{SEEN} - {UNSEEN_SAME}", "n_pairs"] == 4
    assert tests.loc[f"{SEEN} - control", "n_pairs"] == 0
    spec = result.by_specialty()
    assert list(spec["seen"]) == [False, True] and bool(spec["trained"].all())
    assert "seen" in result.summary()


def test_a_missing_training_data_file_says_which_path_and_where_it_came_from(tmp_path):
    from specprobe.utils.io import sha256_file

    data = write_qa(tmp_path / "train.json", training_questions())
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    recorded = tmp_path / "elsewhere" / "train.json"  # the manifest's path, not valid here
    manifest = {"data": {"path": str(recorded), "sha256": sha256_file(data)}, "specialty": ["Cardiology"]}
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError) as info:
        training_data(adapter)
    assert str(info.value) == (
        f"{adapter}/manifest.json: field 'data.path' records the training data as {recorded}, not found here "
        f"(moved, or another machine?); pass train_data= (--train-data) with that QA file (its sha256 must be "
        f"{sha256_file(data)[:12]}...)"
    )
    given = tmp_path / "typo.json"
    # was: "training data file not found: <given> (recorded in <adapter>/manifest.json); pass train_data="
    with pytest.raises(FileNotFoundError, match=r"^train_data \S*typo\.json: no such file \(the path given as"):
        training_data(adapter, given)
    with pytest.raises(FileNotFoundError, match=r"^train_data \S*adapter: a folder, not a QA file"):
        training_data(adapter, adapter)
    (adapter / "manifest.json").unlink()  # no manifest: the given path is taken as given, and named the same way
    with pytest.raises(FileNotFoundError, match=r"^train_data \S*typo\.json: no such file"):
        training_data(adapter, given)
    assert len(training_data(adapter, data, "Cardiology").records) == 8


def test_the_answer_text_a_run_trained_on_as_its_target_is_seen(tiny_llama, tmp_path):
    """continuation="text": the correct option's text is the training target, never cut. A prompt cut to
    max_length through its options blanked that option too, so its terms (trained on in every question)
    counted as unseen; an option cut from the prompt that is not the answer stays unseen."""
    from specprobe.finetune import train

    filler = " ".join(["the patient was then observed closely"] * 8)
    options = ("aspirin therapy", "bed rest", "insulin", "heparin")
    recs = [QARecord(f"c{i}", f"{filler} {i}?", options, "aspirin therapy", ("Cardiology",)) for i in range(4)]
    data = write_qa(tmp_path / "train.json", recs)
    run = train(str(tiny_llama[0]), data, "Cardiology", tmp_path / "adapter", max_steps=1, batch_size=4, max_length=30, continuation="text", progress=False)  # fmt: skip
    assert run.manifest["filter"]["truncated_prompts"] == 4
    texts = training_data(run.path).texts()
    assert all("A. aspirin therapy" in t and "bed rest" not in t and "C. insulin" in t for t in texts), texts[0]
    terms = {"aspirin therapy": ["Cardiology"], "bed rest": ["Cardiology"], "insulin": ["Cardiology"]}
    probe = [{"id": "t0", "text": "Aspirin therapy, bed rest or insulin?"}]
    comp = compare(str(tiny_llama[0]), str(run.path), terms, probe, controls=None, progress=False)
    result = seen_unseen(comp, run.path)
    assert result.extras["term_groups"] == {"aspirin therapy": SEEN, "bed rest": UNSEEN_SAME, "insulin": SEEN}


def test_terms_cut_off_a_truncated_training_prompt_are_not_seen(tiny_llama, tmp_path, caplog):
    """Prompts longer than max_length lose tokens from the left: the model never saw markerN at the start
    of each question, but all 8 counted as seen (9 seen terms); now only the term inside the window
    ("observed") is. A manifest from before the window was recorded keeps the old count, with a warning."""
    from specprobe.finetune import train

    filler = " ".join(["the patient was then observed closely"] * 8)
    recs = [
        QARecord(f"c{i}", f"marker{i} pain. {filler}. Which drug?", ("aspirin", "rest"), "aspirin", ("Cardiology",))
        for i in range(8)
    ]
    data = write_qa(tmp_path / "train.json", recs)
    run = train(str(tiny_llama[0]), data, "Cardiology", tmp_path / "adapter", max_steps=2, batch_size=4, max_length=64, progress=False)  # fmt: skip
    assert run.manifest["filter"]["truncated_prompts"] == 8
    terms = {f"marker{i}": ["Cardiology"] for i in range(8)} | {"observed": ["Cardiology"]}
    texts = [{"id": f"t{i}", "text": f"A patient with marker{i} pain was observed"} for i in range(8)]
    comp = compare(str(tiny_llama[0]), str(run.path), terms, texts, controls=None, progress=False)
    result = seen_unseen(comp, run.path)
    assert {t for t, g in result.extras["term_groups"].items() if g == SEEN} == {"observed"}
    assert all(t.startswith(" ") and "aspirin" in t for t in training_data(run.path).texts())
    manifest = json.loads((run.path / "manifest.json").read_text())
    del manifest["filter"]["truncated_questions"]
    with caplog.at_level("WARNING", logger="specprobe.probe.training_data"):
        older = training_data(manifest, data)
    assert "8 training prompts were cut to max_length" in caplog.text
    assert older.texts() == tuple(r.context_text() for r in older.records)
    with pytest.raises(ValueError, match="'filter.truncated_questions' names no selected question"):
        training_data({**manifest, "filter": {**manifest["filter"], "truncated_questions": [{"index": 99}]}}, data)


def test_a_comparison_of_training_questions_is_warned_about_and_recorded(planted, caplog):
    """Scored texts that are training questions (compare counts them) made every group partly memorisation
    of whole questions; seen_unseen read the rows without a word."""
    import logging

    from specprobe.probe.comparison import Comparison

    _, _, adapter, comp = planted
    on_training = Comparison(comp.to_pandas(), {**comp.metadata, "texts_in_training_data": 3}, comp.extras)
    with caplog.at_level(logging.WARNING):
        result = seen_unseen(on_training, adapter)
    assert "3 of the comparison's texts are questions the adapter was trained on" in caplog.text
    assert result.metadata["texts_in_training_data"] == 3
