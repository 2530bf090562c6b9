"""The analyses: base vs fine-tuned token log-probabilities of clinical terms in context (`compare`),
and the layer views (`layers`: logit lens; `patch`: activation patching; `logit_attribution`)."""

from specprobe.core.models import ModelLoadError, ModelPair  # what compare and the layer views take
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
    "MatchOptions",
    "ProbeOptions",
    "ModelPair",
    "ModelLoadError",
]
