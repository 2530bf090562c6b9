"""Reusing finished stages across a specprobe upgrade (`reuse_older`): a stage that another version or
other code finished with the same inputs is taken, after its files are checked, only for the kinds of
stage asked for; everything else is keyed and recomputed as usual."""

from __future__ import annotations

import json

import pytest

import specprobe
from specprobe.app.config import ConfigError
from specprobe.app.experiment import ExperimentConfig, accuracy_done, prepare_run, run_experiment
from specprobe.app.stages import DONE, older_stage, reusing_older, run_stage, stage_kind, written_by_other_code


def _writer(calls: list[str], text: str):
    def produce(folder):
        calls.append(text)
        (folder / "out.txt").write_text(text, encoding="utf-8")

    return produce


def test_a_stage_from_older_code_is_reused_only_when_its_kind_is_named(tmp_path):
    calls: list[str] = []
    old = run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "old"), code=("utils",), say=lambda _: None)
    said: list[str] = []
    with reusing_older(["adapter"]):
        again = run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "new"), code=("terms",), say=said.append)
    assert again == old and calls == ["old"]
    assert said and said[0].startswith("[reuse] adapter-x:") and old.name in said[0]

    with reusing_older(["compare"]):  # another kind: the new code runs the stage
        fresh = run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "new"), code=("terms",), say=said.append)
    assert fresh != old and calls == ["old", "new"]
    assert (fresh / "out.txt").read_text(encoding="utf-8") == "new"


def test_other_inputs_another_stage_or_damaged_files_are_never_reused(tmp_path, monkeypatch):
    calls: list[str] = []
    quiet = {"say": lambda _: None}
    run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "x1"), code=("utils",), **quiet)
    run_stage(tmp_path, "adapter-x-y", {"a": 2}, _writer(calls, "xy"), code=("utils",), **quiet)
    monkeypatch.setattr(specprobe, "__version__", "99.0")  # an upgrade
    with reusing_older(["adapter"]):
        assert older_stage(tmp_path, "adapter-x", {"a": 2}) is None, "adapter-x-y's folder is another stage"
        run_stage(tmp_path, "adapter-x", {"a": 2}, _writer(calls, "x2"), code=("utils",), **quiet)
        assert calls[-1] == "x2", "other inputs"
        found = older_stage(tmp_path, "adapter-x-y", {"a": 2})
        assert found is not None and found[1]["version"] != "99.0"
        (found[0] / "out.txt").write_text("damaged", encoding="utf-8")
        assert older_stage(tmp_path, "adapter-x-y", {"a": 2}) is None, "its files no longer match the marker"
        run_stage(tmp_path, "adapter-x-y", {"a": 2}, _writer(calls, "xy2"), code=("utils",), **quiet)
        assert calls[-1] == "xy2"


def test_an_older_stage_keyed_with_options_written_at_their_defaults_is_reused(tmp_path):
    """Older code keyed `rank = 8` (the default) written out apart from leaving it out; this code drops
    default-valued [train]/[compare] options from keys, so the old demo's adapters (built-in `rank = 8`) were
    never found by reuse_older after an upgrade. Defaults now count as left out on both sides."""
    calls: list[str] = []
    old_inputs = {"base": "b", "train": {"max_steps": 60, "rank": 8, "alpha": 16}, "compare": {"controls": "auto"}}
    old = run_stage(tmp_path, "adapter-x", old_inputs, _writer(calls, "old"), code=("utils",), say=lambda _: None)
    with reusing_older(["adapter"]):
        new_inputs = {"base": "b", "train": {"max_steps": 60}, "compare": {}}
        assert run_stage(tmp_path, "adapter-x", new_inputs, _writer(calls, "new"), code=("terms",)) == old
        assert calls == ["old"]
        assert older_stage(tmp_path, "adapter-x", {"base": "b", "train": {"max_steps": 60, "rank": 16}}) is None
        assert (
            older_stage(tmp_path, "adapter-x", {"base": "b", "train": {"max_steps": 60}, "compare": {"seed": 3}})
            is None
        )


