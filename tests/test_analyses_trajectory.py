"""Dose-response over training: `finetune --save-steps` keeps loadable PEFT snapshots listed in the
manifest without changing the final adapter; `trajectory` compares each with the one loaded base
(step 0 = the LoRA initialisation: every delta exactly 0; a planted term's delta grows), agrees with
`compare` per checkpoint, and finds when the own specialty pulls ahead (or "never")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specprobe.probe import compare
from specprobe.probe.analyses import Trajectory, read_checkpoints, trajectory
from specprobe.terms.datasets import QARecord
from specprobe.utils.io import sha256_file
from tests.interrupts import sigint_at

PLANTED = "zorblax"  # the answer of every Cardiology training question; unknown to the base
TERMS = {PLANTED: ["Cardiology"], "digoxin": ["Cardiology"], "seizure": ["Neurology"], "migraine": ["Neurology"]}
CONTROLS = ["patient", "drug"]
SAVE_STEPS = [0, 4, 8]
TRAIN = dict(
    max_steps=12, batch_size=4, learning_rate=2e-2, warmup_ratio=0.0, continuation="text", save_every=5, progress=False
)


def training_questions() -> list[QARecord]:
    return [
        QARecord(f"c{i}", f"Which drug helps patient {i} with chest pain?", (PLANTED, "aspirin", "rest"), PLANTED, ("Cardiology",))
        for i in range(8)
    ]  # fmt: skip


def probe_texts() -> list[dict]:
    """Held-out texts in the training prompt's shape, each with one term of each specialty and the controls."""
    return [
        {
            "id": f"t{i}",
            "text": f"Question: Which drug helps patient {40 + i} with {'a seizure' if i % 2 else 'migraine'} or "
            f"palpitations?\nA. digoxin\nB. {PLANTED}\nC. rest\nAnswer: {PLANTED}",
        }
        for i in range(10)
    ]


