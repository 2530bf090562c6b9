"""The analyses: base vs fine-tuned token log-probabilities of clinical terms in context (`compare`),
the layer views (`layers`: logit lens; `patch`: activation patching; `logit_attribution`), and analyses
of saved results (`seen_unseen`: seen vs unseen training terms; `accuracy_link`: term change vs
accuracy change), the dose-response over training checkpoints (`trajectory`) and the general-text control
(`general_text_control`)."""

from specprobe.core.models import ModelLoadError, ModelPair  # what compare and the layer views take
from specprobe.probe.analyses import (
    AccuracyLink,
    GeneralTextShift,
    SeenUnseen,
    Trajectory,
    accuracy_link,
    general_text_control,
    seen_unseen,
    trajectory,
)
from specprobe.probe.compare import compare
from specprobe.probe.comparison import Comparison
from specprobe.probe.layers import LayerView, layers
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions
from specprobe.probe.patching import LogitAttribution, Patching, logit_attribution, patch

__all__ = [
    "compare",
    "Comparison",
    "layers",
    "LayerView",
    "patch",
    "Patching",
    "logit_attribution",
    "LogitAttribution",
    "seen_unseen",
    "SeenUnseen",
    "accuracy_link",
    "AccuracyLink",
    "trajectory",
    "Trajectory",
    "general_text_control",
    "GeneralTextShift",
    "MatchOptions",
    "ProbeOptions",
    "ModelPair",
    "ModelLoadError",
]
