"""The training data as the loop sees it: questions as token ids with their answer positions
(`build_examples`), padded batches (`collate`), and the seeded order of optimizer steps and dropout
(`group_indices`, `step_seed`) that makes a resumed run draw what an uninterrupted one draws."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from specprobe.core.step_order import group_indices  # noqa: F401  (training's step order, defined once in core)
from specprobe.finetune.prompts import PromptFormat, encode_continuation
from specprobe.terms.datasets import QARecord

if TYPE_CHECKING:
    import torch


@dataclass
class Example:
    """One training question as tokens: the prompt and its answer, and where the loss falls."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]  # target token positions (their labels are the ids there)


def build_examples(
    tokenizer, records: Sequence[QARecord], fmt: PromptFormat, max_length: int, append_eos: bool
) -> tuple[list[Example], int]:
    """The records as `Example`s (prompt, then the answer continuation), and how many prompts lost tokens."""
    examples, truncated = [], 0
    for rec in records:
        enc = encode_continuation(
            tokenizer,
            fmt.prompt(rec),
            fmt.target(rec),
            max_length=max_length,
            append_eos=append_eos,
            where=f"question {rec.id!r}",
        )
        truncated += enc.n_dropped > 0
        examples.append(Example(enc.ids, enc.positions))
    return examples, truncated


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A right-padded batch: input ids, attention mask, and labels (-100 everywhere but the answer tokens)."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, : len(e.ids)] = torch.tensor(e.ids)
        mask[r, : len(e.ids)] = 1
        for p in e.positions:
            labels[r, p] = e.ids[p]
    return ids, mask, labels


# -- the order of optimizer steps and the dropout seeds ----------------------------------------------------
def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of optimizer step `step` on process `rank`: dropout draws the same after a resume."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
