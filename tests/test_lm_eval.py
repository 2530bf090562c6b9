"""lm-evaluation-harness both ways: reading `--log_samples` files, writing results.json and samples."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specprobe.app.cli import main
from specprobe.finetune.accuracy_matrix import AccuracyMatrix
from specprobe.finetune.evaluation import MCEvaluation
from specprobe.finetune.lm_eval import from_lm_eval
from specprobe.finetune.lm_eval_export import TASK, subtask_name
from specprobe.terms.datasets import QARecord, load_qa

SPECS = ("Cardiology", "Neurology", "Dermatology")
OPTS = ("aspirin", "heparin", "insulin", "rest")


def qa_file(path, n: int = 12, seed: int = 0):
    """An S-MedQA JSON file: question i of specialty SPECS[i % 3], answer drawn with `seed`."""
    rng = random.Random(seed)
    items = [
        {
            "Question": f"Patient {i} has pain number {i * 7}. Which drug is best?",
            "Options": list(OPTS),
            "Answer": OPTS[rng.randrange(4)],
            "Specialty": SPECS[i % 3],
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(items))
    return path


def lm_eval_sample(doc_id: int, item: dict, lls: list[float], *, strings: bool = True, target=None) -> dict:
    """One line as lm-eval 0.4 `--log_samples` writes it for a multiple-choice task (evaluator.py,
    evaluation_tracker.py): arguments as gen_args_i/arg_j, resps and filtered_resps as strings
    (sanitize_list) from 0.4.3 on, numbers before; the doc is the dataset row as given."""
    letters = "ABCD"
    context = f"Question: {item['Question']}\n" + "\n".join(f"{a}. {o}" for a, o in zip(letters, item["Options"]))
    conv = str if strings else (lambda x: x)
    gold = item["Options"].index(item["Answer"])
    return {
        "doc_id": doc_id,
        "doc": item,
        "target": str(gold if target is None else target),
        "arguments": {
            f"gen_args_{j}": {"arg_0": context + "\nAnswer:", "arg_1": f" {a}"} for j, a in enumerate(letters)
        },
        "resps": [[[conv(ll), conv(False)]] for ll in lls],
        "filtered_resps": [[conv(ll), conv(False)] for ll in lls],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": "0" * 64,
        "prompt_hash": "0" * 64,
        "target_hash": "0" * 64,
        "acc": float(int(np.argmax(lls)) == gold),
        "acc_norm": float(int(np.argmax(lls)) == gold),
    }


def write_samples(path, items, lls, order=None, **kw):
    order = list(range(len(items))) if order is None else order
    path.write_text("".join(json.dumps(lm_eval_sample(i, items[i], lls[i], **kw)) + "\n" for i in order))
    return path


def random_lls(n: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(map(float, -rng.uniform(0.5, 6.0, size=4))) for _ in range(n)]


def expected_table(items, lls) -> pd.DataFrame:
    """Per specialty and overall: n and n_correct, from the log-likelihoods by hand."""
    rows = []
    for item, ll in zip(items, lls):
        ok = int(np.argmax(ll)) == item["Options"].index(item["Answer"])
        rows += [(item["Specialty"], ok), ("ALL", ok)]
    frame = pd.DataFrame(rows, columns=["specialty", "ok"])
    return frame.groupby("specialty")["ok"].agg(["size", "sum"])


@pytest.mark.parametrize("strings", [True, False])
def test_reads_lm_eval_samples_format(tmp_path, strings):
    data = qa_file(tmp_path / "qa.json")
    items = json.loads(data.read_text())
    lls = random_lls(len(items), 1)
    samples = write_samples(tmp_path / "samples_mc_2024.jsonl", items, lls, strings=strings)
    res = from_lm_eval({"m": samples}, data)
    assert isinstance(res, MCEvaluation)
    acc = res.accuracy().set_index("specialty")
    exp = expected_table(items, lls)
    for spec in exp.index:
        assert acc.loc[spec, "n"] == exp.loc[spec, "size"]
        assert acc.loc[spec, "n_correct"] == exp.loc[spec, "sum"]
        assert acc.loc[spec, "acc_lo"] <= acc.loc[spec, "acc"] <= acc.loc[spec, "acc_hi"]
    frame = res.to_pandas()
    np.testing.assert_array_equal(np.array(list(frame["option_logp"])), np.array(lls))


def test_matches_by_question_text_when_doc_ids_are_shuffled(tmp_path):
    data = qa_file(tmp_path / "qa.json")
    items = json.loads(data.read_text())
    lls = random_lls(len(items), 2)
    order = list(range(len(items)))
    random.Random(3).shuffle(order)
    good = from_lm_eval({"m": write_samples(tmp_path / "a.jsonl", items, lls)}, data).to_pandas()
    # doc ids renumbered 0.. in the shuffled order: only the question text can tell which is which
    lines = [lm_eval_sample(k, items[i], lls[i]) for k, i in enumerate(order)]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    back = from_lm_eval({"m": tmp_path / "b.jsonl"}, data).to_pandas().set_index("item_id")
    for _, row in good.iterrows():
        assert back.loc[row["item_id"], "option_logp"] == row["option_logp"]


def _mutated(tmp_path, items, lls, change):
    lines = [lm_eval_sample(i, it, ll) for i, (it, ll) in enumerate(zip(items, lls))]
    change(lines, items)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _other_question(ls, items):
    """Line 4 holds a question that is not in the file (doc and prompt both)."""
    ls[3]["doc"] = {**items[3], "Question": "Something else entirely, not in the file?"}
    for arg in ls[3]["arguments"].values():
        arg["arg_0"] = arg["arg_0"].replace(items[3]["Question"], "Something else entirely?")


def _wrong_target(ls, items):
    """Line 2's target is a valid option index, but not the answer."""
    ls[1]["target"] = str((items[1]["Options"].index(items[1]["Answer"]) + 1) % 4)


