"""Training trackers: TensorBoard read back, exactly-once logging across a resume, identical adapters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from specprobe.app.cli import main
from specprobe.finetune.trackers import LOGS, PROJECT, check_report_to
from specprobe.finetune.train_options import TrainOptionError
from specprobe.finetune.train_signals import TrainingInterrupted
from specprobe.finetune.training import train
from specprobe.terms.datasets import QARecord
from tests.interrupts import sigint_at

OPTIONS = ("aspirin", "heparin", "insulin", "rest")
TAGS = ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s")
FAST = dict(max_steps=6, batch_size=2, save_every=2, dropout=0.1, progress=False)


def make_records(n: int = 12) -> list[QARecord]:
    return [
        QARecord(f"q{i}", f"Which drug helps patient {i}?", OPTIONS, OPTIONS[i % 4], ("Cardiology",)) for i in range(n)
    ]


def read_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file under out/logs/<project>, as (step, value) in the order logged.

    Sorted by wall time (stable), not read in file-name order: a resumed run's event file can sort before
    the first run's (tensorboard names files by the second and a per-process counter, "...9" > "...10")."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / LOGS / PROJECT))
    acc.Reload()
    return {
        tag: [(e.step, e.value) for e in sorted(acc.Scalars(tag), key=lambda e: e.wall_time)]
        for tag in acc.Tags()["scalars"]
    }


def adapter_bytes(out: Path) -> bytes:
    return (out / "adapter_model.safetensors").read_bytes()


needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed (pip install '.[tensorboard]')"
)


@needs_tensorboard
def test_tensorboard_logs_every_step_once_and_changes_no_weight(tiny_llama, tmp_path):
    base, recs = str(tiny_llama[0]), make_records()
    plain = train(base, recs, None, tmp_path / "plain", **FAST)
    tracked = train(base, recs, None, tmp_path / "tb", report_to="tensorboard", **FAST)
    assert adapter_bytes(tmp_path / "plain") == adapter_bytes(tmp_path / "tb")  # bit-identical
    assert tracked.manifest["loss_curve"] == plain.manifest["loss_curve"]
    scalars = read_scalars(tmp_path / "tb")
    assert set(TAGS) <= set(scalars)
    steps = list(range(1, FAST["max_steps"] + 1))
    for tag in TAGS:
        assert [s for s, _ in scalars[tag]] == steps, tag
    curve = tracked.manifest["loss_curve"]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([c["loss"] for c in curve], rel=1e-6)
    assert [v for _, v in scalars["train/learning_rate"]] == pytest.approx([c["lr"] for c in curve], rel=1e-6)
    assert all(v > 0 for _, v in scalars["train/grad_norm"] + scalars["train/tokens_per_s"])
    # a rerun of the finished run logs nothing more
    train(base, recs, None, tmp_path / "tb", report_to="tensorboard", **FAST)
    assert [s for s, _ in read_scalars(tmp_path / "tb")["train/loss"]] == steps


@needs_tensorboard
def test_resume_after_interruption_logs_no_step_twice(tiny_llama, tmp_path):
    """Stopped at step 3 (last checkpoint at 2): the rerun logs 3.. again, which the tracker never saw."""
    base, recs = str(tiny_llama[0]), make_records()
    full = train(base, recs, None, tmp_path / "full", report_to="tensorboard", **FAST)

    interrupt = sigint_at(3)

    with pytest.raises(TrainingInterrupted):
        train(base, recs, None, tmp_path / "part", report_to="tensorboard", on_step=interrupt, **FAST)
    assert [s for s, _ in read_scalars(tmp_path / "part")["train/loss"]] == [1, 2, 3]  # checkpoint at step 3
    resumed = train(base, recs, None, tmp_path / "part", report_to="tensorboard", **FAST)
    assert resumed.manifest["resumed_from"] == [3]
    got, want = read_scalars(tmp_path / "part"), read_scalars(tmp_path / "full")
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm"):
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]] == list(range(1, 7)), tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag
    assert adapter_bytes(tmp_path / "part") == adapter_bytes(tmp_path / "full")
    assert full.manifest["loss_curve"] == resumed.manifest["loss_curve"]


@needs_tensorboard
def test_a_crash_between_checkpoints_neither_loses_nor_repeats_steps(tiny_llama, tmp_path):
    """A crash at step 5 (checkpoint at 4): step 5 was computed but not committed, so it is not logged;
    the rerun computes and logs it once. Logging each step as it happens would log step 5 twice."""
    base, recs = str(tiny_llama[0]), make_records()

    def crash(step, loss):
        if step == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(base, recs, None, tmp_path / "part", report_to="tensorboard", on_step=crash, **FAST)
    assert [s for s, _ in read_scalars(tmp_path / "part")["train/loss"]] == [1, 2, 3, 4]
    resumed = train(base, recs, None, tmp_path / "part", report_to="tensorboard", **FAST)
    assert resumed.manifest["resumed_from"] == [4]
    logged = read_scalars(tmp_path / "part")["train/loss"]
    assert [s for s, _ in logged] == list(range(1, 7))
    assert [v for _, v in logged] == pytest.approx([c["loss"] for c in resumed.manifest["loss_curve"]], rel=1e-6)


@needs_tensorboard
def test_fp16_grad_norm_is_of_the_unscaled_gradients(tiny_llama, tmp_path, monkeypatch):
    """fp16 without clipping (max_grad_norm None or 0): train/grad_norm read the GradScaler's scaled
    gradients, 65536 times the true norm; with clipping accelerate unscales first. Both must agree, and
    the adapter must not change."""
    from test_finetune_train import fp16_on_cpu

    fp16_on_cpu(monkeypatch)
    base, recs = str(tiny_llama[0]), make_records()
    train(base, recs, None, tmp_path / "clip", report_to="tensorboard", max_grad_norm=1e9, **FAST)
    train(base, recs, None, tmp_path / "none", report_to="tensorboard", max_grad_norm=None, **FAST)
    want, got = read_scalars(tmp_path / "clip")["train/grad_norm"], read_scalars(tmp_path / "none")["train/grad_norm"]
    assert [s for s, _ in got] == [s for s, _ in want] and len(want) >= 5  # a step skipped on overflow logs none
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert all(0 < v < 100 for _, v in got)
    assert adapter_bytes(tmp_path / "clip") == adapter_bytes(tmp_path / "none")


def test_missing_tracker_package_is_a_one_line_error_naming_the_extra(tiny_llama, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the mlflow package: pip install 'specprobe\[mlflow\]'"):
        check_report_to("mlflow")
    data = tmp_path / "qa.json"
    data.write_text('[{"Question": "q?", "Options": ["a", "b"], "Answer": "a", "Specialty": "Cardiology"}]')
    args = ["finetune", "--base", str(tiny_llama[0]), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*args, "--report-to", "mlflow", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "specprobe[mlflow]" in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(TrainOptionError, match="report_to"):
        train(str(tiny_llama[0]), make_records(), None, tmp_path / "x", report_to="comet", **FAST)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_run(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    base, recs = str(tiny_llama[0]), make_records()
    train(base, recs, None, tmp_path / "plain", **FAST)
    train(base, recs, None, tmp_path / "wb", report_to="wandb", **FAST)
    assert adapter_bytes(tmp_path / "plain") == adapter_bytes(tmp_path / "wb")
    runs = list((tmp_path / "wb" / LOGS / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_a_tracker_that_does_not_start_is_a_one_line_error_and_nothing_to_end(tmp_path):
    from specprobe.finetune.trackers import StepTracker

    class NoLogin:  # what accelerate does when wandb.init fails (no API key): raises, and its tracker has no run
        is_main_process = True

        def init_trackers(self, *args, **kwargs):
            raise RuntimeError("No API key configured. Use `wandb login` to log in.")

        def end_training(self):
            raise AttributeError("'WandBTracker' object has no attribute 'run'")

    tracker = StepTracker("wandb", tmp_path)
    # was: the finally's end() raised AttributeError over it: "internal error: AttributeError: 'WandBTracker' ..."
    with pytest.raises(ValueError, match=r"^--report-to wandb: the tracker did not start: RuntimeError: No API key.*"):
        tracker.start(NoLogin(), {"rank": 8}, resumed=False)
    tracker.end()  # no tracker run was opened: nothing to close
