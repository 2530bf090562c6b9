"""The general-text control: the shipped WordNet texts (with their licence), per-text log-probs equal to a
plain full-forward reference, the row beside a Comparison's control words, and the expected sign on the
demo model: fine-tuning on clinical questions makes general English less likely."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specprobe.probe.analyses import (
    GeneralTextShift,
    general_text_control,
    general_text_files,
    general_text_row,
    with_general_text,
)
from specprobe.probe.analyses.general_text import GENERAL_TEXT, default_texts

DATA = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "general"
DEMO = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "demo"
TEXTS = [
    "amicable: characterized by friendship and good will.",
    "The river rose after three days of rain, and the old bridge was closed.",
    {"id": "long", "text": " ".join(["a quiet morning in the garden"] * 40)},
]


def test_the_shipped_texts_and_their_licence():
    texts = default_texts()
    readme = (DATA / "README.md").read_text()
    assert len(texts) == sum(1 for line in (DATA / "wordnet_heldout.jsonl").read_text().splitlines() if line.strip())
    assert len({t["id"] for t in texts}) == len(texts) and all(t["text"].strip() for t in texts)
    assert "Princeton University" in (DATA / "WORDNET_LICENSE").read_text()
    assert "WORDNET_LICENSE" in readme and f"{len(texts)} texts" in readme


def test_per_text_logprobs_equal_a_plain_reference(tiny_llama):
    from reference import load_plain, plain_ids, plain_logp

    base, adapter = tiny_llama
    shift = general_text_control(str(base), TEXTS, tuned=str(adapter), max_length=64)
    df = shift.to_pandas().set_index("text_id")
    tuned_model, tok = load_plain(base, adapter)
    base_model, _ = load_plain(base)
    for tid, text in [("g0", TEXTS[0]), ("g1", TEXTS[1]), ("long", TEXTS[2]["text"])]:
        ids = plain_ids(tok, text)[0][:64]
        ref_b, ref_t = float(plain_logp(base_model, ids).sum()), float(plain_logp(tuned_model, ids).sum())
        assert df.loc[tid, "n_tokens"] == len(ids) - 1
        assert abs(df.loc[tid, "logp_base"] - ref_b) < 1e-4 and abs(df.loc[tid, "logp_tuned"] - ref_t) < 1e-4
    assert bool(df.loc["long", "truncated"]) and not df.loc[["g0", "g1"], "truncated"].any()
    assert shift.extras["n_truncated"] == 1
    # the summary row: token-weighted mean of the per-text deltas
    row = shift.row(n_boot=200)
    assert row["n"] == df["n_tokens"].sum() and row["n_texts"] == len(TEXTS)
    assert math.isclose(row["mean_delta_per_token"], df["delta"].sum() / df["n_tokens"].sum(), rel_tol=1e-9)


def test_bad_texts_are_refused_by_index(tiny_llama):
    base, adapter = tiny_llama
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        general_text_control(str(base), ["fine", {"no_text": 1}], tuned=str(adapter))
    with pytest.raises(ValueError, match="'x' is given twice"):
        general_text_control(str(base), [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}], tuned=str(adapter))
    with pytest.raises(ValueError, match="needs a tuned model"):
        general_text_control(str(base), ["a text"])


@pytest.fixture(scope="module")
def demo_shift(tmp_path_factory):
    """The demo base (trained on WordNet text) with a LoRA trained briefly on the demo's Cardiology questions
    (the demo's learning rate and continuation, 6 steps of 4)."""
    from specprobe.finetune import train

    root = tmp_path_factory.mktemp("general")
    run = train(
        str(DEMO / "model"), DEMO / "questions.json", "Cardiology", root / "cardio", max_steps=6, batch_size=4,
        learning_rate=2e-3, continuation="text", warmup_ratio=0.0, progress=False,
    )  # fmt: skip
    return root, run.path, general_text_files(DEMO / "model", run.path, root / "general.json.gz", batch_size=32)


def test_clinical_finetuning_makes_general_text_less_likely(demo_shift):
    _, _, shift = demo_shift
    print("\n" + shift.summary())
    row = shift.row()
    assert row["n_texts"] == len(default_texts())
    assert row["ci_high"] < 0, "general English should become less likely after clinical fine-tuning"


def test_row_beside_the_control_words_report_and_cli(demo_shift, tmp_path):
    from specprobe.app.cli import main
    from specprobe.probe import compare
    from specprobe.terms.datasets import load_qa

    root, adapter, shift = demo_shift
    again = GeneralTextShift.load(root / "general.json.gz")
    assert isinstance(again, GeneralTextShift) and again.to_pandas().equals(shift.to_pandas())
    records = [r.as_text_record() for r in load_qa(DEMO / "questions.json")][:16]
    terms = {"metoprolol": ["Cardiology"], "echocardiography": ["Cardiology"], "seizure": ["Neurology"]}
    comp = compare(str(DEMO / "model"), str(adapter), terms, records, progress=False)
    table = with_general_text(comp.by_specialty(n_boot=200), shift, n_boot=200)
    assert list(table["specialty"])[-2:] == ["control", GENERAL_TEXT]
    assert table.iloc[-1]["mean_delta_per_token"] == general_text_row(shift, n_boot=200)["mean_delta_per_token"]
    print("\n" + table[["specialty", "n", "n_texts", "mean_delta_per_token", "ci_low", "ci_high"]].to_string())
    comp_path = comp.save(tmp_path / "comparison.json.gz")
    few = tmp_path / "few.jsonl"  # the command line on a few of the shipped texts (fast)
    few.write_text("".join(json.dumps(t) + "\n" for t in default_texts()[:12]))
    out = tmp_path / "out"
    argv = ["analyze", "general-text", "--base", str(DEMO / "model"), "--adapter", str(adapter)]
    assert main([*argv, "--texts", str(few), "--comparison", str(comp_path), "--out", str(out), "--report"]) == 0
    saved = pd.read_csv(out / "general_text.csv")
    assert list(saved["specialty"]) == [*comp.by_specialty()["specialty"], GENERAL_TEXT]
    cli_shift = GeneralTextShift.load(out / "general_text.json.gz")
    assert len(cli_shift) == 12 and np.isclose(
        saved.iloc[-1]["mean_delta_per_token"], cli_shift.row()["mean_delta_per_token"]
    )
    assert np.allclose(cli_shift.to_pandas()["delta"], shift.to_pandas()["delta"][:12], atol=1e-4)  # other batches
    html = (out / "general_text.html").read_text()
    assert "General-text control" in html and "control" in html
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"id": "a", "text": "x"}) + "\nnot json\n")
    assert main([*argv, "--texts", str(texts), "--out", str(tmp_path / "o2")]) == 2  # names the line