@pytest.mark.parametrize(
    "change, message",
    [
        (_other_question, r"line 4 \(doc_id 3\): the sample does not match .*record 3 is"),
        (lambda ls, it: ls[2].update(filtered_resps=ls[2]["filtered_resps"][:3]), r"line 3 .*3 option log-likelihoods"),
        (_wrong_target, r"line 2 .*target '\d' is not the answer"),
        (lambda ls, it: ls.append(json.dumps(ls[0])), r"line 13 .*already given on line 1"),
        (lambda ls, it: ls.__setitem__(5, "{not json"), r"bad.jsonl: line 6: not valid JSON"),
        (lambda ls, it: ls[0].update(doc_id="zero"), r"line 1 .*'doc_id' 'zero' is not an integer"),
        (lambda ls, it: ls[4].update(filtered_resps=[["x", "False"]] * 4), r"line 5 .*not \[loglik, is_greedy\]"),
    ],
)
def test_mismatches_are_one_line_errors_naming_the_doc(tmp_path, change, message):
    data = qa_file(tmp_path / "qa.json")
    items = json.loads(data.read_text())
    lls = random_lls(len(items), 4)
    bad = _mutated(tmp_path, items, lls, change)
    with pytest.raises(ValueError, match=message) as info:
        from_lm_eval({"m": bad}, data)
    assert "\n" not in str(info.value) and "bad.jsonl" in str(info.value)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--from-lm-eval", f"m={bad}", "--data", str(data), "--out", str(out)]) == 2
    assert not out.exists()


