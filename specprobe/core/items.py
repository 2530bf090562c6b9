"""`ScoreItem`: one input sequence and the positions to score; the unit every caller hands the forward path.

`fit_max_length`: the longest item a caller may build for a model (its context, or less if asked)."""

from __future__ import annotations

import numbers
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


def check_max_length(max_length) -> None:
    """A ValueError unless `max_length` is None (the model's context) or a positive integer."""
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer (or None: the model's context), got {max_length!r}")


def fit_max_length(max_length, context: int) -> int:
    """The token limit for scoring: `max_length` (None: the model's `context`); more than the context is
    an error naming both, as positions past it do not exist (GPT-2) or were never trained (RoPE)."""
    check_max_length(max_length)
    if max_length is None:
        return context
    if max_length > context:
        raise ValueError(
            f"max_length={max_length} is longer than the model's context of {context} tokens; "
            f"use at most {context} (or leave it out)"
        )
    return int(max_length)
