"""The nnsight code path of the logit lens, with the NDIF call mocked at the boundary.

UNTESTED AGAINST A LIVE NDIF SERVICE: `_ndif_backend` (which would ship the trace to NDIF) is
replaced by nnsight's local simulation backend, which serialises and deserialises the trace as the
server would and runs it here. The numbers must equal the local hook engine's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("nnsight")

from specprobe.probe import ModelPair, layers  # noqa: E402

TEXTS = ["The patient had a seizure, then chest pain.", "Chest pain and a seizure again."]
TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"]}


def test_remote_lens_matches_local_engine(tiny_llama, monkeypatch):
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import specprobe.probe.remote as remote_mod

    base, adapter = tiny_llama
    calls = []

    def fake_ndif_backend(lm, remote):
        calls.append((type(lm).__name__, remote))
        return LocalSimulationBackend(lm)  # stands in for the NDIF round trip

    monkeypatch.setattr(remote_mod, "_ndif_backend", fake_ndif_backend)
    tok = AutoTokenizer.from_pretrained(base)
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    tuned_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    got = layers(base_model, tuned_model, TERMS, TEXTS, tokenizer=tok, controls=None, remote=True).to_pandas()
    ref = layers(
        ModelPair.load(str(base), str(adapter)), terms=TERMS, texts=TEXTS, controls=None, progress=False
    ).to_pandas()
    assert len(calls) == 2 * len(TEXTS) and all(r is True for _, r in calls), "one remote trace per text and model"
    assert list(got.columns) == list(ref.columns) and len(got) == len(ref)
    assert (
        got[["text_id", "term", "start", "layer", "model"]].values
        == ref[["text_id", "term", "start", "layer", "model"]].values
    ).all()
    assert np.nanmax(np.abs(got["logp"].to_numpy(float) - ref["logp"].to_numpy(float))) < 1e-4
    assert "untested" in remote_mod.__doc__.lower()


def test_remote_refuses_unhookable_architecture_before_any_call(tiny_llama, monkeypatch):
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    import specprobe.probe.remote as remote_mod
    from specprobe.core.architecture import UnsupportedArchitectureError

    monkeypatch.setattr(remote_mod, "_ndif_backend", lambda lm, remote: pytest.fail("must not reach NDIF"))
    base, _ = tiny_llama
    tok = AutoTokenizer.from_pretrained(base)
    cfg = OPTConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=64,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        do_layer_norm_before=False,
    )  # post-LN
    torch.manual_seed(0)
    m = OPTForCausalLM(cfg).eval()
    with pytest.raises(UnsupportedArchitectureError, match="OPTForCausalLM"):
        layers(m, m, TERMS, TEXTS, tokenizer=tok, controls=None, remote=True)


@pytest.mark.parametrize("name", ["gemma2", "cohere", "granite", "opt_project_out"])
def test_remote_lens_applies_the_heads_post_processing(name):
    """Gemma 2's soft-capping, Cohere's and Granite's logit scaling and OPT's project_out are part of the
    head in the nnsight trace as in the local engine (and compare): the trace once skipped them, giving
    other log-probabilities (off by up to 4.6 nats) or failing on OPT's projected width."""
    from specprobe.testing.tiny_models import train_tokenizer
    from tests.test_layer_architectures import build

    tok = train_tokenizer("gpt2", 600)
    base, tuned = build(name, tok)
    kw: dict[str, Any] = dict(tokenizer=tok, add_bos=True, controls=None)
    got = layers(base, tuned, TERMS, TEXTS, remote="local", **kw).to_pandas()
    ref = layers(base, tuned, TERMS, TEXTS, progress=False, **kw).to_pandas()
    assert len(got) == len(ref) > 0
    assert np.nanmax(np.abs(got["logp"].to_numpy(float) - ref["logp"].to_numpy(float))) < 1e-4


def test_remote_lens_from_a_base_folder_and_an_adapter_folder(tiny_llama):
    """Paths as the README shows them: nnsight could not guess a local folder's tokenizer ('Impossible to
    guess which tokenizer to use'); the layer check ran a probe forward on the lazily loaded meta weights
    ('Tensor.item() cannot be called on meta tensors'); the LoRA attached by nnsight's peft= ran in train mode
    (dropout: two identical calls differed by 0.12). The numbers equal the local hook engine's."""
    base, adapter = tiny_llama
    got = layers(str(base), str(adapter), TERMS, TEXTS, controls=None, remote="local").to_pandas()
    ref = layers(str(base), str(adapter), TERMS, TEXTS, controls=None, progress=False).to_pandas()
    assert len(got) == len(ref)
    assert np.nanmax(np.abs(got["logp"].to_numpy(float) - ref["logp"].to_numpy(float))) < 1e-4
    assert (got.query("model == 'tuned'")["logp"].to_numpy() != got.query("model == 'base'")["logp"].to_numpy()).any()


def test_remote_refuses_an_adapter_folder_beside_a_loaded_base_and_a_max_length_past_the_context(tiny_llama):
    """A loaded base with an adapter folder failed with 'Unrecognized model in .../lora' (the adapter read as
    a full model); a max_length past the context was taken as given (positions the model never had)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = tiny_llama
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    with pytest.raises(ValueError, match="is an adapter: with remote=, give the base as a hub id or folder"):
        layers(model, str(adapter), TERMS, TEXTS, tokenizer=tok, controls=None, remote="local")
    with pytest.raises(ValueError, match="longer than the model's context"):
        layers(model, model, TERMS, TEXTS, tokenizer=tok, controls=None, remote="local", max_length=100_000)