def test_matrix_from_lm_eval_runs_the_own_specialty_test(tmp_path, capsys):
    """Three 'adapters' named after specialties, each right on its own specialty only, and a base."""
    data = qa_file(tmp_path / "qa.json", n=30)
    items = json.loads(data.read_text())
    files = {}
    for name in ("base", *SPECS):
        lls = []
        for item in items:
            gold = item["Options"].index(item["Answer"])
            right = item["Specialty"] == name
            lls.append([-1.0 if (j == gold) == right else -3.0 for j in range(4)])
        files[name] = write_samples(tmp_path / f"{name}.jsonl", items, lls)
    args = ["evaluate", "--data", str(data), "--out", str(tmp_path / "m.json"), "--matrix"]
    for name, path in files.items():
        args += ["--from-lm-eval", f"{name}={path}"]
    assert main(args) == 0
    m = AccuracyMatrix.load(tmp_path / "m.json")
    assert m.trained_on() == {"base": None, **{s: s for s in SPECS}}
    c = m.contrast()
    assert list(c["is_best"]) == [True] * 3 and c.attrs["n_best"] == 3
    assert (m.table().loc["base", list(SPECS)] == 0).all()
    assert "own adapter best on 3/3" in capsys.readouterr().out


def test_matrix_model_names_match_specialties_whatever_their_case_and_others_warn(tmp_path, caplog):
    """lm-eval folders are often lower case: "cardiology" is Cardiology's adapter (not an adapter of no
    specialty, which would silently leave Cardiology out of the own-specialty test); a name that is no
    specialty warns."""
    data = qa_file(tmp_path / "qa.json", n=30)
    items = json.loads(data.read_text())
    lls = random_lls(len(items), 3)
    names = ["base", "cardiology", "NEUROLOGY", "derm"]
    files = {name: write_samples(tmp_path / f"{name}.jsonl", items, lls) for name in names}
    with caplog.at_level("WARNING", logger="specprobe.finetune.lm_eval"):
        m = from_lm_eval(files, data, matrix=True)
    assert isinstance(m, AccuracyMatrix)
    assert m.trained_on() == {"base": None, "cardiology": "Cardiology", "NEUROLOGY": "Neurology", "derm": None}
    assert sorted(m.contrast()["specialty"]) == ["Cardiology", "Neurology"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "'derm' is named after no specialty" in warned[0] and "Dermatology" in warned[0]


def test_results_json_has_lm_eval_layout(tmp_path):
    data = qa_file(tmp_path / "qa.json", n=21)
    items = json.loads(data.read_text())
    res = from_lm_eval({"m": write_samples(tmp_path / "s.jsonl", items, random_lls(21, 5))}, data)
    payload = json.loads(res.to_lm_eval(tmp_path / "results.json").read_text())
    acc = res.accuracy().set_index("specialty")
    frame = res.to_pandas()
    assert payload["results"][TASK]["acc,none"] == pytest.approx(acc.loc["ALL", "acc"])
    values = frame["correct"].astype(float).to_numpy()
    assert payload["results"][TASK]["acc_stderr,none"] == pytest.approx(values.std(ddof=1) / math.sqrt(len(values)))
    assert payload["group_subtasks"][TASK] == sorted(subtask_name(s) for s in SPECS)
    for spec in SPECS:
        sub = payload["results"][subtask_name(spec)]
        assert sub["acc,none"] == pytest.approx(acc.loc[spec, "acc"])
        assert sub["acc_norm,none"] == pytest.approx(acc.loc[spec, "acc_norm"])
        assert payload["n-samples"][subtask_name(spec)]["effective"] == acc.loc[spec, "n"]
    assert set(payload["configs"]) == set(payload["versions"]) == set(payload["results"])


def test_specialties_with_one_task_slug_keep_their_own_subtasks(tmp_path):
    """Specialties with one slug (内科 and 外科: "none"; Ob/Gyn and Ob-Gyn: "ob_gyn") are each their own
    subtask with their own accuracy, not one subtask overwritten by the other."""
    specs = ["内科", "内科", "外科", "Ob/Gyn", "Ob-Gyn", "Cardiology"]
    items = [
        {"Question": f"Case {i}: which drug?", "Options": list(OPTS), "Answer": OPTS[0], "Specialty": s}
        for i, s in enumerate(specs)
    ]
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(items, ensure_ascii=False))
    right = [0, 1, 1, 0, 1, 0]  # the answer (option 0) picked on 内科 and Ob/Gyn and Cardiology only
    lls = [[-1.0, -2.0, -3.0, -4.0] if r == 0 else [-2.0, -1.0, -3.0, -4.0] for r in right]
    res = from_lm_eval({"m": write_samples(tmp_path / "s.jsonl", items, lls)}, data)
    assert isinstance(res, MCEvaluation)
    payload = json.loads(res.to_lm_eval(tmp_path / "results.json").read_text(encoding="utf-8"))
    acc = res.accuracy().set_index("specialty")
    names = payload["specialties"]
    assert sorted(names.values()) == sorted(set(specs)) and len(payload["group_subtasks"][TASK]) == 5
    for name, spec in names.items():
        assert payload["results"][name]["acc,none"] == pytest.approx(acc.loc[spec, "acc"]), spec
        assert payload["n-samples"][name]["effective"] == acc.loc[spec, "n"], spec
    assert payload["results"][subtask_name("Cardiology")]["acc,none"] == 1.0  # a unique slug keeps its plain name


