"""The probing engine: base vs fine-tuned token log-probabilities of clinical terms, in context."""

from specprobe.probe.compare import compare
from specprobe.probe.comparison import Comparison
from specprobe.core.models import ModelLoadError, ModelPair
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.layers import LayerView, layers
from specprobe.probe.patching import LogitAttribution, Patching, logit_attribution, patch

__all__ = ["compare", "Comparison", "ModelPair", "ModelLoadError", "MatchOptions",
           "layers", "LayerView", "patch", "Patching", "logit_attribution", "LogitAttribution"]
