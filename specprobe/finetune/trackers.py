"""Training metrics to TensorBoard, Weights & Biases or MLflow, through accelerate's trackers.

`specprobe finetune --report-to tensorboard|wandb|mlflow` (default none) logs, per optimizer step,
``train/loss`` (mean loss per answer token), ``train/learning_rate``, ``train/grad_norm`` (before
clipping) and ``train/tokens_per_s`` (input tokens of the step over its wall time), with the run's
options once as the configuration. Everything goes to ``<out>/logs/`` (TensorBoard event files,
wandb's local run directory, MLflow's file store unless MLFLOW_TRACKING_URI is set).

Exactly once, also across interruptions: step metrics are held back and handed to the tracker only
once the checkpoint that contains their step has been committed (and, at the end, once the manifest
is written). A run stopped between checkpoints resumes from the last one and logs the steps after it
again, which the tracker never saw, so no step is logged twice and none is lost. The wandb and MLflow
run ids are kept in ``<out>/logs/tracker.json``, so a resumed run continues the same tracker run.
Logging reads values only, so the trained adapter is bit-identical with and without a tracker.
"""

from __future__ import annotations

import importlib.util
import math
import os
import uuid
from pathlib import Path
from typing import Any

from specprobe.utils.io import read_json, write_json

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
LOGS = "logs"
PROJECT = "specprobe-finetune"
STATE = "tracker.json"


def check_report_to(report_to: str) -> None:
    """A known tracker whose package is installed, else a one-line `ValueError` naming the extra."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to {report_to!r}: choose from {', '.join(REPORT_TO)}")
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise ValueError(f"--report-to {report_to} needs the {report_to} package: pip install 'specprobe[{report_to}]'")


def _scalar_config(config: dict) -> dict[str, bool | int | float | str]:
    """The configuration flattened to scalars (TensorBoard's hparams take nothing else)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _scalar_config(value).items()})
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        else:
            flat[key] = str(value)
    return flat


class StepTracker:
    """Per-step metrics for one `train` call: `record` each step, `flush` after each committed
    checkpoint (and after the manifest), `end` at the end. A no-op for report_to="none"."""

    def __init__(self, report_to: str, out: Path) -> None:
        check_report_to(report_to)
        self.report_to, self.out = report_to, out
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.accelerator: Any = None

    @property
    def active(self) -> bool:
        return self.report_to != "none"

    def accelerator_kwargs(self) -> dict[str, Any]:
        """What `Accelerator(...)` needs for the tracker (nothing without one)."""
        return {"log_with": self.report_to, "project_dir": str(self.out / LOGS)} if self.active else {}

    def _init_kwargs(self, state: dict) -> dict[str, Any]:
        logs = self.out / LOGS
        if self.report_to == "wandb":
            return {"wandb": {"id": state["run_id"], "resume": "allow", "name": self.out.name, "dir": str(logs)}}
        if self.report_to == "mlflow":
            import mlflow

            if not os.environ.get("MLFLOW_TRACKING_URI"):  # a configured tracking server or store is kept
                mlflow.set_tracking_uri((logs / "mlruns").resolve().as_uri())
            return {"mlflow": {"run_id": state.get("mlflow_run_id"), "run_name": self.out.name}}
        return {}

    def start(self, accelerator: Any, config: dict, resumed: bool) -> None:
        """Open the tracker run (the same run again when resuming); the configuration on a fresh start."""
        if not self.active:
            return
        self.accelerator = accelerator
        if not accelerator.is_main_process:
            return
        state_path = self.out / LOGS / STATE
        state = read_json(state_path) if resumed and state_path.exists() else {}
        state.setdefault("run_id", uuid.uuid4().hex[:16])
        try:
            accelerator.init_trackers(
                PROJECT, config=None if resumed else _scalar_config(config), init_kwargs=self._init_kwargs(state)
            )
        except Exception as exc:  # noqa: BLE001 - the tracker's own error (no login, no server), said in one line
            self.accelerator = None  # no run was opened: `end` has nothing to close
            hint = (
                " (run `wandb login`, or set WANDB_MODE=offline to log to OUT/logs only)"
                if self.report_to == "wandb"
                else ""
            )
            raise ValueError(
                f"--report-to {self.report_to}: the tracker did not start: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        if self.report_to == "mlflow":
            state["mlflow_run_id"] = accelerator.get_tracker("mlflow").tracker.info.run_id
        write_json(state_path, state)

    def record(self, step: int, loss: float, lr: float, grad_norm: float | None, tokens_per_s: float) -> None:
        """Hold back one step's metrics until the next `flush`."""
        if not self.active:
            return
        values = {"train/loss": loss, "train/learning_rate": lr, "train/tokens_per_s": tokens_per_s}
        if grad_norm is not None and math.isfinite(grad_norm):
            values["train/grad_norm"] = grad_norm
        self.pending.append((step, values))

    def flush(self) -> None:
        """Hand the held-back steps to the tracker (call once their checkpoint, or the manifest, is written)."""
        if self.accelerator is not None:
            for step, values in self.pending:
                self.accelerator.log(values, step=step)
        self.pending.clear()

    def end(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()
            self.accelerator = None