def test_round_trip_model_to_lm_eval_files_and_back(tiny_llama, tmp_path):
    """specprobe evaluates a tiny model and adapter, writes lm-eval files, reads them back: identical."""
    base, adapter = tiny_llama
    data = qa_file(tmp_path / "qa.json", n=12)
    out, lm_dir = tmp_path / "direct.json", tmp_path / "lm"
    cmd = ["evaluate", "--model", str(base), "--adapter", str(adapter), "--data", str(data), "--no-progress"]
    assert main([*cmd, "--out", str(out), "--lm-eval-out", str(lm_dir)]) == 0
    direct = MCEvaluation.load(out)
    back_args = ["evaluate", "--data", str(data), "--out", str(tmp_path / "back.json")]
    for model in ("base", "tuned"):
        back_args += ["--from-lm-eval", f"{model}={lm_dir / model / f'samples_{TASK}.jsonl'}"]
        assert (lm_dir / model / "results.json").exists()
    assert main(back_args) == 0
    back = MCEvaluation.load(tmp_path / "back.json")
    pd.testing.assert_frame_equal(direct.accuracy(), back.accuracy())
    d, b = direct.to_pandas(), back.to_pandas()
    assert list(d["option_logp"]) == list(b["option_logp"]) and list(d["pred_norm"]) == list(b["pred_norm"])
    # and the API: to_lm_eval_samples with the data recorded in the metadata
    path = direct.to_lm_eval_samples(tmp_path / "t.jsonl", model="tuned")
    tuned = direct.accuracy().query("model == 'tuned'").reset_index(drop=True)
    pd.testing.assert_frame_equal(from_lm_eval({"tuned": path}, data).accuracy(), tuned)
    assert len(load_qa(data)) == len(path.read_text().splitlines())


def test_from_lm_eval_cli_needs_no_model_and_refuses_one(tmp_path, capsys):
    data = qa_file(tmp_path / "qa.json")
    items = json.loads(data.read_text())
    s = write_samples(tmp_path / "s.jsonl", items, random_lls(len(items), 6))
    args = ["evaluate", "--from-lm-eval", str(s), "--data", str(data), "--out", str(tmp_path / "r.json")]
    assert main([*args, "--model", "x"]) == 2
    assert "leave out --model" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path / "r.json")]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(args) == 0
    assert MCEvaluation.load(tmp_path / "r.json").to_pandas()["model"].unique().tolist() == ["s"]


def test_a_duplicated_answer_text_reads_lm_eval_gold_at_the_second_copy(tmp_path):
    """Options ('aspirin', 'heparin', 'aspirin', 'rest') with lm-eval's gold at the second copy (C):
    the target is accepted, and the model picking C is correct (the record holds the answer as text)."""
    item = {"Question": "Which drug?", "Options": ["aspirin", "heparin", "aspirin", "rest"], "Answer": "aspirin"}
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([item]))
    lls = [-3.0, -2.0, -1.0, -4.0]
    samples = tmp_path / "samples_mc.jsonl"
    samples.write_text(json.dumps(lm_eval_sample(0, item, lls, target=2)) + "\n")
    row = from_lm_eval({"m": samples}, data).to_pandas().iloc[0]
    assert row["pred"] == 2 and row["answer_index"] == 0 and row["correct"] and row["correct_norm"]


