"""Property tests (hypothesis): shared-prefix rows score exactly what per-option scoring scores.

`score_items(..., share_prefixes=True)` packs the items that share their unscored context (the
options of one multiple-choice question) into one row with a segment mask and per-item position
ids (specprobe/core/rows.py). On random prompts and option token sequences, on a tiny Llama
(RoPE) and a tiny GPT-2 (learned positions), base and LoRA-tuned views, every scored
log-probability must equal the one its item gets alone (float32, 1e-5), and the batch size must
not change any result (1 vs 7).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specprobe.core.items import ScoreItem
from specprobe.core.models import ModelPair
from specprobe.core.rows import build_rows
from specprobe.core.scoring import score_items

ATOL = 1e-5
SETTINGS = dict(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONTEXT = 128  # the tiny models' context (tiny_config's default)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these forward passes are tiny, and on a shared machine torch's thread pool
    costs far more than it gains (about 30x slower on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request) -> ModelPair:
    """The tiny model of each architecture with its LoRA adapter, loaded once per module (float32, CPU)."""
    base, adapter = request.getfixturevalue(f"tiny_{request.param}")
    loaded = ModelPair.load(str(base), str(adapter), device="cpu", dtype="float32")
    loaded.metadata["arch"] = request.param
    return loaded


def _vocab(pair: ModelPair) -> int:
    return int(pair.base_model.get_input_embeddings().weight.shape[0])


@st.composite
def questions(
    draw,
    vocab: int,
    max_questions: int = 3,
    max_options: int = 5,
    max_prompt: int = 24,
    max_option: int = 6,
    every_position: bool = False,
) -> list[ScoreItem]:
    """Items for 1..3 questions: each a random prompt and 1..5 random option continuations.

    Options may repeat, be prefixes of one another, or be one token long; a question may reuse an
    earlier question's prompt (so more items share one context). By default each item scores a
    random non-empty subset of its option's positions (the smallest defines its context); with
    `every_position`, all of them (as multiple-choice evaluation does).
    """
    token = st.integers(0, vocab - 1)
    items: list[ScoreItem] = []
    prompts: list[list[int]] = []
    for _ in range(draw(st.integers(1, max_questions))):
        if prompts and draw(st.booleans()):
            prompt = draw(st.sampled_from(prompts))
        else:
            prompt = draw(st.lists(token, min_size=1, max_size=max_prompt))
            prompts.append(prompt)
        options: list[list[int]] = []
        for _ in range(draw(st.integers(1, max_options))):
            if options and draw(st.integers(0, 4)) == 0:  # a repeat or a prefix of an earlier option
                earlier = draw(st.sampled_from(options))
                option = earlier[: draw(st.integers(1, len(earlier)))]
            else:
                option = draw(st.lists(token, min_size=1, max_size=max_option))
            options.append(option)
            ids = tuple(prompt + option)
            cont = list(range(len(prompt), len(ids)))
            if every_position:
                positions = tuple(cont)
            else:
                positions = tuple(sorted(draw(st.sets(st.sampled_from(cont), min_size=1))))
            items.append(ScoreItem(ids, positions))
    return items


def _assert_same(got, want, what: str, atol: float = ATOL) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.logps.shape == w.logps.shape, f"{what}: item {i} has {g.logps.shape} scores, expected {w.logps.shape}"
        assert np.all(np.isfinite(g.logps)), f"{what}: item {i} has non-finite scores {g.logps}"
        np.testing.assert_allclose(g.logps, w.logps, atol=atol, rtol=0, err_msg=f"{what}: item {i}")


def _run(pair: ModelPair, variant: str, items, **kw):
    with pair.view(variant) as split:
        return score_items(split, items, **kw)


VARIANTS = ["base", "tuned"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_rows_equal_per_option_scores(pair, variant):
    @settings(**SETTINGS)
    @given(data=st.data())
    def check(data):
        items = data.draw(questions(_vocab(pair)))
        rows = build_rows(items, share_prefixes=True)
        # every item appears in exactly one row, and rows never outnumber items
        assert sorted(i for r in rows for i in r.items) == list(range(len(items)))
        assert sum(len(r.scored) for r in rows) == sum(len(it.positions) for it in items)
        alone = _run(pair, variant, items, batch_size=8)
        shared = _run(pair, variant, items, batch_size=8, share_prefixes=True)
        _assert_same(shared, alone, f"{pair.metadata['arch']} {variant} shared vs alone")

    check()


@pytest.mark.parametrize("variant", VARIANTS)
def test_mc_options_shared_equal_alone(pair, variant):
    """The multiple-choice shape: every option position scored, one question per row, summed log-probs equal."""

    @settings(**SETTINGS)
    @given(data=st.data())
    def check(data):
        items = data.draw(questions(_vocab(pair), max_questions=2, every_position=True))
        alone = _run(pair, variant, items, batch_size=8)
        shared = _run(pair, variant, items, batch_size=8, share_prefixes=True)
        _assert_same(shared, alone, f"{pair.metadata['arch']} {variant} MC")
        sums_a = np.array([s.logps.sum() for s in alone])
        sums_s = np.array([s.logps.sum() for s in shared])
        np.testing.assert_allclose(sums_s, sums_a, atol=ATOL * max(len(it.positions) for it in items), rtol=0)

    check()


@pytest.mark.parametrize("share", [False, True], ids=["plain", "shared"])
def test_batch_size_invariance(pair, share):
    """batch_size 1 and 7 give the same scores, with and without shared prefixes."""

    @settings(**SETTINGS)
    @given(data=st.data())
    def check(data):
        items = data.draw(questions(_vocab(pair)))
        one = _run(pair, "tuned", items, batch_size=1, share_prefixes=share)
        seven = _run(pair, "tuned", items, batch_size=7, share_prefixes=share)
        _assert_same(seven, one, f"{pair.metadata['arch']} share={share} batch 7 vs 1")

    check()


def test_token_budget_and_mask_do_not_change_scores(pair):
    """A tiny token budget (every row alone) and an explicit padding mask give the plain scores too."""

    @settings(**SETTINGS)
    @given(data=st.data())
    def check(data):
        items = data.draw(questions(_vocab(pair)))
        ref = _run(pair, "base", items, batch_size=7)
        budget = _run(pair, "base", items, batch_size=7, max_batch_tokens=1, share_prefixes=True)
        masked = _run(pair, "base", items, batch_size=7, attention_mask=True)
        _assert_same(budget, ref, f"{pair.metadata['arch']} max_batch_tokens=1 shared")
        _assert_same(masked, ref, f"{pair.metadata['arch']} attention_mask=True")

    check()


def test_shared_rows_capture_the_same_layer_states(pair):
    """capture_layers: the residual stream at each scored position is the one its item gets alone."""

    @settings(**{**SETTINGS, "max_examples": 10})
    @given(data=st.data())
    def check(data):
        items = data.draw(questions(_vocab(pair), max_questions=2))
        alone = _run(pair, "tuned", items, batch_size=4, capture_layers=True)
        shared = _run(pair, "tuned", items, batch_size=4, capture_layers=True, share_prefixes=True)
        for i, (a, s) in enumerate(zip(alone, shared)):
            assert a.layer_states is not None and s.layer_states is not None
            assert s.layer_states.shape == a.layer_states.shape
            np.testing.assert_allclose(
                s.layer_states.numpy(),
                a.layer_states.numpy(),
                atol=1e-4,
                rtol=1e-5,
                err_msg=f"{pair.metadata['arch']} item {i} layer states",
            )

    check()


def test_shared_row_longer_than_the_context(pair):
    """Many long options make a packed row longer than the model's context while every item's own
    positions stay inside it: the scores must still be the per-option ones (or the call must refuse)."""

    @settings(**{**SETTINGS, "max_examples": 8})
    @given(data=st.data())
    def check(data):
        vocab = _vocab(pair)
        token = st.integers(0, vocab - 1)
        prompt = data.draw(st.lists(token, min_size=50, max_size=60))
        options = [data.draw(st.lists(token, min_size=20, max_size=CONTEXT - 1 - len(prompt))) for _ in range(4)]
        items = [ScoreItem(tuple(prompt + o), tuple(range(len(prompt), len(prompt) + len(o)))) for o in options]
        assert max(it.needed_length for it in items) <= CONTEXT
        rows = build_rows(items, share_prefixes=True)
        assert len(rows) == 1 and rows[0].needed_length > CONTEXT
        alone = _run(pair, "base", items, batch_size=4)
        shared = _run(pair, "base", items, batch_size=4, share_prefixes=True)
        _assert_same(shared, alone, f"{pair.metadata['arch']} packed row of {rows[0].needed_length} tokens")

    check()