def test_row_of_texts_with_no_scored_token_has_no_means():
    """One-token texts only (nothing conditioned to score): the per-token log-probabilities are NaN, not
    0.0 (a sum over no tokens divided by a token count floored at 1, which reads as probability 1)."""
    empty = {"n_tokens": 0, "logp_base": math.nan, "logp_tuned": math.nan, "delta": math.nan}
    rows = [{"text_id": f"g{i}", **empty, "delta_per_token": math.nan, "truncated": False} for i in range(2)]
    row = general_text_row(GeneralTextShift(pd.DataFrame(rows, columns=GeneralTextShift.columns), {}), n_boot=50)
    assert row["n"] == 0 and row["n_texts"] == 0
    assert all(math.isnan(row[k]) for k in ("mean_delta_per_token", "mean_logp_base", "mean_logp_tuned"))
    one = {"text_id": "g2", "n_tokens": 4, "logp_base": -8.0, "logp_tuned": -6.0, "delta": 2.0}
    rows.append({**one, "delta_per_token": 0.5, "truncated": False})
    row = general_text_row(GeneralTextShift(pd.DataFrame(rows, columns=GeneralTextShift.columns), {}), n_boot=50)
    assert (row["n"], row["mean_logp_base"], row["mean_logp_tuned"], row["mean_delta_per_token"]) == (
        4,
        -2.0,
        -1.5,
        0.5,
    )