def _text_sample(doc_id: int, item: dict, lls: list[float], choices=None, delimiter: str = " ") -> dict:
    """A sample of a cloze-style task (lm-eval's `doc_to_choice: "{{Options}}"`): the continuations are the
    option texts after the target delimiter, and `acc`/`acc_norm` are lm-eval's (gold = `target`)."""
    choices = list(item["Options"]) if choices is None else choices
    sample = lm_eval_sample(doc_id, item, lls)
    context = sample["arguments"]["gen_args_0"]["arg_0"]
    sample["arguments"] = {f"gen_args_{j}": {"arg_0": context, "arg_1": delimiter + c} for j, c in enumerate(choices)}
    gold = choices.index(item["Answer"])
    sample["target"] = gold
    sample["acc"] = float(int(np.argmax(lls)) == gold)
    sample["acc_norm"] = float(int(np.argmax(np.array(lls) / [len(c) for c in choices])) == gold)
    return sample


def _write_lines(path, samples):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def test_a_question_inside_a_longer_one_does_not_take_its_sample(tmp_path):
    """doc ids not in the file's order: the sample whose doc is question 1 ('... Which drug is best?') has
    doc_id 0, and question 0 is 'Which drug is best?' (inside question 1's text). The doc field equal to
    question 1 decides; the substring made it question 0's (alone: silently; with question 0's own sample:
    'already given')."""
    items = [
        {"Question": "Which drug is best?", "Options": list(OPTS), "Answer": "aspirin", "Specialty": "Cardiology"},
        {"Question": "A man has pain. Which drug is best?", "Options": list(OPTS), "Answer": "rest"},
    ]
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{**it, "Specialty": "Cardiology"} for it in items]))
    lls = [[-1.0, -2.0, -3.0, -4.0], [-4.0, -3.0, -2.0, -1.0]]
    alone = _write_lines(tmp_path / "a.jsonl", [lm_eval_sample(0, items[1], lls[1])])
    assert from_lm_eval({"m": alone}, data).to_pandas()["item_id"].tolist() == ["qa:1"]
    both = _write_lines(
        tmp_path / "b.jsonl", [lm_eval_sample(0, items[1], lls[1]), lm_eval_sample(1, items[0], lls[0])]
    )
    frame = from_lm_eval({"m": both}, data).to_pandas().set_index("item_id")
    assert frame.loc["qa:1", "option_logp"] == tuple(lls[1]) and frame.loc["qa:0", "option_logp"] == tuple(lls[0])
    assert frame["correct"].all()


def test_choices_in_another_order_than_the_options_are_refused(tmp_path):
    """lm-eval's choices are the option texts in another order, its target the answer's text: each
    log-likelihood belonged to another option than the file's (read silently before)."""
    data = qa_file(tmp_path / "qa.json", n=3)
    items = json.loads(data.read_text())
    lls = random_lls(3, 8)
    swapped = [OPTS[1], OPTS[0], OPTS[2], OPTS[3]]
    samples = [_text_sample(i, it, ll) for i, (it, ll) in enumerate(zip(items, lls))]
    samples[1] = _text_sample(1, items[1], lls[1], choices=swapped)
    samples[1]["target"] = items[1]["Answer"]  # lm-eval finds a text target among its own choices
    bad = _write_lines(tmp_path / "s.jsonl", samples)
    with pytest.raises(
        ValueError, match=r"s.jsonl: line 2 .*choices are the options of question 'qa:1' in another order"
    ):
        from_lm_eval({"m": bad}, data)


