"""What the experiment's stage keys hold of their less obvious inputs, so that a rerun never reuses a stage
whose inputs changed in place: the base model (every file a loader reads, or the hub commit it resolves
to) and the package data the lexicon is built with."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from specprobe.app import base_identity as bi
from specprobe.app import stages
from specprobe.app.config import ConfigError, ExperimentConfig, builtin_questions
from specprobe.app.experiment import run_experiment
from specprobe.app.experiment_stages import LEXICON_CODE, LEXICON_DATA, lexicon_key
from specprobe.utils.io import sha256_file


def _model_dir(path: Path) -> Path:
    path.mkdir()
    for name, text in {
        "model-00001-of-00002.safetensors": "shard one",
        "model-00002-of-00002.safetensors": "shard two",
        "config.json": '{"rms_norm_eps": 1e-05}',
        "tokenizer.json": "{}",
        "chat_template.jinja": "{{ messages }}",
        "README.md": "about",
        "pytorch_model.bin": "not loaded",
        ".gitattributes": "*.safetensors filter=lfs",
    }.items():
        (path / name).write_text(text)
    return path


def test_a_local_base_is_identified_by_every_file_a_loader_reads(tmp_path):
    base = _model_dir(tmp_path / "base")
    first = bi.base_identity(str(base), None, tmp_path / "out")
    assert first.startswith("sha256:")
    for name in ("README.md", "pytorch_model.bin", ".gitattributes"):  # not read by the loaders
        (base / name).write_text("edited")
        assert bi.base_identity(str(base), None, tmp_path / "out") == first, name
    seen = {first}
    for name in ("model-00002-of-00002.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"):
        (base / name).write_text((base / name).read_text() + " ")  # a later shard, the config, the tokenizer
        identity = bi.base_identity(str(base), None, tmp_path / "out")
        assert identity not in seen, name
        seen.add(identity)
    (base / "generation_config.json").write_text("{}")  # a new file the loaders read
    assert bi.base_identity(str(base), None, tmp_path / "out") not in seen


def test_file_digests_are_kept_until_the_file_is_written_again(tmp_path, monkeypatch):
    base = _model_dir(tmp_path / "base")
    monkeypatch.setattr(bi, "_RACY_NS", 0)  # the files were written just now
    hashed: list[str] = []
    real = bi.sha256_file
    monkeypatch.setattr(bi, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    first = bi.base_identity(str(base), None, tmp_path / "out")
    assert len(hashed) == 5 and (tmp_path / "out" / bi.DIGESTS).is_file()
    hashed.clear()
    assert bi.base_identity(str(base), None, tmp_path / "out") == first and hashed == []
    shard = base / "model-00002-of-00002.safetensors"
    stat = shard.stat()
    shard.write_text("shard 2!!")  # same size, and the modification time put back: the change time moves
    import os

    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert shard.stat().st_size == stat.st_size and shard.stat().st_mtime_ns == stat.st_mtime_ns
    assert bi.base_identity(str(base), None, tmp_path / "out") != first and hashed == [shard.name]


def _hub_cache(root: Path, monkeypatch, refs: dict[str, str]) -> None:
    """A Hugging Face cache holding model local/tiny, with `refs` (ref -> commit), used offline."""
    import huggingface_hub.constants as hub

    repo = root / "models--local--tiny"
    for ref, commit in refs.items():
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


def test_a_hub_base_is_identified_by_the_commit_it_resolves_to(tmp_path, monkeypatch):
    a, b = "a" * 40, "b" * 40
    _hub_cache(tmp_path / "hub", monkeypatch, {"main": a, "v1": b})
    assert bi.base_identity("local/tiny", None, tmp_path) == f"local/tiny@{a}"
    assert bi.base_identity("local/tiny", "main", tmp_path) == f"local/tiny@{a}"
    (tmp_path / "hub" / "models--local--tiny" / "refs" / "main").write_text(b)  # a new upstream commit
    assert bi.base_identity("local/tiny", None, tmp_path) == f"local/tiny@{b}"
    assert bi.base_identity("local/tiny", "v1", tmp_path) == f"local/tiny@{b}"


def test_the_stages_get_a_hub_base_pinned_to_the_commit_it_resolved_to_at_the_start(tmp_path, monkeypatch):
    """The stage keys held the commit an unpinned hub id resolved to when the run started, but the stages
    loaded the id by name: a new upstream commit during the run reached the later stages unseen."""
    from specprobe.app.experiment import plan_steps, prepare_run

    a, b = "a" * 40, "b" * 40
    _hub_cache(tmp_path / "hub", monkeypatch, {"main": a})
    cfg = ExperimentConfig(base="local/tiny", out=str(tmp_path / "exp"), specialties=["Cardiology"], include_all=False)
    run = prepare_run(cfg.resolved(), tmp_path / "exp", say=lambda s: None)
    assert run.stage_base == f"local/tiny@{a}"
    _hub_cache(tmp_path / "hub", monkeypatch, {"main": b})  # upstream moves on
    bases = {s.name: s.kwargs.get("base") for s in plan_steps(run, in_process=True, progress=False)}
    assert bases["adapter-cardiology"] == bases["accuracy"] == f"local/tiny@{a}"


def test_a_training_revision_the_other_stages_would_not_load_is_refused(tmp_path, monkeypatch):
    a, b = "a" * 40, "b" * 40
    _hub_cache(tmp_path / "hub", monkeypatch, {"main": a, "v1": b})
    with pytest.raises(ConfigError, match=r"train.revision: 'v1' is commit b+ .*load its default revision, commit a+"):
        bi.base_identity("local/tiny", "v1", tmp_path)
    with pytest.raises(ValueError, match="'no/such-model' is not a local directory.*no such model"):
        bi.base_identity("no/such-model", None, tmp_path)


def test_a_base_that_is_not_a_model_folder_is_refused_before_any_stage(tiny_llama, tmp_path):
    """A base folder without a model was found only when the adapter stage loaded it, after the split and
    the lexicon had been built."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"base: .*empty is a folder without a config\.json"):
        bi.base_identity(str(tmp_path / "empty"), None, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"base .*llama-lora is a PEFT adapter folder, not a base model"):
        bi.base_identity(str(tiny_llama[1]), None, tmp_path / "out")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"base: .*weights\.safetensors is a file"):
        bi.base_identity(str(tmp_path / "weights.safetensors"), None, tmp_path / "out")


