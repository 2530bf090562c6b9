"""Turn score items into the rows one forward pass runs, optionally sharing a common context.

A plain row is an item's tokens up to its last scored one. With `share_prefixes`, items whose
unscored context is the same token sequence (the options of one multiple-choice question: one
prompt, several continuations) become one row: the context once, then each item's suffix. Each
suffix token sees the context and the earlier tokens of its own suffix (a segment mask) and keeps
the position id it has in its own item, so every scored log-probability is the one its item gets
alone, while the context is encoded once instead of once per option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from specprobe.core.items import ScoreItem


@dataclass
class Row:
    """Tokens of one batch row and, for each scored token, (item, slot, source index, target id)."""

    ids: list[int]
    scored: list[tuple[int, int, int, int]]
    segments: list[int] | None = None  # None: one causal chain; else 0 = shared context, j > 0 = item j's suffix
    position_ids: list[int] | None = None
    items: list[int] = field(default_factory=list)

    @property
    def needed_length(self) -> int:
        return len(self.ids)


def plain_row(i: int, item: ScoreItem) -> Row:
    ids = list(item.ids[: item.needed_length])
    return Row(ids, [(i, k, p - 1, ids[p]) for k, p in enumerate(item.positions)], items=[i])


def shared_row(members: Sequence[tuple[int, ScoreItem]], context: int) -> Row:
    """One row for items that share their first `context` tokens and score none of them."""
    first = members[0][1]
    ids = list(first.ids[:context])
    segments = [0] * context
    positions = list(range(context))
    scored = []
    for j, (i, item) in enumerate(members, start=1):
        start = len(ids)  # packed index of the item's token `context`
        suffix = item.ids[context : item.needed_length]
        ids += suffix
        segments += [j] * len(suffix)
        positions += range(context, context + len(suffix))
        for k, p in enumerate(item.positions):
            source = p - 1 if p - 1 < context else start + (p - 1 - context)
            scored.append((i, k, source, item.ids[p]))
    return Row(ids, scored, segments, positions, [i for i, _ in members])


def context_groups(items: Sequence[ScoreItem]) -> dict[tuple[int, ...], list[tuple[int, ScoreItem]]]:
    """Items by their unscored context (the tokens before their first scored one), in first-seen order:
    a group of two or more is what `build_rows(share_prefixes=True)` puts in one row."""
    groups: dict[tuple[int, ...], list[tuple[int, ScoreItem]]] = {}
    for i, it in enumerate(items):
        groups.setdefault(tuple(it.ids[: min(it.positions)]), []).append((i, it))
    return groups


def build_rows(items: Sequence[ScoreItem], share_prefixes: bool = False) -> list[Row]:
    """Rows covering every item; with `share_prefixes`, items with the same unscored context share a row."""
    if not share_prefixes:
        return [plain_row(i, it) for i, it in enumerate(items)]
    rows = []
    for context, members in context_groups(items).items():
        if len(members) == 1:
            rows.append(plain_row(*members[0]))
        else:
            rows.append(shared_row(members, len(context)))
    return rows


def segment_mask(rows: Sequence[Row], width: int) -> torch.Tensor:
    """Boolean (batch, 1, width, width) mask, True where a query token may attend to a key token:
    causal within a chain; a suffix token sees the context and its own suffix; padding sees itself."""
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        seg[r, : len(row.ids)] = torch.tensor(row.segments) if row.segments is not None else 0
    pad = seg < 0
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & ((k == 0) | (k == q)) & ~pad[:, None, :]
    allowed |= torch.eye(width, dtype=torch.bool) & pad[:, :, None]
    return allowed[:, None]


def row_position_ids(rows: Sequence[Row], width: int) -> torch.Tensor:
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        n = len(row.ids)
        pos[r, :n] = torch.tensor(row.position_ids) if row.position_ids is not None else torch.arange(n)
    return pos