def test_acc_norm_divides_by_the_choice_without_any_target_delimiter(tmp_path):
    """A task with target_delimiter "\\n": lm-eval divides by the option's length; the "\\n" counted
    as a character turned this acc_norm pick from option B (lm-eval's) to option A."""
    item = {"Question": "Which one?", "Options": ["ab", "abcdefgh"], "Answer": "abcdefgh", "Specialty": "Cardiology"}
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([item]))
    lls = [-2.0, -7.0]  # per character: -1.0 vs -0.875 (B); with the "\n": -0.667 vs -0.778 (A)
    path = _write_lines(tmp_path / "s.jsonl", [_text_sample(0, item, lls, delimiter="\n")])
    row = from_lm_eval({"m": path}, data).to_pandas().iloc[0]
    assert row["option_n_chars"] == (2, 8) and row["pred_norm"] == 1 and row["correct_norm"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # lm-eval scored another gold (no target to tell): its acc is 1, the file's answer says wrong
        (lambda s: (s.pop("target"), s.update(acc=1 - s["acc"])), r"lm-eval logged acc=\d but its log-likelihoods"),
        # no arguments, so no choice lengths: acc_norm from the option texts is not lm-eval's
        (lambda s: (s.pop("arguments"), s.update(acc_norm=1 - s["acc_norm"])), r"logged acc_norm=\d .*choice lengths"),
        (lambda s: s["filtered_resps"][2].__setitem__(0, "nan"), r"'nan'.* is not a number \(NaN log-likelihood\)"),
    ],
)
def test_samples_that_disagree_with_lm_evals_own_verdicts_are_refused(tmp_path, change, message):
    data = qa_file(tmp_path / "qa.json", n=4)
    items = json.loads(data.read_text())
    samples = [lm_eval_sample(i, it, ll) for i, (it, ll) in enumerate(zip(items, random_lls(4, 9)))]
    change(samples[2])
    bad = _write_lines(tmp_path / "s.jsonl", samples)
    with pytest.raises(ValueError, match=f"s.jsonl: line 3 .*{message}") as info:
        from_lm_eval({"m": bad}, data)
    assert "\n" not in str(info.value)


def test_questions_sharing_an_id_are_refused(tmp_path):
    """Two questions with id "7" (of two specialties): rows are kept by id, so selecting Cardiology kept
    the Neurology one too (ALL counted 2 questions for Cardiology's 1)."""
    items = [
        {"id": "7", "Question": "Chest pain. Which drug?", "Options": list(OPTS), "Answer": "aspirin"},
        {"id": "7", "Question": "Headache. Which drug?", "Options": list(OPTS), "Answer": "rest"},
    ]
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{**items[0], "Specialty": "Cardiology"}, {**items[1], "Specialty": "Neurology"}]))
    samples = _write_lines(tmp_path / "s.jsonl", [lm_eval_sample(i, it, [-1.0] * 4) for i, it in enumerate(items)])
    with pytest.raises(ValueError, match=r"qa.json: items 0 and 1 have the same id '7'"):
        from_lm_eval({"m": samples}, data, specialty="Cardiology")


def test_export_refuses_rows_scored_with_other_continuations_or_questions(tmp_path):
    """An evaluation read from a cloze-style lm-eval file records no prompt format: written back with the
    default letters, acc_norm's lengths (the option texts) no longer fit the file's continuations; an
    evaluation written against another QA file (another answer) is refused too."""
    data = qa_file(tmp_path / "qa.json", n=3)
    items = json.loads(data.read_text())
    cloze = _write_lines(
        tmp_path / "c.jsonl", [_text_sample(i, it, [-1.0, -2.0, -3.0, -4.0]) for i, it in enumerate(items)]
    )
    res = from_lm_eval({"m": cloze}, data)
    with pytest.raises(ValueError, match=r"question 'qa:0' \(doc_id 0\): the evaluation's option lengths"):
        res.to_lm_eval_samples(tmp_path / "out.jsonl")
    letters = from_lm_eval({"m": write_samples(tmp_path / "l.jsonl", items, random_lls(3, 1))}, data)
    # the same ids, another answer each
    other = [replace(r, answer=OPTS[(OPTS.index(r.answer) + 1) % 4]) for r in load_qa(data)]
    with pytest.raises(ValueError, match=r"question 'qa:0' \(doc_id 0\): the evaluation scored 4 options with answer"):
        letters.to_lm_eval_samples(tmp_path / "out.jsonl", data=other)


