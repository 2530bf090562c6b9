"""Analyses of saved results (no forward pass): `seen_unseen` (seen vs unseen training terms) and
`accuracy_link` (does a question's term-probability change go with its accuracy change?), and the
same as functions of file paths for pipeline stages (`seen_unseen_files`, `accuracy_link_files`)."""

from specprobe.probe.analyses.accuracy_link import AccuracyLink, accuracy_link
from specprobe.probe.analyses.files import accuracy_link_files, seen_unseen_files
from specprobe.probe.analyses.seen_unseen import SeenUnseen, seen_unseen, seen_unseen_table
from specprobe.probe.analyses.training_data import TrainingData, training_data

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
]
