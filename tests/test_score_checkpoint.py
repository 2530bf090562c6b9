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
    # the finished batches are not run again, but the first and last stored of each model are, as the check
    assert len(calls) == n_batches - kill_after + _checks(kill_after)
    assert not folder.exists()  # removed once the comparison is made


def _checks(stored: int, per_model: int = 3) -> int:
    """Check batches a resume runs when `stored` batches are stored, base's (`per_model`) first: the first
    and the last stored batch of each model that has any."""
    return sum(min(2, n) for n in (min(stored, per_model), max(0, stored - per_model)))


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
    assert len(calls) == 3  # the check batches (first, and last: the unreadable one), and the third
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_a_checkpoint_is_refused_with_whole_layer_states(pair, tmp_path):
    """Reduced layer rows (the lens's) are kept; whole residual streams would be too large to keep."""
    with pair.view("base") as split, pytest.raises(ValueError, match="not whole layer states"):
        scoring.score_items(split, _items(pair), capture_layers=True, checkpoint=ScoreCheckpoint(tmp_path, {}))


def test_an_adapter_edited_in_place_starts_afresh(tiny_llama, tmp_path, monkeypatch):
    """The adapter's config is part of the key (its weights file was, alone): an alpha changed in place
    after a kill gives the new adapter's numbers, not its stored batches."""
    import json
    import shutil

    adapter = shutil.copytree(tiny_llama[1], tmp_path / "adapter")
    folder = tmp_path / "partial"
    _counting(monkeypatch, kill_after=5)
    with pytest.raises(Killed):
        _compare(ModelPair.load(str(tiny_llama[0]), str(adapter)), checkpoint=folder)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_alpha"] = config["lora_alpha"] * 1.05
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    monkeypatch.undo()
    edited = ModelPair.load(str(tiny_llama[0]), str(adapter))
    assert _compare(edited, checkpoint=folder).to_pandas().equals(_compare(edited).to_pandas())


def test_batches_outlive_a_failed_save_and_stale_runs_go_with_success(tiny_llama, tmp_path, monkeypatch):
    """`specprobe compare` removes its batches only once its results are written (a failed save kept
    nothing: every batch scored again), and then every run's, also those of a run with other options."""
    from specprobe.app.cli import main
    from specprobe.probe import Comparison

    argv, out = _cli_args(tiny_llama, tmp_path)

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Comparison, "save", full_disk)
    assert main([*argv, "--batch-size", "2"]) == 2
    assert len(list((out / "partial-scores").glob("*/run-*/batch-*.npz"))) == 6
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    assert main([*argv, "--batch-size", "2"]) == 0
    assert len(calls) == 4  # nothing but the check batches: the first and last of each model
    assert not (out / "partial-scores").exists()
    monkeypatch.setattr(scoring, "_score_batch", _killing(1))
    assert main([*argv, "--batch-size", "2", "--overwrite"]) == 130
    monkeypatch.undo()
    assert main([*argv, "--batch-size", "3", "--overwrite"]) == 0  # another key: the stale batches go too
    assert not (out / "partial-scores").exists()


def _killing(after: int):
    def batch(*args, **kwargs):
        if batch.calls == after:
            raise KeyboardInterrupt
        batch.calls += 1
        return _SCORE_BATCH(*args, **kwargs)

    batch.calls = 0
    return batch


def _cli_args(tiny_llama, tmp_path):
    import json

    terms, data = tmp_path / "terms.json", tmp_path / "qa.json"
    terms.write_text(json.dumps(TERMS))
    records = [{"Question": t, "Specialty": "Cardiology", "Options": ["a", "b"], "Answer": "a"} for t in TEXTS]
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    argv = ["compare", "--base", str(tiny_llama[0]), "--tuned", str(tiny_llama[1]), "--terms", str(terms)]
    argv += ["--data", str(data), "--out", str(out), "--controls", "none", "--no-progress"]
    return argv, out


def test_a_discard_removes_only_the_batches_it_names(tmp_path):
    """Under data parallelism ranks share the folder: one rank's discard must leave the others' batches."""
    store = ScoreCheckpoint(tmp_path, {}).for_run([], [[0], [1], [2]])
    for j in range(3):
        store.save(j, {"logps": {j: np.array([-1.0 * j])}})
    store.discard([0, 2], "a test")
    assert store.finished() == {1} and store.load(1)["logps"][1].tolist() == [-1.0]


def test_specprobe_compare_rerun_after_an_interrupt_resumes(tiny_llama, tmp_path, monkeypatch):
    """`specprobe compare --out` keeps finished batches in --out/partial-scores while it runs; the same
    command rerun after Ctrl-C scores only what was left (and the check batches), then removes them."""
    from specprobe.app.cli import main

    argv, out = _cli_args(tiny_llama, tmp_path)
    argv += ["--batch-size", "2"]
    monkeypatch.setattr(scoring, "_score_batch", _killing(4))
    assert main(argv) == 130
    assert len(list((out / "partial-scores").glob("*/run-*/batch-*.npz"))) == 4
    calls = _counting(monkeypatch)
    assert main(argv) == 0
    assert len(calls) == 6 - 4 + _checks(4)  # the two left, and the check batches
    assert (out / "comparison.json.gz").is_file() and not (out / "partial-scores").exists()


def test_a_killed_logit_lens_resumes_and_equals_the_uninterrupted_one(pair, tmp_path, monkeypatch):
    """`layers` keeps each batch's lens rows (the reduced layer states) beside its log-probabilities."""
    from specprobe.probe import layers

    def lens(**kwargs):
        return layers(pair, terms=TERMS, texts=TEXTS, controls=None, batch_size=2, progress=False, **kwargs)

    full = lens().to_pandas()
    folder = tmp_path / "partial"
    monkeypatch.setattr(scoring, "_score_batch", _killing(4))
    with pytest.raises(KeyboardInterrupt):
        lens(checkpoint=folder)
    assert {p.parent.parent.name for p in folder.glob("*/run-*/batch-*.npz")} == {"lens-base", "lens-tuned"}
    calls = _counting(monkeypatch)
    assert lens(checkpoint=folder).to_pandas().equals(full)
    assert len(calls) == 6 - 4 + _checks(4) and not folder.exists()


def test_specprobe_layers_rerun_after_an_interrupt_resumes(tiny_llama, tmp_path, monkeypatch):
    from specprobe.app.cli import main

    argv, out = _cli_args(tiny_llama, tmp_path)
    argv = ["layers", *argv[1:], "--batch-size", "2"]
    monkeypatch.setattr(scoring, "_score_batch", _killing(3))
    assert main(argv) == 130
    assert len(list((out / "partial-scores").glob("lens-*/run-*/batch-*.npz"))) == 3
    calls = _counting(monkeypatch)
    assert main(argv) == 0
    assert len(calls) == 6 - 3 + _checks(3)
    assert (out / "layers.json.gz").is_file() and not (out / "partial-scores").exists()
