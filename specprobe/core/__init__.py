"""The engine everything shares: model loading (`ModelPair`), the architecture split, LoRA folding,
encoding, batch rows, the one forward path (`score_items`) and the `Result` base.

`probe` and `finetune` build on this package and never on each other.
"""

from specprobe.core.models import ModelLoadError, ModelPair, context_length
from specprobe.core.results import Result
from specprobe.core.scoring import ScoredItem, ScoreItem, score_items

__all__ = ["ModelPair", "ModelLoadError", "context_length", "Result", "ScoreItem", "ScoredItem", "score_items"]
