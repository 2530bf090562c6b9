"""The probing engine: base vs fine-tuned token log-probabilities of clinical terms, in context."""

from specprobe.probe.compare import compare
from specprobe.probe.comparison import Comparison
from specprobe.probe.models import ModelLoadError, ModelPair
from specprobe.probe.occurrences import MatchOptions

__all__ = ["compare", "Comparison", "ModelPair", "ModelLoadError", "MatchOptions"]