def test_a_damaged_current_stage_falls_back_to_a_reusable_older_one(tmp_path, monkeypatch):
    calls: list[str] = []
    quiet = {"say": lambda _: None}
    old = run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "old"), code=("utils",), **quiet)
    monkeypatch.setattr(specprobe, "__version__", "99.0")
    new = run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "new"), code=("utils",), **quiet)
    (new / "out.txt").write_text("damaged", encoding="utf-8")
    with reusing_older(["adapter"]):
        assert run_stage(tmp_path, "adapter-x", {"a": 1}, _writer(calls, "x"), code=("utils",), **quiet) == old
    assert calls == ["old", "new"]


def test_which_stages_count_as_written_by_other_code(tmp_path, monkeypatch):
    quiet = {"say": lambda _: None}
    folder = run_stage(
        tmp_path, "compare-x", {"k": {"b": 1.5, "a": [1, "é"]}}, _writer([], "x"), code=("utils",), **quiet
    )
    assert written_by_other_code(folder) is None, "this version and code wrote it"
    marker = folder / DONE
    doc = json.loads(marker.read_text(encoding="utf-8"))
    marker.write_text(json.dumps({**doc, "code_parts": ["gone.py"]}), encoding="utf-8")
    assert written_by_other_code(folder) == doc["version"], "code that no longer exists is other code"
    marker.write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(specprobe, "__version__", "99.0")
    assert written_by_other_code(folder) == doc["version"]


def test_stage_kinds_match_whole_names():
    assert stage_kind("accuracy", ["accuracy"]) and stage_kind("accuracy-cardiology", ["accuracy"])
    assert not stage_kind("accuracy_link", ["accuracy"])
    assert stage_kind("general-text-neurology", ["general-text"]) and not stage_kind("compare-x", ["layers", "adapter"])


def test_the_config_names_only_known_kinds(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('reuse_older = ["adapter", "tokenizer"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="reuse_older"):
        ExperimentConfig.from_toml(toml)
    assert ExperimentConfig(reuse_older=["adapter"]).reuse_older == ["adapter"]


@pytest.mark.slow
def test_an_upgrade_reuses_the_adapters_and_redoes_the_rest(tiny_llama, tmp_path, monkeypatch):
    cfg = ExperimentConfig(
        base=str(tiny_llama[0]),
        out=str(tmp_path / "exp"),
        specialties=["Cardiology", "Neurology"],
        include_all=False,
        train={"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "rank": 2, "max_length": 128},
        max_texts=8,
        layers=False,
        analyses=["seen_unseen"],
    )
    first = run_experiment(cfg, progress=False, say=lambda _: None)
    assert "reused_older" not in first.extras, "a fresh run's stages are all current"
    csv = (tmp_path / "exp" / "compare_matrix.csv").read_text(encoding="utf-8")
    version = specprobe.__version__
    monkeypatch.setattr(specprobe, "__version__", "99.0")  # every key changes
    cfg.reuse_older = ["adapter", "lexicon"]
    log: list[str] = []
    second = run_experiment(cfg, progress=False, say=log.append)
    reused = sorted(line.split()[1].rstrip(":") for line in log if line.startswith("[reuse]"))
    ran = sorted(line.split()[2] for line in log if line.startswith("[run ]"))
    assert reused == ["adapter-cardiology", "adapter-neurology", "lexicon"]
    assert ran == ["accuracy", "compare-cardiology", "compare-neurology", "seen-unseen-cardiology"] + [
        "seen-unseen-neurology",
        "split",
    ]
    assert (tmp_path / "exp" / "compare_matrix.csv").read_text(encoding="utf-8") == csv
    recorded = second.extras["reused_older"]  # experiment.json says which stages came from other code
    assert sorted(name.rsplit("-", 1)[0] for name in recorded) == reused and set(recorded.values()) == {version}
    html = second.report(tmp_path / "report.html").read_text(encoding="utf-8")
    assert "stages reused from other specprobe code" in html and next(iter(recorded)) in html
    assert f"No: 3 stage(s) were reused from specprobe {version}" in html, "a caveat in the findings box"
    assert "were reused from specprobe" not in first.report(tmp_path / "fresh.html").read_text(encoding="utf-8")

    # a remote executor plans one accuracy step when every adapter and the accuracy are finished, reusable ones too
    monkeypatch.setattr(specprobe, "__version__", "100.0")
    for reuse, done in (([], False), (["adapter"], False), (["adapter", "accuracy"], True)):
        cfg.reuse_older = reuse
        run = prepare_run(cfg.resolved(), tmp_path / "exp", say=lambda _: None)
        assert accuracy_done(run) is done, reuse
