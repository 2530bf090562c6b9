"""Analyses of saved results (no forward pass): `seen_unseen` (seen vs unseen training terms) and
`accuracy_link` (does a question's term-probability change go with its accuracy change?), and the
same as functions of file paths for pipeline stages (`seen_unseen_files`, `accuracy_link_files`).

Analyses that run models: `trajectory` (the dose-response over training checkpoints) and
`general_text_control` (the shift of general-English text), with `trajectory_files` and
`general_text_files` for pipeline stages."""

from specprobe.probe.analyses.accuracy_link import AccuracyLink, accuracy_link
from specprobe.probe.analyses.checkpoints import read_checkpoints
from specprobe.probe.analyses.files import accuracy_link_files, seen_unseen_files
from specprobe.probe.analyses.general_text import (
    GeneralTextShift,
    general_text_control,
    general_text_row,
    with_general_text,
)
from specprobe.probe.analyses.model_files import general_text_files, trajectory_files
from specprobe.probe.analyses.seen_unseen import SeenUnseen, seen_unseen, seen_unseen_table
from specprobe.probe.analyses.trajectory import Trajectory, trajectory
from specprobe.probe.training_data import TrainingData, training_data

__all__ = [
    "seen_unseen",
    "SeenUnseen",
    "seen_unseen_table",
    "accuracy_link",
    "AccuracyLink",
    "seen_unseen_files",
    "accuracy_link_files",
    "training_data",
    "TrainingData",
    "trajectory",
    "Trajectory",
    "read_checkpoints",
    "trajectory_files",
    "general_text_control",
    "GeneralTextShift",
    "general_text_row",
    "with_general_text",
    "general_text_files",
]