def test_the_lexicon_is_keyed_on_every_package_data_file_it_reads(tmp_path, monkeypatch):
    package = Path(stages.__file__).resolve().parent.parent
    read = set()
    for source in (package / "terms").rglob("*.py"):
        read |= set(re.findall(r'"data" / "terms" / "([^"]+)"', source.read_text(encoding="utf-8")))
    assert read and read == {Path(p).name for p in LEXICON_DATA}, "a data file the lexicon reads is not in its key"

    copy = tmp_path / "specprobe"
    for part in ("terms", "utils", "data/terms"):
        shutil.copytree(package / part, copy / part)
    monkeypatch.setattr(stages, "_PACKAGE", copy)
    split, test = {"seed": 0}, tmp_path / "test.json"
    test.write_text("[]", encoding="utf-8")
    before = lexicon_key(split, test)
    with open(copy / "data/terms/specialty_map.csv", "a", encoding="utf-8") as fh:
        fh.write("icd10cm,I50,Neurology,Heart failure,an edit in place\n")
    assert lexicon_key(split, test) != before


def test_reusing_an_older_lexicon_does_not_bridge_a_change_of_its_data(tmp_path, monkeypatch):
    """`reuse_older = ["lexicon"]` carries a lexicon over a change of code; the ontology tables it is built
    from are data: an edit there must build it again (they were hashed as code, so the older one was reused)."""
    package = Path(stages.__file__).resolve().parent.parent
    copy = tmp_path / "specprobe"
    for part in ("terms", "utils", "data/terms"):
        shutil.copytree(package / part, copy / part)
    monkeypatch.setattr(stages, "_PACKAGE", copy)
    root, split, test = tmp_path / "out", {"seed": 0}, tmp_path / "test.json"
    test.write_text("[]", encoding="utf-8")
    built: list[Path] = []

    def build(folder: Path) -> None:
        built.append(folder)
        (folder / "lexicon.json").write_text(str(len(built)), encoding="utf-8")

    def run() -> Path:
        stages.code_fingerprint.cache_clear()
        with stages.reusing_older(["lexicon"]):
            return stages.run_stage(root, "lexicon", lexicon_key(split, test), build, code=LEXICON_CODE, say=print)

    try:
        run()
        with open(copy / "data/terms/synonym_fixes.csv", "a", encoding="utf-8") as fh:
            fh.write("an edit,in place\n")
        folder = run()
    finally:
        stages.code_fingerprint.cache_clear()
    assert len(built) == 2 and folder == built[1], "the older lexicon was reused over a change of its data"


@pytest.mark.slow
def test_a_base_changed_in_place_reruns_its_stages_and_is_recorded(tiny_llama, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_llama[0], base)
    questions = json.loads(builtin_questions().read_text(encoding="utf-8"))
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([q for q in questions if q["Specialty"] in ("Cardiology", "Neurology")][::10]))
    cfg = ExperimentConfig(
        base=str(base),
        data=str(data),
        out=str(tmp_path / "exp"),
        specialties=["Cardiology"],
        include_all=False,
        train={"max_steps": 1, "batch_size": 4, "rank": 2, "max_length": 128},
        max_texts=4,
        layers=False,
        analyses=[],
    )
    first = run_experiment(cfg, progress=False, say=lambda _: None)
    assert first.metadata["base_identity"].startswith("sha256:")
    # what reproduces the questions: the data's sha256 and the split's options (it was only in a stage marker)
    assert first.metadata["split"] == {"data": sha256_file(data), "test_fraction": cfg.test_fraction, "seed": cfg.seed}
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    config["rms_norm_eps"] = 0.5  # the same weights, other logits
    (base / "config.json").write_text(json.dumps(config), encoding="utf-8")
    log: list[str] = []
    second = run_experiment(cfg, progress=False, say=log.append)
    ran = [line.split()[2] for line in log if line.startswith("[run ]")]
    assert ran == ["adapter-cardiology", "accuracy", "compare-cardiology"], "split and lexicon do not read the base"
    assert second.metadata["base_identity"] != first.metadata["base_identity"]
    log.clear()
    run_experiment(cfg, progress=False, say=log.append)
    assert not [line for line in log if line.startswith("[run ]")]
