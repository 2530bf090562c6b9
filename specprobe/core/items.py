"""`ScoreItem`: one input sequence and the positions to score; the unit every caller hands the forward path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreItem:
    """One input sequence and the positions p whose token is scored as log p(ids[p] | ids[:p])."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.positions:
            raise ValueError("a ScoreItem needs at least one position to score")
        if min(self.positions) < 1 or max(self.positions) >= len(self.ids):
            raise ValueError(f"positions must lie in [1, {len(self.ids) - 1}], got {self.positions}")

    @property
    def needed_length(self) -> int:
        """Tokens after the last scored one cannot change its probability (causal): drop them."""
        return max(self.positions) + 1