@pytest.mark.parametrize(
    "content, message",
    [
        # was: "'utf-8' codec can't decode byte 0xe9 in position 3: invalid continuation byte" (no file)
        ("caf\u00e9 au lait\nhouse\n".encode("latin-1"), r"texts\.txt: not valid UTF-8 at byte 3 \(line 1"),
        ("a quiet morning\n".encode("utf-16"), r"texts\.txt: not valid UTF-8 at byte 0 \(line 1"),
        # was: "texts: no text given", once both models had loaded
        (b"\n \n", r"texts\.txt: no text in the file \(expected one text a line\)"),
    ],
)
def test_a_texts_file_that_cannot_be_read_is_named_before_any_model_loads(tmp_path, capsys, content, message):
    from specprobe.app.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_bytes(content)
    out = tmp_path / "out"
    argv = ["analyze", "general-text", "--base", str(tmp_path / "no-model"), "--adapter", str(tmp_path / "no-adapter")]
    assert main([*argv, "--texts", str(texts), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(r"error: --texts \S*" + message, err), err
    assert not out.exists()


def test_read_general_texts_names_the_file_of_an_empty_or_textless_jsonl(tmp_path):
    from specprobe.probe.analyses.model_files import read_general_texts

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^texts file \S*empty\.jsonl: no text in the file"):
        read_general_texts(empty)
    textless = tmp_path / "ids.jsonl"
    textless.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"ids\.jsonl: line 2: no \"text\" string"):  # was: texts[1]: ... (no file)
        read_general_texts(textless)
    with pytest.raises(IsADirectoryError, match=r"a folder, not a \.jsonl file"):
        read_general_texts(tmp_path)


def test_a_max_length_past_the_models_context_is_refused(tiny_llama):
    """max_length beyond the context scored positions the model never had (RoPE) or crashed (GPT-2); 0 meant
    'the model's context'. Both are errors now, as in compare and evaluate."""
    base, adapter = tiny_llama
    with pytest.raises(ValueError, match="longer than the model's context"):
        general_text_control(str(base), TEXTS, tuned=str(adapter), max_length=100_000)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        general_text_control(str(base), TEXTS, tuned=str(adapter), max_length=0)


def test_a_comparison_of_other_models_is_not_put_beside_the_row(tiny_llama, tmp_path, capsys):
    """--comparison of another adapter (or base) than --base/--adapter: its control words would stand
    beside another model's general-text row (it was written, rc 0); now refused, naming both weights."""
    from specprobe.app.cli import main
    from specprobe.probe import compare
    from specprobe.probe.comparison import Comparison
    from specprobe.testing.tiny_models import build_tiny_adapter

    base, adapter_a = tiny_llama
    adapter_b = build_tiny_adapter(base, "llama", tmp_path / "B", seed=2)
    comp = compare(str(base), str(adapter_a), ["river"], [TEXTS[1]], controls=["old"], progress=False)
    other_base = Comparison(comp.to_pandas(), {**comp.metadata, "base_weights_sha256": "f" * 64}, comp.extras)
    few = tmp_path / "few.txt"
    few.write_text(f"{TEXTS[0]}\n{TEXTS[1]}\n")
    argv = ["analyze", "general-text", "--base", str(base), "--texts", str(few), "--no-progress"]
    for adapter, c, weights in ((adapter_b, comp, "adapter"), (adapter_a, other_base, "base")):
        path = c.save(tmp_path / f"{weights}.json.gz")
        out = tmp_path / f"out-{weights}"
        assert main([*argv, "--adapter", str(adapter), "--comparison", str(path), "--out", str(out)]) == 2
        assert f"was made with {weights} weights sha256" in capsys.readouterr().err
        assert not (out / "general_text.csv").exists()
    good = comp.save(tmp_path / "good.json.gz")
    assert main([*argv, "--adapter", str(adapter_a), "--comparison", str(good), "--out", str(tmp_path / "ok")]) == 0