def test_a_folder_of_lm_eval_output_is_read_when_it_holds_one_samples_file(tmp_path, capsys):
    """lm-eval's --output_path with --log_samples: <output_path>/<model>/samples_<task>_<date>.jsonl (was:
    'lm-eval samples file not found: <output_path>'); none or several in the folder: named, and one asked for."""
    data = qa_file(tmp_path / "qa.json")
    items = json.loads(data.read_text())
    lm_out = tmp_path / "lm-out"
    model_dir = lm_out / "__tmp__tiny-llama"  # lm-eval's sanitised model name
    model_dir.mkdir(parents=True)
    (model_dir / "results_2024-05-01T12-30-45.123456.json").write_text("{}")
    name = "samples_my_smedqa_2024-05-01T12-30-45.123456.jsonl"
    write_samples(model_dir / name, items, random_lls(len(items), 8))
    direct = from_lm_eval(model_dir / name, data)
    for folder in (lm_out, model_dir):
        res = from_lm_eval(folder, data)
        assert res.to_pandas()["model"].unique().tolist() == ["__tmp__tiny-llama"]  # named as for the file
        pd.testing.assert_frame_equal(res.accuracy(), direct.accuracy())
        assert res.metadata["lm_eval"]["__tmp__tiny-llama"]["path"] == str(model_dir / name)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--from-lm-eval", f"tuned={lm_out}", "--data", str(data), "--out", str(out)]) == 0
    assert MCEvaluation.load(out).to_pandas()["model"].unique().tolist() == ["tuned"]

    # several: another run of the task (another date), or another model
    write_samples(model_dir / name.replace("12-30", "13-00"), items, random_lls(len(items), 9))
    with pytest.raises(ValueError) as info:
        from_lm_eval(lm_out, data)
    assert str(info.value) == (
        f"lm-eval samples folder {lm_out}: 2 samples files (__tmp__tiny-llama/{name}, "
        f"__tmp__tiny-llama/{name.replace('12-30', '13-00')}); give the one to read (one file per model: "
        "[NAME=]PATH)"
    )
    # none: the scores without --log_samples, or an empty folder
    (model_dir / name).unlink()
    (model_dir / name.replace("12-30", "13-00")).unlink()
    with pytest.raises(FileNotFoundError, match=r"lm-out: no samples_\*\.jsonl file in it or below; it holds "
                       r"__tmp__tiny-llama/results_2024-05-01T12-30-45\.123456\.json: lm-eval's scores without "
                       r"its samples \(run lm_eval with --log_samples\)$"):  # fmt: skip
        from_lm_eval(lm_out, data)
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    argv = ["evaluate", "--from-lm-eval", str(tmp_path / "empty"), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "empty: no samples_*.jsonl file in it or below; lm-eval writes <output_path>/<model>/samples_" in err


# -- property: lm-eval files written by specprobe read back to the same evaluation ------------------------------------
_SPEC_NAMES = ["Cardiology", "内科", "外科", "Ob/Gyn", "Ob-Gyn", "none", "Pédiatrie", "A;B"]


@st.composite
def _lm_eval_case(draw) -> tuple[list[QARecord], list[list[float]]]:
    """Questions (2-5 options, unicode text, one or two specialties) and each option's log-likelihood."""
    records, lls = [], []
    for i in range(draw(st.integers(1, 8))):
        n = draw(st.integers(2, 5))
        options = tuple(f"{draw(st.sampled_from(['drug', 'Δ', '药']))} {i}.{j}" for j in range(n))
        specs = tuple(draw(st.lists(st.sampled_from(_SPEC_NAMES[:6]), min_size=1, max_size=2, unique=True)))
        answer = options[draw(st.integers(0, n - 1))]
        records.append(QARecord(f"q{i}", f"Case {i} «{draw(st.text(max_size=5))}»?", options, answer, specs))
        values = st.one_of(st.floats(-60, 0, allow_nan=False), st.sampled_from([-1.0, -math.inf]))
        lls.append(draw(st.lists(values, min_size=n, max_size=n)))
    return records, lls


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_lm_eval_case())
def test_lm_eval_files_written_by_specprobe_read_back_exactly(tmp_path_factory, case):
    """to_lm_eval_samples -> from_lm_eval gives the same rows (log-likelihoods bit for bit, ties, -inf);
    results.json has one subtask per specialty, each with that specialty's accuracy and n."""
    records, lls = case
    folder = tmp_path_factory.mktemp("lm")
    lines = [lm_eval_sample_of(i, r, ll) for i, (r, ll) in enumerate(zip(records, lls))]
    first = folder / "first.jsonl"
    first.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    ev = from_lm_eval({"m": first}, records)
    assert isinstance(ev, MCEvaluation)
    again = from_lm_eval({"m": ev.to_lm_eval_samples(folder / "again.jsonl", data=records)}, records)
    assert isinstance(again, MCEvaluation)
    pd.testing.assert_frame_equal(again.to_pandas(), ev.to_pandas())
    payload = json.loads(ev.to_lm_eval(folder / "results.json").read_text(encoding="utf-8"))
    acc = ev.accuracy().set_index("specialty")
    specs = {s for r in records for s in r.specialties}
    assert sorted(payload["specialties"].values()) == sorted(specs)
    assert sorted(payload["group_subtasks"][TASK]) == sorted(payload["specialties"])
    for name, spec in payload["specialties"].items():
        assert payload["results"][name]["acc,none"] == acc.loc[spec, "acc"], spec
        assert payload["results"][name]["acc_norm,none"] == acc.loc[spec, "acc_norm"], spec
        assert payload["n-samples"][name]["effective"] == acc.loc[spec, "n"], spec


