"""Multiple-choice evaluation and the adapter x specialty matrix (API and CLI), with bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from specprobe.app.cli import main
from specprobe.core.models import ModelLoadError
from specprobe.finetune.accuracy_matrix import AccuracyMatrix, matrix
from specprobe.finetune.evaluation import MCEvaluation, evaluate, wilson_interval
from specprobe.finetune.prompts import PromptFormat
from specprobe.finetune.training import train
from specprobe.terms.datasets import DataError, QARecord
from specprobe.utils.io import sha256_file

OPTS = ("aspirin", "heparin", "insulin", "rest")


def records(n: int = 12) -> list[QARecord]:
    # Cardiology answers are always option A, Neurology always option C: learnable by a tiny model
    # (" A" and " C" are single tokens for the tiny Llama tokenizer; " B" is two, which a random tiny
    # model whose logits are nearly flat cannot make more likely than a one-token option)
    out = []
    for i in range(n):
        cardio = i % 2 == 1
        out.append(
            QARecord(
                f"q{i}",
                f"Patient {i} has {'chest' if cardio else 'head'} pain. Best drug?",
                OPTS,
                OPTS[0] if cardio else OPTS[2],
                ("Cardiology" if cardio else "Neurology",),
            )
        )
    return out


def test_wilson_interval():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(10, 10)[1] == pytest.approx(
        1.0
    )
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_option_loglikelihoods_match_a_direct_forward(tiny_llama):
    """Shared scoring core vs the model's own logits, and both base and tuned from one load."""
    from transformers import AutoModelForCausalLM

    from specprobe.core.models import load_tokenizer
    from specprobe.finetune.prompts import encode_continuation

    base, adapter = tiny_llama
    recs = records(6)
    res = evaluate(str(base), recs, adapter, continuation="text", progress=False, batch_size=3)
    frame = res.to_pandas()
    assert list(frame["model"].unique()) == ["base", "tuned"] and len(frame) == 12
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tok = load_tokenizer(str(base))
    fmt = PromptFormat(continuation="text")
    for rec, row in zip(recs, frame[frame["model"] == "base"].itertuples()):
        ref = []
        for cont in fmt.continuations(rec):
            enc = encode_continuation(tok, fmt.prompt(rec), cont)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([enc.ids])).logits[0].double(), -1)
            ref.append(sum(logp[p - 1, enc.ids[p]].item() for p in enc.positions))
        assert row.option_logp == pytest.approx(ref, abs=1e-4)
        assert row.pred == max(range(4), key=lambda j: ref[j])
        norm = [r / len(o) for r, o in zip(ref, rec.options)]  # per character (lm-eval acc_norm)
        assert row.pred_norm == max(range(4), key=lambda j: norm[j])
    # base rows equal a base-only evaluation
    alone = evaluate(str(base), recs, continuation="text", progress=False).to_pandas()
    np.testing.assert_allclose(
        np.array(list(alone["option_logp"])), np.array(list(frame[frame["model"] == "base"]["option_logp"])), atol=1e-6
    )
    # the tuned adapter changes the scores
    assert (
        frame[frame["model"] == "tuned"]["option_logp"].tolist()
        != frame[frame["model"] == "base"]["option_logp"].tolist()
    )


def test_accuracy_table_and_roundtrip(tiny_llama, tmp_path):
    res = evaluate(str(tiny_llama[0]), records(), progress=False)
    acc = res.accuracy()
    assert set(acc["specialty"]) == {"Cardiology", "Neurology", "ALL"}
    allrow = acc[acc["specialty"] == "ALL"].iloc[0]
    assert allrow["n"] == 12 and allrow["acc_lo"] <= allrow["acc"] <= allrow["acc_hi"]
    assert "Cardiology" in res.table()
    back = MCEvaluation.load(res.save(tmp_path / "ev.json.gz"))
    assert back.accuracy().equals(acc)
    assert isinstance(back.to_pandas()["option_logp"].iloc[0], tuple)