def write_qa(path: Path) -> Path:
    rows = [
        {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
        for r in training_questions()
    ]
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    """The same Cardiology run twice: with snapshots at SAVE_STEPS, and without."""
    from specprobe.finetune import train

    base = str(tiny_llama[0])
    root = tmp_path_factory.mktemp("trajectory")
    data = write_qa(root / "train.json")
    with_snaps = train(base, data, "Cardiology", root / "snaps", save_steps=SAVE_STEPS, **TRAIN)
    without = train(base, data, "Cardiology", root / "plain", **TRAIN)
    return base, with_snaps.path, without.path


@pytest.fixture(scope="module")
def traj(runs) -> Trajectory:
    base, adapter, _ = runs
    return trajectory(base, adapter, TERMS, probe_texts(), controls=CONTROLS, progress=False)


def test_snapshots_are_kept_listed_loadable_and_change_nothing(runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter, plain = runs
    manifest = json.loads((adapter / "manifest.json").read_text())
    listed = manifest["snapshots"]
    assert [e["step"] for e in listed] == SAVE_STEPS
    for entry in listed:
        folder = adapter / entry["path"]
        assert (folder / "adapter_config.json").exists()
        assert sha256_file(folder / "adapter_model.safetensors") == entry["sha256"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(folder))
        assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    assert not (adapter / "checkpoints").exists()  # the resume checkpoints are gone, the snapshots stay
    assert (
        "snapshots" not in json.loads((plain / "manifest.json").read_text())
        or not json.loads((plain / "manifest.json").read_text())["snapshots"]
    )
    # the final adapter is bit-identical with or without snapshots, and so is the run's identity
    assert sha256_file(adapter / "adapter_model.safetensors") == sha256_file(plain / "adapter_model.safetensors")
    assert manifest["identity_hash"] == json.loads((plain / "manifest.json").read_text())["identity_hash"]


def test_save_steps_are_checked(tiny_llama, tmp_path):
    from specprobe.finetune import train
    from specprobe.finetune.train_options import TrainOptionError, TrainOptions

    assert TrainOptions(save_steps="8, 0,4,4").save_steps == [0, 4, 8]
    for bad in ("a,b", [-1], [1.5], "2;3"):
        with pytest.raises(TrainOptionError, match="save_steps"):
            TrainOptions(save_steps=bad)
    with pytest.raises(TrainOptionError, match="save_steps.*after the run's last step"):
        train(
            str(tiny_llama[0]),
            write_qa(tmp_path / "qa.json"),
            None,
            tmp_path / "o",
            max_steps=2,
            save_steps=[5],
            progress=False,
        )


def test_trajectory_starts_at_zero_and_the_planted_term_grows(traj, runs):
    df = traj.to_pandas()
    manifest = json.loads((runs[1] / "manifest.json").read_text())
    assert traj.steps == [*SAVE_STEPS, manifest["steps"]]  # the snapshots, then the final adapter
    first = df[(df["step"] == 0) & np.isfinite(df["delta"])]
    assert len(first) and (first["delta"] == 0).all()  # LoRA's B starts at zero: tuned is the base, exactly
    curves = traj.curves()
    print("\n" + traj.summary())
    planted = df[df["term"] == PLANTED].groupby("step")["delta_per_token"].mean()
    print("planted term's mean delta per token by step:", planted.round(4).to_dict())
    assert planted.iloc[-1] > planted.loc[SAVE_STEPS[1]] > 0
    cardio = curves[curves["specialty"] == "Cardiology"].set_index("step")
    assert cardio["mean_delta_per_token"].iloc[-1] > cardio.loc[0, "mean_delta_per_token"] == 0
    gap = traj.gap().set_index("step")
    assert gap.loc[0, "mean_diff"] == 0 and gap["mean_diff"].iloc[-1] > 0
    assert traj.trained_on == ["Cardiology"]


def test_each_step_equals_compare_of_its_checkpoint(traj, runs):
    base, adapter, _ = runs
    step = SAVE_STEPS[1]
    points = {p.step: p.path for p in read_checkpoints(adapter).points}
    ref = compare(base, str(points[step]), TERMS, probe_texts(), controls=CONTROLS, progress=False).to_pandas()
    mine = traj.comparison(step).to_pandas()
    assert list(mine["term"]) == list(ref["term"]) and list(mine["text_id"]) == list(ref["text_id"])
    assert np.allclose(mine["delta"], ref["delta"], atol=1e-6, equal_nan=True)


def test_checkpoint_inputs_are_checked(runs, tmp_path):
    _, adapter, plain = runs
    points = read_checkpoints(adapter).points
    as_list = read_checkpoints([(p.step, p.path) for p in reversed(points)])
    assert [p.step for p in as_list.points] == [p.step for p in points]
    assert read_checkpoints({p.step: p.path for p in points}).points == as_list.points
    with pytest.raises(ValueError, match="lists no snapshots"):
        read_checkpoints(plain)
    with pytest.raises(ValueError, match="step must be an integer"):
        read_checkpoints([(-1, points[0].path)])
    with pytest.raises(ValueError, match="given twice"):
        read_checkpoints([(1, points[0].path), (1, points[1].path)])
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        read_checkpoints([(1, tmp_path)])
    copy = tmp_path / "copy"
    shutil.copytree(adapter, copy)
    other = copy / "snapshots" / points[1].path.name / "adapter_model.safetensors"
    shutil.copy(points[2].path / "adapter_model.safetensors", other)  # weights that are not the listed ones
    with pytest.raises(ValueError, match=r"snapshots\[1\].*sha256"):
        read_checkpoints(copy)


def synthetic(own_from: int | None, steps=(0, 1, 2, 3), n_texts: int = 12, seed: int = 0) -> Trajectory:
    """Per text six Cardiology and six Neurology terms and a control word; the Cardiology deltas rise
    above the Neurology ones from step `own_from` on (never, for None); both share a domain shift. (Six
    words a side: own vs other takes words as random too, and 6 against 6 can reach p = 2/924, below Holm's
    0.05/4; one word against one could never reach p < 1.)"""
    rng = np.random.default_rng(seed)
    words = [(f"cardio{i}", ("Cardiology",), True) for i in range(6)] + [
        (f"neuro{i}", ("Neurology",), False) for i in range(6)
    ]
    rows = []
    for step in steps:
        for t in range(n_texts):
            shift = 0.1 * step + rng.normal(0, 0.01)
            lift = 0.5 if own_from is not None and step >= own_from else 0.0
            for term, spec, own in words:
                rows.append((step, f"t{t}", term, spec, False, shift + lift * own + rng.normal(0, 0.01)))
            rows.append((step, f"t{t}", "patient", ("control",), True, rng.normal(0, 0.01)))
    df = pd.DataFrame(rows, columns=["step", "text_id", "term", "specialties", "is_control", "delta"])
    df = df.assign(text_specialties=[()] * len(df), n_tokens=1, logp_base=-5.0)
    df = df.assign(logp_tuned=df["logp_base"] + df["delta"], delta_per_token=df["delta"])
    return Trajectory(df[Trajectory.columns], {"versions": {}}, {"trained_on": ["Cardiology"], "adapter": "cardio"})


def test_onset_is_the_first_step_the_own_specialty_is_ahead():
    steps = (0, 1, 2, 3)
    for own_from in steps[1:]:
        assert synthetic(own_from, steps).onset() == {"first": own_from, "sustained": own_from}
    assert synthetic(None, steps).onset() == {"first": "never", "sustained": "never"}
    table = synthetic(steps[2], steps).own_advantage()
    assert list(table["ahead"]) == [s >= steps[2] for s in steps]
    assert synthetic(1, steps).own_advantage(specialty="all").empty
    everything = synthetic(1, steps)
    everything.extras["trained_on"] = None
    assert everything.onset() == {"first": "not applicable", "sustained": "not applicable"}


def test_roundtrip_report_and_cli(traj, runs, tmp_path):
    from specprobe.app.cli import main
    from specprobe.core.results import Result

    path = traj.save(tmp_path / "trajectory.json.gz")
    again = Result.load(path)
    assert isinstance(again, Trajectory) and again.to_pandas().equals(traj.to_pandas())
    assert again.curves().equals(traj.curves())
    html = again.report(tmp_path / "trajectory.html").read_text()
    assert "Over training" in html and "strokeDash" in html
    base, adapter, _ = runs
    qa = tmp_path / "probe.json"
    qa.write_text(
        json.dumps(
            [
                {"Question": t["text"], "Options": ["a", "b"], "Answer": "a", "Specialty": "Cardiology"}
                for t in probe_texts()
            ]
        )
    )
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    argv = [
        "analyze",
        "trajectory",
        "--base",
        base,
        "--adapter",
        str(adapter),
        "--data",
        str(qa),
        "--terms",
        str(terms),
    ]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--no-progress", "--report"]) == 0
    curves = pd.read_csv(out / "trajectory_curves.csv")
    assert sorted(curves["step"].unique()) == traj.steps and (out / "trajectory.html").exists()
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2  # outputs exist, no --overwrite


def test_a_stopped_run_keeps_its_snapshots_and_resumes_to_the_same_ones(tiny_llama, tmp_path):
    """Ctrl-C after a snapshot step: the snapshots written so far stay; the resumed run writes the rest
    and lists all, each equal to the uninterrupted run's."""

    from specprobe.finetune import train
    from specprobe.finetune.train_signals import TrainingInterrupted

    base, data = str(tiny_llama[0]), write_qa(tmp_path / "qa.json")
    opts = dict(max_steps=6, batch_size=2, save_every=100, save_steps=[0, 2, 5], dropout=0.1, progress=False)
    full = train(base, data, None, tmp_path / "full", **opts)

    interrupt = sigint_at(3)

    with pytest.raises(TrainingInterrupted):
        train(base, data, None, tmp_path / "part", on_step=interrupt, **opts)
    kept = sorted(p.name for p in (tmp_path / "part" / "snapshots").iterdir())
    assert kept == ["step-00000000", "step-00000002"]
    resumed = train(base, data, None, tmp_path / "part", **opts)
    assert resumed.manifest["resumed_from"] == [3]
    assert resumed.manifest["snapshots"] == full.manifest["snapshots"]  # same steps, paths and sha256


def test_a_loaded_pair_as_base_gives_the_same_rows(traj, runs):
    from specprobe.core.models import ModelPair

    base, adapter, _ = runs
    pair = ModelPair.load(base, adapter)  # the final adapter; every checkpoint goes beside it
    steps = {p.step: p.path for p in read_checkpoints(adapter).points if p.step in SAVE_STEPS[1:]}
    again = trajectory(pair, steps, TERMS, probe_texts(), controls=CONTROLS, progress=False)
    assert again.steps == sorted(steps)
    for step in steps:
        mine, ref = again.comparison(step).to_pandas(), traj.comparison(step).to_pandas()
        assert np.allclose(mine["delta"], ref["delta"], atol=1e-6, equal_nan=True)
    assert list(pair.base_model.peft_config) == ["default"]  # the checkpoints were unloaded again


def test_snapshots_up_to_the_last_step_on_another_base_are_refused(runs, tmp_path):
    """A run whose last snapshot is its final step lists no adapter folder with a manifest among its
    points, so no load checked the base: its trajectory on another base was computed (steps [0, 4, 8,
    12], deltas of another model); now refused like the final adapter's, naming both weights."""
    from specprobe.core.models import ModelLoadError
    from specprobe.testing.tiny_models import build_tiny_model

    _, adapter, _ = runs
    run = Path(shutil.copytree(adapter, tmp_path / "run"))
    manifest = json.loads((run / "manifest.json").read_text())
    last = run / "snapshots" / f"step-{manifest['steps']:08d}"
    shutil.copytree(run, last, ignore=shutil.ignore_patterns("snapshots", "manifest.json"))
    entry = {
        "step": manifest["steps"],
        "path": f"snapshots/{last.name}",
        "sha256": sha256_file(last / "adapter_model.safetensors"),
    }
    (run / "manifest.json").write_text(json.dumps({**manifest, "snapshots": [*manifest["snapshots"], entry]}))
    assert [p.path for p in read_checkpoints(run).points][-1] == last  # the final folder is not a point
    other = build_tiny_model("llama", tmp_path / "other-base", seed=5)
    with pytest.raises(ModelLoadError, match="trained on a base with weights sha256"):
        trajectory(str(other), run, TERMS, probe_texts(), controls=CONTROLS, progress=False)
    # force_adapter=True gets past the check, as ModelPair.load's (the same weights saved otherwise hash otherwise)
    forced = trajectory(str(other), run, TERMS, probe_texts(), controls=CONTROLS, progress=False, force_adapter=True)
    assert len(forced.to_pandas())


def test_a_snapshot_another_run_left_in_the_folder_is_not_listed(tiny_llama, tmp_path, caplog):
    """Run X stopped before its first checkpoint leaves its step-2 snapshot; run Y (another seed) starts
    fresh in the folder, stops after a checkpoint, and is resumed asking for step 2: X's snapshot was
    listed as Y's (0.25 from Y's own weights); now it is left out, with a warning."""
    import logging

    from specprobe.finetune import train
    from tests.test_finetune_train import Killed, kill_at

    base, data, out = str(tiny_llama[0]), write_qa(tmp_path / "qa.json"), tmp_path / "out"
    opts = dict(max_steps=6, batch_size=2, progress=False)
    with pytest.raises(Killed):
        train(base, data, None, out, seed=1, save_steps=[2], save_every=50, on_step=kill_at(3), **opts)
    with pytest.raises(Killed):
        train(base, data, None, out, seed=0, save_every=4, on_step=kill_at(5), **opts)
    with caplog.at_level(logging.WARNING):
        run = train(base, data, None, out, seed=0, save_every=4, save_steps=[2], **opts)
    assert run.manifest["resumed_from"] == [4] and run.manifest["snapshots"] == []
    assert "the snapshot at step 2 was written by another run" in caplog.text