def lm_eval_sample_of(doc_id: int, rec: QARecord, lls: list[float]) -> dict:
    """An lm-eval 0.4 `--log_samples` line for `rec` with letter choices (" A", " B", ...) and its verdicts."""
    letters = "ABCDE"[: len(rec.options)]
    pred = int(np.argmax(lls))  # acc_norm divides by len("A") == 1: the same pick
    return {
        "doc_id": doc_id,
        "doc": {"question": rec.question, "options": list(rec.options)},
        "target": str(rec.answer_index),
        "arguments": {
            f"gen_args_{j}": {"arg_0": f"{rec.question}\nAnswer:", "arg_1": f" {a}"} for j, a in enumerate(letters)
        },
        "filtered_resps": [[str(ll), "False"] for ll in lls],
        "filter": "none",
        "acc": float(pred == rec.answer_index),
        "acc_norm": float(pred == rec.answer_index),
    }


def test_export_refuses_a_qa_file_edited_since_the_evaluation(tmp_path):
    """The export re-read the recorded QA file without its sha256: a reworded question (same options and
    answer) was written beside the old question's log-likelihoods."""
    qa = qa_file(tmp_path / "qa.json", n=6)
    items = json.loads(qa.read_text())
    ev = from_lm_eval({"m": write_samples(tmp_path / "samples_x.jsonl", items, random_lls(6, 1))}, qa)
    ev.to_lm_eval_samples(tmp_path / "same.jsonl")  # the file as evaluated: fine
    items[0]["Question"] = "A DIFFERENT QUESTION about a child with fever?"
    qa.write_text(json.dumps(items))
    with pytest.raises(ValueError, match=r"qa\.json changed since the evaluation \(sha256"):
        ev.to_lm_eval_samples(tmp_path / "again.jsonl")
