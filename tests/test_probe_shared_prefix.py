"""Shared-context rows: the options of a question scored in one row equal each option scored alone."""

from __future__ import annotations

import numpy as np
import pytest

from specprobe.core.rows import build_rows, segment_mask
from specprobe.core.scoring import ScoreItem, score_items
from specprobe.finetune.evaluation import build_option_items
from specprobe.finetune.prompts import PromptFormat
from specprobe.probe import ModelPair
from specprobe.terms.datasets import QARecord

OPTIONS = ("aspirin", "intravenous heparin", "insulin", "bed rest and fluids")


def _records() -> list[QARecord]:
    stems = [
        "A man of 60 has chest pain on exertion. Best first drug?",
        "A woman has a severe headache. Next step?",
        "Thirst and polyuria in a child. Treatment?",
    ]
    return [QARecord(f"q{i}", s, OPTIONS, OPTIONS[i], ("Cardiology",)) for i, s in enumerate(stems)]


def test_rows_share_the_context_once():
    items = [ScoreItem((1, 5, 6, 7, 8), (3, 4)), ScoreItem((1, 5, 6, 9), (3,)), ScoreItem((2, 3, 4), (2,))]
    rows = build_rows(items, share_prefixes=True)
    assert len(rows) == 2
    shared = next(r for r in rows if r.segments is not None)
    assert shared.ids == [1, 5, 6, 7, 8, 9] and shared.segments == [0, 0, 0, 1, 1, 2]
    assert shared.position_ids == [0, 1, 2, 3, 4, 3]
    # item 0 slot 1 (token 8 at position 4) is predicted from its own token 7 (packed index 3);
    # item 1's token 9 (position 3) from the last context token (index 2)
    assert (0, 1, 3, 8) in shared.scored and (1, 0, 2, 9) in shared.scored
    mask = segment_mask([shared], len(shared.ids))[0, 0]
    assert mask[5, :3].all() and not mask[5, 3] and not mask[5, 4] and mask[5, 5]
    assert build_rows(items) and all(r.segments is None for r in build_rows(items))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_shared_prefix_scores_equal_separate_scores(tiny_pair, batch_size):
    arch, base, adapter = tiny_pair
    pair = ModelPair.load(str(base), str(adapter))
    fmt = PromptFormat(continuation="text")
    items, _ = build_option_items(pair.tokenizer, _records(), fmt, 10_000)
    assert len(build_rows(items, share_prefixes=True)) == 3  # one row per question
    for variant in pair.variants:
        with pair.view(variant) as split:
            alone = score_items(split, items, batch_size=batch_size)
            shared = score_items(split, items, batch_size=batch_size, share_prefixes=True)
        for a, s in zip(alone, shared):
            assert a.logps.shape == s.logps.shape
            np.testing.assert_allclose(s.logps, a.logps, atol=1e-4, rtol=0, err_msg=f"{arch} {variant}")


def test_evaluation_shares_prompts_and_falls_back_when_the_mask_is_ignored(tiny_llama, monkeypatch, caplog):
    from specprobe.core import rows as rows_module
    from specprobe.finetune import evaluation

    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    fmt = PromptFormat(continuation="text")
    recs = _records()
    kw = dict(variants=["base", "tuned"], max_length=10_000)
    plain = evaluation.score_records(pair, recs, fmt, share_prompt=False, **kw)
    shared = evaluation.score_records(pair, recs, fmt, **kw)
    np.testing.assert_allclose(
        np.array(shared["option_logp"].tolist()), np.array(plain["option_logp"].tolist()), atol=1e-4
    )

    # an architecture that ignored the segment mask (every token sees every earlier one) is detected
    def ignored_mask(rows, width):
        causal = segment_mask(rows, width)
        return causal | __import__("torch").ones_like(causal).tril()

    monkeypatch.setattr(rows_module, "segment_mask", ignored_mask)
    monkeypatch.setattr("specprobe.core.scoring.segment_mask", ignored_mask)
    with caplog.at_level("WARNING"):
        fallback = evaluation.score_records(pair, recs, fmt, **kw)
    assert "scoring each option separately" in caplog.text
    np.testing.assert_allclose(
        np.array(fallback["option_logp"].tolist()), np.array(plain["option_logp"].tolist()), atol=1e-4
    )


def test_the_sharing_check_probes_options_that_really_share(monkeypatch):
    """The check scored the first question's options shared and alone; where they shared nothing (each
    cut differently from the left) both ways ran the same plain rows and the check passed on any model,
    trusting shared rows later on a model that ignores the segment mask. It now probes the first group
    that shares; a stand-in for such a model is caught."""
    from types import SimpleNamespace

    import torch

    import specprobe.core.scoring as scoring
    from specprobe.finetune.evaluation import prompt_sharing_works

    def mask_ignoring(split, items, batch_size=8, share_prefixes=False, **kw):
        out = []
        for row_items, row in ((r.items, r) for r in build_rows(items, share_prefixes)):
            for _ in row_items:
                out.append(SimpleNamespace(logps=np.full(1, 1.0 if row.segments is not None else 0.0)))
        return out

    monkeypatch.setattr(scoring, "score_items", mask_ignoring)
    split = SimpleNamespace(causal_lm=torch.nn.Linear(1, 1))
    first_question = [ScoreItem((1, 2, 3, 9), (3,)), ScoreItem((1, 4, 5, 9), (3,))]  # no shared prompt
    second_question = [ScoreItem((1, 6, 7, 8), (3,)), ScoreItem((1, 6, 7, 9), (3,))]
    assert not prompt_sharing_works(split, first_question + second_question)
    assert not prompt_sharing_works(split, first_question)  # nothing shares: nothing to trust
