"""By default a batch is bounded by the device's token budget, not by a small row cap: on a GPU (budget
16,384 tokens) a few dozen questions go through in one forward pass per view. With 8 rows per pass the H100
bench ran 8 passes per view for 62 questions, each too small to keep the GPU busy (bench/results-cuda.json)."""

from __future__ import annotations

import pytest

from specprobe.core import scoring
from specprobe.core.batch_defaults import DEFAULT_BATCH_TOKENS
from specprobe.probe import ModelPair, compare

TEXTS = [f"Patient {i} had chest pain and a seizure after the {i}th dose." for i in range(40)]
TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"]}


def _forward_passes(pair: ModelPair, monkeypatch, budget: int, **kwargs) -> tuple[int, object]:
    """compare() with the token budget a device of that budget gets by default; the backbone's forward
    passes it made, and its result."""
    monkeypatch.setattr(scoring, "batch_token_budget", lambda device, max_batch_tokens="auto": budget)
    calls = []
    hook = pair.base_model.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    try:
        comp = compare(pair, terms=TERMS, texts=TEXTS, controls=None, progress=False, **kwargs)
    finally:
        hook.remove()
    return len(calls), comp


@pytest.fixture(scope="module")
def pair(tiny_llama):
    base, adapter = tiny_llama
    return ModelPair.load(str(base), str(adapter))


def test_on_the_gpu_budget_forty_questions_take_one_pass_per_view(pair, monkeypatch):
    passes, _ = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"])
    assert passes == 2  # base and tuned, one batch each


def test_the_token_budget_still_bounds_a_pass(pair, monkeypatch):
    longest = max(len(pair.tokenizer(t)["input_ids"]) for t in TEXTS) + 1
    passes, _ = _forward_passes(pair, monkeypatch, 10 * longest)  # inputs end at their last term: >= 10 rows fit
    assert 2 < passes <= 2 * -(-len(TEXTS) // 10)


def test_the_default_gives_the_numbers_of_small_batches(pair, monkeypatch):
    _, wide = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"])
    _, narrow = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"], batch_size=8)
    a, b = wide.to_pandas(), narrow.to_pandas()
    assert len(a) == len(b) == 2 * len(TEXTS)
    assert (a["logp_base"] - b["logp_base"]).abs().max() < 1e-5
    assert (a["logp_tuned"] - b["logp_tuned"]).abs().max() < 1e-5
