"""Stage keys hold the effective options: an option set to its default keys like one left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from specprobe.app.experiment_stages import ProbeInputs, accuracy_key, adapter_key, general_text_stage, split_key
from specprobe.app.stages import stage_key

#: non-default [train] options (what a run that leaves the others out writes); the keys below are those
#: specprobe computed for them before defaults were dropped, so existing run folders are still found
PLAIN = {"epochs": 1, "learning_rate": 1e-3, "save_steps": [1], "report_to": "tensorboard", "save_every": 2}


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    (data := tmp_path / "train.json").write_text("[]")
    (lexicon := tmp_path / "lexicon.json").write_text('{"meta": {}}')
    (adapter := tmp_path / "adapter").mkdir(exist_ok=True)
    return data, lexicon, adapter


def _keys(tmp_path: Path, train: dict, compare: dict) -> tuple[str, str, str]:
    data, lexicon, adapter = _inputs(tmp_path)
    split = split_key("d", 0.2, 0)
    probe = ProbeInputs("base", "b", train, data, None, compare, 0).key(adapter, lexicon, [])
    return (
        stage_key("adapter", adapter_key("b", split, data, "Cardiology", train)),
        stage_key("accuracy", accuracy_key("b", split, {"x": str(adapter)}, train, data)),
        stage_key("compare", probe),
    )


def test_keys_of_runs_that_left_options_out_are_unchanged(tmp_path):
    assert _keys(tmp_path, PLAIN, {"batch_size": 16}) == (
        "adapter-e25c3bbb4598",
        "accuracy-83353c6350eb",
        "compare-6ef57abed61c",
    )


@pytest.mark.parametrize(
    "defaults",
    [
        {"rank": 8},
        {"alpha": 16},  # an int for the float default 16.0: the same value
        {"scheduler": "cosine", "max_steps": None, "target_modules": None, "append_eos": True},
        {"revision": None, "trust_remote_code": False},
    ],
)
def test_train_option_set_to_its_default_keys_like_one_left_out(tmp_path, defaults):
    """`rank = 8` in [train] (the default) gave every stage from the adapter on a new key: rerun, and an
    interrupted run's checkpoints were not found."""
    assert _keys(tmp_path, {**PLAIN, **defaults}, {"batch_size": 16}) == _keys(tmp_path, PLAIN, {"batch_size": 16})


def test_compare_option_set_to_its_default_keys_like_one_left_out(tmp_path):
    explicit = {"batch_size": 16, "controls": "auto", "long_texts": "window", "add_bos": None}
    assert _keys(tmp_path, PLAIN, explicit) == _keys(tmp_path, PLAIN, {"batch_size": 16})


def test_general_text_option_set_to_its_default_keys_like_one_left_out(tmp_path, monkeypatch):
    import specprobe.app.experiment_stages as stages

    folders = []
    monkeypatch.setattr(
        stages, "run_stage", lambda root, name, key, *a, **k: folders.append(stage_key(name, key)) or root
    )
    _, _, adapter = _inputs(tmp_path)
    for compare in ({}, {"batch_size": 8, "max_length": None}, {"batch_size": 4}):
        general_text_stage(tmp_path, "x", str(adapter), "base", "b", compare)
    assert folders[0] == folders[1] != folders[2]


@pytest.mark.parametrize("changed", [{"rank": 4}, {"alpha": 8.0}, {"revision": "main"}, {"append_eos": False}])
def test_a_non_default_train_option_still_changes_the_keys(tmp_path, changed):
    assert all(a != b for a, b in zip(_keys(tmp_path, {**PLAIN, **changed}, {}), _keys(tmp_path, PLAIN, {})))


def test_a_non_default_compare_option_still_changes_the_probe_key(tmp_path):
    assert _keys(tmp_path, PLAIN, {"batch_size": 4})[2] != _keys(tmp_path, PLAIN, {})[2]


def test_an_unfinished_adapter_stage_resumes_with_a_default_spelled_as_an_int(tiny_llama, tmp_path):
    """`alpha = 16` keys like the default 16.0 (one stage folder), but the stage passed it on to training,
    whose run identity hashes 16 and 16.0 apart: an adapter stage stopped before its done marker and rerun
    with `alpha = 16` was refused ("checkpoints/output of a different run ... pass --overwrite")."""
    from specprobe.app.experiment_stages import adapter_stage, write_smedqa
    from specprobe.app.stages import DONE
    from tests.test_finetune_train import make_records

    write_smedqa(data := tmp_path / "train.json", make_records())
    base, train = str(tiny_llama[0]), {"max_steps": 2, "batch_size": 2, "save_every": 1}
    split, say = split_key("d", 0.2, 0), lambda _: None
    first = adapter_stage(tmp_path, "Cardiology", "Cardiology", base, "b", split, data, train, progress=False, say=say)
    (first.parent / DONE).unlink()  # stopped after training, before the stage was marked done
    again = adapter_stage(
        tmp_path, "Cardiology", "Cardiology", base, "b", split, data, {**train, "alpha": 16}, progress=False, say=say
    )
    assert again == first and (again.parent / DONE).is_file()


def test_an_explicit_max_length_beyond_the_context_is_refused_not_capped(tiny_llama, tmp_path):
    """`max_length = 1024` written out equals the default, so it keys like it; but training caps only a
    default at the model's context: written out, a value the model cannot take is an error naming it."""
    from specprobe.app.experiment_stages import adapter_stage, write_smedqa
    from specprobe.finetune.train_options import TrainOptionError
    from tests.test_finetune_train import make_records

    write_smedqa(data := tmp_path / "train.json", make_records())
    base, train = str(tiny_llama[0]), {"max_steps": 1, "batch_size": 2, "max_length": 1024}
    split, say = split_key("d", 0.2, 0), lambda _: None
    with pytest.raises(TrainOptionError, match="max_length.*1024 is longer than the model's context of 128"):
        adapter_stage(tmp_path, "Cardiology", "Cardiology", base, "b", split, data, train, progress=False, say=say)


def test_batch_size_8_keys_like_leaving_it_out():
    """8 rows was every device's default when stage keys dropped defaults; an experiment whose [compare]
    writes `batch_size = 8` keeps its run folders now that the default is by device (8 on a CPU, 64 on a GPU)."""
    from specprobe.app.experiment_stages import compare_key

    assert compare_key({"batch_size": 8, "controls": "auto"}) == compare_key({}) == {}
    assert compare_key({"batch_size": 16}) == {"batch_size": 16}
