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
) -> tuple[list[Example], list[dict]]:
    """The records as `Example`s (prompt, then the answer continuation), and one entry per prompt that lost
    tokens from the left: {"index", "id", "context_cut"} (see `context_cut`), which the manifest records
    so that the seen/unseen analysis counts only the text that fit in the training window."""
    examples, truncated = [], []
    for i, rec in enumerate(records):
        prompt = fmt.prompt(rec)
        enc = encode_continuation(
            tokenizer,
            prompt,
            fmt.target(rec),
            max_length=max_length,
            append_eos=append_eos,
            where=f"question {rec.id!r}",
        )
        if enc.n_dropped:
            cut = context_cut(fmt, prompt, rec, enc.kept_from)
            truncated.append({"index": i, "id": rec.id, "context_cut": cut})
        examples.append(Example(enc.ids, enc.positions))
    return examples, truncated


def context_cut(fmt: PromptFormat, prompt: str, record: QARecord, kept_from: int) -> list[list[int]]:
    """The [start, end) character ranges of `record.context_text()` (the question and its lettered options,
    the text the seen/unseen analysis reads) that lie before prompt character `kept_from`, where a
    left-truncated training prompt starts. The question and each option appear verbatim in the prompt (any
    template): of each, the part before `kept_from` was cut."""
    context = record.context_text()
    question_first = fmt.template.find("{question}") < fmt.template.find("{options}")
    q_at = prompt.find(record.question)
    spans = [(q_at, 0, len(record.question))]
    at_prompt = q_at + len(record.question) if question_first else 0
    at_context = len(record.question)
    for option in record.options:
        p, c = prompt.find(option, at_prompt), context.find(option, at_context)
        spans.append((p, c, len(option)))
        at_prompt, at_context = max(p, at_prompt) + len(option), c + len(option)
    if any(p < 0 or c < 0 for p, c, _ in spans):  # not with str.format templates; count none of it as seen
        return [[0, len(context)]]
    cut = [[c, c + min(n, kept_from - p)] for p, c, n in spans if kept_from > p and n]
    return [span for span in cut if span[1] > span[0]]


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
