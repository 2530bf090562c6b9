"""A scoring run killed part-way resumes from its finished batches (`specprobe.core.checkpoint`): the result
equals an uninterrupted run's exactly, only the unfinished batches (and one check batch) run again, and
stored batches of another model are discarded, never mixed in."""

from __future__ import annotations

import numpy as np
import pytest

import specprobe.core.scoring as scoring
from specprobe.core.checkpoint import ScoreCheckpoint
from specprobe.probe import ModelPair, compare

TEXTS = [
    "Myocardial infarction is suspected; chest pain again.",
    "The patient had a seizure, then another seizure and chest pain.",
    "Cirrhosis, nephrotic syndrome and psoriasis: three conditions.",
    "Chest pain at rest, no seizure, no cirrhosis.",
    "Psoriasis flared after the seizure medication was changed.",
]
TERMS = {
    "myocardial infarction": ["Cardiology"],
    "chest pain": ["Cardiology"],
    "seizure": ["Neurology"],
    "cirrhosis": ["Gastroenterology"],
    "psoriasis": ["Dermatology"],
}


_SCORE_BATCH = scoring._score_batch  # the real one, which every counting wrapper below calls


class Killed(Exception):
    """Stands for the process being killed mid-run."""


def _counting(monkeypatch, kill_after: int | None = None) -> list[int]:
    """Count the forward passes of `score_items`; raise `Killed` instead of the pass after `kill_after`."""
    calls: list[int] = []

    def batch(*args, **kwargs):
        if kill_after is not None and len(calls) >= kill_after:
            raise Killed
        calls.append(1)
        return _SCORE_BATCH(*args, **kwargs)

    monkeypatch.setattr(scoring, "_score_batch", batch)
    return calls


def _compare(pair, **kwargs):
    return compare(pair, terms=TERMS, texts=TEXTS, controls=None, batch_size=2, progress=False, **kwargs)


@pytest.fixture(scope="module")
def pair(tiny_llama):
    return ModelPair.load(str(tiny_llama[0]), str(tiny_llama[1]))


@pytest.mark.parametrize("kill_after", [1, 3, 5])
def test_a_killed_compare_resumes_and_equals_the_uninterrupted_one(pair, tmp_path, monkeypatch, kill_after):
    calls = _counting(monkeypatch)
    full = _compare(pair).to_pandas()
    n_batches = len(calls)
    assert n_batches == 6  # 5 texts in batches of 2, for base and tuned: 3 + 3
    folder = tmp_path / "partial"
    _counting(monkeypatch, kill_after=kill_after)
    with pytest.raises(Killed):
        _compare(pair, checkpoint=folder)
    assert len(list(folder.glob("*/run-*/batch-*.npz"))) == kill_after
    calls = _counting(monkeypatch)
    resumed = _compare(pair, checkpoint=folder).to_pandas()
    assert resumed.equals(full)
    # the finished batches are not run again, but the first stored one of each model is, as the check
    assert len(calls) == n_batches - kill_after + (1 if kill_after <= 3 else 2)
    assert not folder.exists()  # removed once the comparison is made


def test_batches_of_a_changed_model_are_discarded_not_mixed_in(pair, tiny_llama, tmp_path, monkeypatch, caplog):
    """The same identity (as a model changed in place under its path would give) but other weights: the
    check batch disagrees, the stored batches go, and the result is the new model's alone."""
    items = _items(pair)
    checkpoint = ScoreCheckpoint(tmp_path / "c", {"model": "same name"})
    with pair.view("tuned") as tuned:
        _counting(monkeypatch, kill_after=2)
        with pytest.raises(Killed):
            scoring.score_items(tuned, items, batch_size=2, checkpoint=checkpoint)
    monkeypatch.undo()
    with pair.view("base") as base:
        want = [s.logps for s in scoring.score_items(base, items, batch_size=2)]
        got = [s.logps for s in scoring.score_items(base, items, batch_size=2, checkpoint=checkpoint)]
    assert "discarding 2 stored batch(es)" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def _items(pair):
    from specprobe.probe.options import ProbeOptions
    from specprobe.probe.prepare import prepare

    return prepare(pair, TERMS, TEXTS, ProbeOptions(controls=None, progress=False)).items


def test_an_unreadable_stored_batch_is_scored_again(pair, tmp_path, monkeypatch):
    items = _items(pair)
    checkpoint = ScoreCheckpoint(tmp_path / "c", {"model": "x"})
    with pair.view("tuned") as tuned:
        want = [s.logps for s in scoring.score_items(tuned, items, batch_size=2)]
        _counting(monkeypatch, kill_after=2)
        with pytest.raises(Killed):
            scoring.score_items(tuned, items, batch_size=2, checkpoint=checkpoint)
        stored = sorted((tmp_path / "c").glob("run-*/batch-*.npz"))
        stored[-1].write_bytes(b"not a batch")  # the last one, so the check batch (the first) reads fine
        calls = _counting(monkeypatch)
        got = [s.logps for s in scoring.score_items(tuned, items, batch_size=2, checkpoint=checkpoint)]
    assert len(calls) == 3  # the check batch, the unreadable one, and the third, never stored
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_a_checkpoint_is_refused_with_layer_capture(pair, tmp_path):
    with pair.view("base") as split, pytest.raises(ValueError, match="log-probabilities only"):
        scoring.score_items(split, _items(pair), capture_layers=True, checkpoint=ScoreCheckpoint(tmp_path, {}))


def test_specprobe_compare_rerun_after_an_interrupt_resumes(tiny_llama, tmp_path, monkeypatch):
    """`specprobe compare --out` keeps finished batches in --out/partial-scores while it runs; the same
    command rerun after Ctrl-C scores only what was left (and the check batches), then removes them."""
    import json

    from specprobe.app.cli import main

    terms, data = tmp_path / "terms.json", tmp_path / "qa.json"
    terms.write_text(json.dumps(TERMS))
    records = [{"Question": t, "Specialty": "Cardiology", "Options": ["a", "b"], "Answer": "a"} for t in TEXTS]
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    argv = ["compare", "--base", str(tiny_llama[0]), "--tuned", str(tiny_llama[1]), "--terms", str(terms)]
    argv += ["--data", str(data), "--out", str(out), "--batch-size", "2", "--controls", "none", "--no-progress"]

    def interrupted(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return _SCORE_BATCH(*args, **kwargs)

    calls: list[int] = []
    monkeypatch.setattr(scoring, "_score_batch", interrupted)
    assert main(argv) == 130
    assert len(list((out / "partial-scores").glob("*/run-*/batch-*.npz"))) == 4
    calls = _counting(monkeypatch)
    assert main(argv) == 0
    assert len(calls) == 6 - 4 + 2  # the two left, and one check batch per model
    assert (out / "comparison.json.gz").is_file() and not (out / "partial-scores").exists()