def test_matrix_own_specialty_is_best(tiny_llama, tmp_path):
    base = str(tiny_llama[0])
    recs = records(16)
    opts = dict(max_steps=12, batch_size=4, learning_rate=2e-2, dropout=0.0, warmup_ratio=0.0, progress=False)
    for spec in ("Cardiology", "Neurology"):
        train(base, recs, spec, tmp_path / spec.lower(), **opts)
    m = matrix(base, [tmp_path / "cardiology", tmp_path / "neurology"], recs, progress=False)
    t = m.table()
    assert list(t.index) == ["base", "Cardiology", "Neurology"]
    assert t.loc["Cardiology", "Cardiology"] == 1.0 and t.loc["Neurology", "Neurology"] == 1.0
    c = m.contrast()
    assert c["is_best"].all() and c.attrs["mean_diff"] > 0.5 and c.attrs["n_best"] == 2
    assert "own adapter best on 2/2" in m.summary()
    # each adapter's weights under its own name; none of them as the matrix's one "tuned" (it named the first)
    assert "tuned" not in m.metadata and "adapter_sha256" not in m.metadata
    for name in ("cardiology", "neurology"):
        entry = m.metadata["adapters"][name.capitalize()]
        assert entry["adapter_sha256"] == sha256_file(tmp_path / name / "adapter_model.safetensors")
    back = AccuracyMatrix.load(m.save(tmp_path / "m.json"))
    assert back.to_pandas().equals(m.to_pandas()) and back.trained_on()["Cardiology"] == "Cardiology"
    assert back.contrast().attrs["mean_diff"] == c.attrs["mean_diff"]
    # the CLI writes the same matrix, and evaluates one adapter with a per-specialty table
    out = tmp_path / "cli_matrix.json"
    assert (
        main(
            [
                "evaluate",
                "--matrix",
                "--model",
                base,
                "--adapter",
                str(tmp_path / "cardiology"),
                "--adapter",
                str(tmp_path / "neurology"),
                "--data",
                str(_write(tmp_path / "qa.json", recs)),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert AccuracyMatrix.load(out).table().equals(t)
    assert (
        main(
            [
                "evaluate",
                "--model",
                base,
                "--adapter",
                str(tmp_path / "cardiology"),
                "--data",
                str(tmp_path / "qa.json"),
                "--out",
                str(tmp_path / "one.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                base,
                "--data",
                str(tmp_path / "qa.json"),
                "--out",
                str(tmp_path / "one.json"),
                "--no-progress",
            ]
        )
        == 2
    )  # exists: needs --overwrite
    one = MCEvaluation.load(tmp_path / "one.json").accuracy()
    assert one[(one.model == "tuned") & (one.specialty == "Cardiology")]["acc"].item() == 1.0


def _write(path, recs, mutate=None):
    items = [
        {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
        for r in recs
    ]
    if mutate:
        mutate(items)
    path.write_text(json.dumps(items))
    return path


def test_bad_data_files_name_file_and_item(tiny_llama, tmp_path):
    base = str(tiny_llama[0])
    bad = _write(tmp_path / "bad.json", records(4), lambda it: it[2].update(Answer="morphine"))
    with pytest.raises(DataError, match=r"bad.json: item 2: .*'morphine' is not one of the options"):
        evaluate(base, bad, progress=False)
    empty = _write(tmp_path / "empty.json", records(4), lambda it: it[1].update(Options=[]))
    with pytest.raises(DataError, match=r"empty.json: item 1: .*Options"):
        evaluate(base, empty, progress=False)
    with pytest.raises(DataError, match=r"options list is empty"):
        evaluate(base, [QARecord("x", "q?", (), "a")], progress=False)
    with pytest.raises(
        DataError, match=r"no questions for specialty 'Oncology'; available: Cardiology \(2\), Neurology \(2\)"
    ):
        evaluate(base, records(4), specialty="Oncology", progress=False)
    good = _write(tmp_path / "good.json", records(4))
    assert (
        main(["finetune", "--base", base, "--data", str(good), "--specialty", "Oncology", "--out", str(tmp_path / "o")])
        == 2
    )


def test_base_adapter_mismatch_is_refused(tiny_llama, tiny_gpt2, tmp_path):
    from specprobe.testing.tiny_models import build_tiny_model

    base = str(tiny_llama[0])
    train(base, records(8), "Cardiology", tmp_path / "cardio", max_steps=2, batch_size=2, progress=False)
    with pytest.raises(ModelLoadError, match="weights sha256"):  # the manifest names the base
        evaluate(str(tiny_gpt2[0]), records(4), tmp_path / "cardio", progress=False)
    with pytest.raises(
        ModelLoadError, match="does not fit|does not belong to this base"
    ):  # no manifest: the fit checks
        evaluate(str(tiny_gpt2[0]), records(4), tiny_llama[1], progress=False)
    other = build_tiny_model("llama", tmp_path / "other-llama", seed=7)  # same shapes, other weights
    with pytest.raises(ModelLoadError, match="weights sha256"):
        evaluate(str(other), records(4), tmp_path / "cardio", progress=False)
    with pytest.raises(ModelLoadError, match="weights sha256"):
        matrix(str(other), [tmp_path / "cardio"], records(4), progress=False)
    # the accuracy matrix checks every adapter, and names the one trained on another base
    import shutil

    shutil.copytree(tmp_path / "cardio", tmp_path / "stranger")
    manifest = json.loads((tmp_path / "stranger" / "manifest.json").read_text())
    (tmp_path / "stranger" / "manifest.json").write_text(json.dumps({**manifest, "base_weights_sha256": "0" * 64}))
    with pytest.raises(
        ModelLoadError, match=r"stranger' \(Cardiology#2\) was trained on a base with weights sha256 000000"
    ):
        matrix(base, [tmp_path / "cardio", tmp_path / "stranger"], records(4), progress=False)


def test_a_duplicated_answer_text_is_correct_at_either_copy_and_ties_go_first():
    """MedMCQA-style options that repeat the answer's text (answer 'C' of ('x', 'y', 'x')): the record
    holds the answer as text, so picking either copy is correct, not only the first copy's letter."""
    from specprobe.core.scoring import ScoredItem
    from specprobe.finetune.evaluation import _option_rows

    rec = QARecord("d", "q?", ("x", "y", "x"), "x")
    per = [(1, 1, False, False)] * 3

    def row(logps):
        return _option_rows("m", [rec], [per], [ScoredItem(np.array([v])) for v in logps])[0]

    third = row([-3.0, -2.0, -1.0])
    assert third["pred"] == 2 and third["answer_index"] == 0 and third["correct"] and third["correct_norm"]
    assert not row([-3.0, -1.0, -2.0])["correct"]
    tie = row([-1.0, -1.0, -1.0])  # a tie goes to the first option
    assert tie["pred"] == 0 and tie["pred_norm"] == 0


def test_flagged_questions_are_warned_once_over_models(caplog):
    import pandas as pd

    from specprobe.finetune.evaluation import warn_flags

    frame = pd.DataFrame(
        {
            "model": ["base", "base", "tuned", "tuned"],
            "truncated": [True, False, True, False],
            "straddles": [False, True, False, True],
        }
    )
    with caplog.at_level("WARNING", logger="specprobe.finetune.evaluation"):
        warn_flags(frame, 2, 64)
    text = caplog.text
    assert "1 of 2 scored questions were longer than 64 tokens" in text
    assert "1 of 2 scored questions have an option whose first token also covers the end of the prompt" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="specprobe.finetune.evaluation"):
        warn_flags(frame.assign(truncated=False, straddles=False), 2, 64)
    assert not caplog.text


def _matrix_of(cells: dict[tuple[str, str], float], n: int = 10) -> AccuracyMatrix:
    """An AccuracyMatrix with the given (model, specialty) accuracies (n questions each, none elsewhere);
    a model named after a specialty is trained on it."""
    import pandas as pd

    from specprobe.finetune.accuracy_matrix import from_items

    rows = [
        {"model": m, "item_id": f"{s}{q}", "specialties": (s,), "correct": q < acc * n, "correct_norm": q < acc * n}
        for (m, s), acc in cells.items()
        for q in range(n)
    ]
    models = dict.fromkeys(m for m, _ in cells)
    return from_items(pd.DataFrame(rows), {m: m for m in models if m != "base"}, {})


def test_contrast_with_a_missing_cell_is_not_tested_not_significant(caplog):
    """An adapter without an accuracy on one of the own specialties (e.g. lm-eval samples without that
    task): the statistic is NaN, and so was every permuted one, so "permuted >= observed" never held and
    p was its floor, 1 / (1 + n_perm). Now: no p-value, and which cells are missing."""
    specs = ("A", "B", "C")
    full = {(m, s): (0.9 if m == s else 0.3) for m in ("base", *specs) for s in specs}
    c = _matrix_of(full).contrast(n_perm=999)
    assert c.attrs["mean_diff"] == pytest.approx(0.6) and c.attrs["p_value"] < 0.2  # 1 / 3! = 0.167 exact
    holed = _matrix_of({k: v for k, v in full.items() if k != ("C", "A")})
    with caplog.at_level("WARNING"):
        c = holed.contrast(n_perm=999)
    assert math.isnan(c.attrs["mean_diff"]) and math.isnan(c.attrs["p_value"])
    assert c.attrs["untested"] == ["C on A"] and "C on A" in caplog.text
    assert "not tested (no acc of C on A)" in holed.summary()
    assert c.attrs["n_best"] == 3 and c.attrs["mean_diag"] == pytest.approx(0.9)


def test_contrast_p_does_not_depend_on_the_order_of_the_models():
    """The Monte-Carlo permutations were drawn over the adapters in the order they were given, so the same
    matrix with its models listed in another order gave another p (0.6663 / 0.6670 / 0.6641 here)."""
    rng = np.random.default_rng(3)
    specs = ("A", "B", "C", "D")
    cells = {(m, s): round(rng.uniform(0.3, 0.7) + 0.08 * (m == s), 1) for m in ("base", *specs) for s in specs}
    ps = set()
    for order in (("base", "A", "B", "C", "D"), ("base", "D", "C", "B", "A"), ("base", "B", "D", "A", "C")):
        c = _matrix_of({(m, s): cells[(m, s)] for m in order for s in specs}).contrast(n_perm=2000)
        ps.add((c.attrs["mean_diff"], c.attrs["p_value"]))
    assert len(ps) == 1


def test_contrast_without_the_own_adapters_cell_is_an_untested_row(caplog):
    """An adapter without an accuracy on its OWN specialty: `int(n)` of the missing cell raised "cannot
    convert float NaN to integer", so contrast(), summary() and the experiment report crashed. Now that row
    is untested (no own accuracy, difference or rank; not best), named in `untested`, with a warning."""
    import pandas as pd

    specs = ("A", "B", "C")
    cells = {(m, s): (0.9 if m == s else 0.3) for m in ("base", *specs) for s in specs if (m, s) != ("C", "C")}
    m = _matrix_of(cells)
    with caplog.at_level("WARNING"):
        c = m.contrast(n_perm=999)
    assert "C on C" in caplog.text and c.attrs["untested"] == ["C on C"]
    row = c.set_index("specialty").loc["C"]
    assert math.isnan(row["own_acc"]) and math.isnan(row["diff"]) and math.isnan(row["gain"])
    assert row["rank"] is pd.NA and not row["is_best"] and row["n"] == 0 and row["n_adapters"] == 2
    assert row["others_mean"] == pytest.approx(0.3)  # the other adapters' results are still there
    assert c.attrs["n_best"] == 2 and math.isnan(c.attrs["p_value"]) and math.isnan(c.attrs["mean_diff"])
    assert "not tested (no acc of C on C)" in m.summary()


def test_contrast_counts_the_adapters_each_rank_is_among():
    """A missing other adapter's cell: the own adapter is ranked among fewer adapters (n_adapters), not all."""
    specs = ("A", "B", "C")
    cells = {(m, s): (0.9 if m == s else 0.3) for m in ("base", *specs) for s in specs if (m, s) != ("A", "B")}
    c = _matrix_of(cells).contrast(n_perm=99)
    assert list(c["n_adapters"]) == [3, 2, 3] and c.attrs["n_adapters"] == 3 and list(c["rank"]) == [1, 1, 1]


def test_a_ready_pair_is_evaluated_with_its_adapters_trained_format(tiny_llama, tmp_path):
    """`evaluate(ModelPair.load(base, adapter))` reads the adapter's manifest as `evaluate(base, data, adapter)`
    does: before, it scored the default letter prompt for an adapter trained on another format."""
    import shutil

    from specprobe.core.models import ModelPair

    base, lora = tiny_llama
    adapter = tmp_path / "text-lora"
    shutil.copytree(lora, adapter)
    trained = PromptFormat("Q: {question}\n{options}\nA:", continuation="text")
    (adapter / "manifest.json").write_text(json.dumps({"prompt": trained.to_dict(), "specialty": ["Cardiology"]}))
    by_path = evaluate(str(base), records(4), adapter, progress=False)
    by_pair = evaluate(ModelPair.load(str(base), str(adapter)), records(4), progress=False)
    assert by_path.metadata["prompt"] == by_pair.metadata["prompt"] == trained.to_dict()
    assert by_pair.metadata["adapter_trained_on"] == ["Cardiology"]
    assert by_pair.to_pandas()["option_logp"].tolist() == by_path.to_pandas()["option_logp"].tolist()


def test_an_option_that_cannot_be_encoded_names_its_question(tiny_llama):
    """A continuation longer than max_length: the error names the question and option (before: no item)."""
    recs = [*records(2), QARecord("long", "q?", ("a", "b " * 40, "c"), "a")]
    with pytest.raises(ValueError, match=r"^question 'long', option B: the continuation alone \(\d+ tokens\) does not"):
        evaluate(str(tiny_llama[0]), recs, continuation="text", max_length=16, progress=False)


def test_a_snapshot_is_evaluated_with_its_runs_trained_format(tiny_llama, tmp_path):
    """OUT/snapshots/step-N has no manifest of its own: its run's prompt format is the one it was trained
    with (before: the default letter prompt); a snapshot the run does not list gets no format from it."""
    import shutil

    base, lora = tiny_llama
    trained = PromptFormat("Q: {question}\n{options}\nA:", continuation="text")
    snap = tmp_path / "run" / "snapshots" / "step-00000002"
    shutil.copytree(lora, snap)
    shutil.copytree(lora, snap.parent / "step-00000009")  # not listed
    manifest = {
        "prompt": trained.to_dict(),
        "specialty": ["Cardiology"],
        "snapshots": [{"step": 2, "path": f"snapshots/{snap.name}"}],
    }
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate(str(base), records(4), snap, progress=False).metadata["prompt"] == trained.to_dict()
    assert evaluate(str(base), records(4), snap.parent / "step-00000009", progress=False).metadata["prompt"] == (
        PromptFormat().to_dict()
    )
    m = matrix(str(base), {"Cardiology": snap}, records(4), progress=False)
    assert m.metadata["prompt"] == trained.to_dict() and m.trained_on()["Cardiology"] == "Cardiology"


def test_contrast_says_how_many_best_cells_are_ties():
    """Adapters all at the same accuracy were each 'best on 3/3 specialties' in the summary line, the
    ties unsaid (the finding said 'ties included', the line did not)."""
    specs = ("A", "B", "C")
    tied = _matrix_of({(m, s): 0.5 for m in specs for s in specs}).contrast(n_perm=99)
    assert tied.attrs["n_best"] == 3 and tied.attrs["n_tied"] == 3
    assert (
        "best on 3/3 specialties (3 of them tied with another adapter)"
        in _matrix_of({(m, s): 0.5 for m in specs for s in specs}).summary()
    )
    clear = _matrix_of({(m, s): (0.9 if m == s else 0.3) for m in specs for s in specs}).contrast(n_perm=99)
    assert clear.attrs["n_tied"] == 0
