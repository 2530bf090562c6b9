"""How many rows a batch holds by default depends on the device, as the token budget does: 8 on a CPU
(larger batches gain no speed there), 64 on a GPU, where the 16,384-token budget should bind. With 8 rows
on the H100, 62 questions took 8 forward passes per view of ~1,200 tokens each, each too small to keep the
GPU busy (bench/results-cuda.json)."""

from __future__ import annotations

import pytest
import torch

from specprobe.core import scoring
from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_TOKENS
from specprobe.core.scoring import batch_rows
from specprobe.probe import ModelPair, compare

TEXTS = [f"Patient {i} had chest pain and a seizure after the {i}th dose." for i in range(40)]
TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"]}


def test_rows_by_device_unless_given():
    assert batch_rows(torch.device("cpu")) == DEFAULT_BATCH_ROWS["cpu"] == 8
    assert batch_rows(torch.device("cuda", 1)) == DEFAULT_BATCH_ROWS["cuda"]
    # on a GPU, rows of typical question length (<= 256 tokens) fill the token budget before the row cap
    assert DEFAULT_BATCH_ROWS["cuda"] * 256 >= DEFAULT_BATCH_TOKENS["cuda"]
    assert batch_rows(torch.device("cuda"), 3) == batch_rows(torch.device("cpu"), 3) == 3


def _forward_passes(pair: ModelPair, monkeypatch, budget: int, **kwargs):
    """compare() with `budget` tokens per batch; the backbone's forward passes, and the result."""
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


def test_with_the_gpu_defaults_forty_questions_take_one_pass_per_view(pair, monkeypatch):
    monkeypatch.setitem(DEFAULT_BATCH_ROWS, "cpu", DEFAULT_BATCH_ROWS["cuda"])  # this CPU gets a GPU's defaults
    passes, comp = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"])
    assert passes == 2  # base and tuned, one batch each
    assert comp.metadata["options"]["batch_size"] == DEFAULT_BATCH_ROWS["cuda"]  # the rows it ran with


def test_on_a_cpu_the_default_is_eight_rows_and_recorded(pair, monkeypatch):
    passes, comp = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"])
    assert passes == 2 * -(-len(TEXTS) // 8)
    assert comp.metadata["options"]["batch_size"] == 8


def test_the_token_budget_still_bounds_a_pass(pair, monkeypatch):
    longest = max(len(pair.tokenizer(t)["input_ids"]) for t in TEXTS) + 1
    passes, _ = _forward_passes(pair, monkeypatch, 4 * longest, batch_size=64)  # inputs end at their last term
    assert 2 * -(-len(TEXTS) // 64) < passes <= 2 * -(-len(TEXTS) // 4)


def test_one_pass_gives_the_numbers_of_small_batches(pair, monkeypatch):
    _, wide = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"], batch_size=64)
    _, narrow = _forward_passes(pair, monkeypatch, DEFAULT_BATCH_TOKENS["cuda"], batch_size=8)
    a, b = wide.to_pandas(), narrow.to_pandas()
    assert len(a) == len(b) == 2 * len(TEXTS)
    assert (a["logp_base"] - b["logp_base"]).abs().max() < 1e-5
    assert (a["logp_tuned"] - b["logp_tuned"]).abs().max() < 1e-5
