"""The nnsight lens (remote=) takes base, tuned and tokenizer as `pathlib.Path`s, as `ModelPair.load` does:
a Path base failed with nnsight's "Impossible to guess which tokenizer to use", a Path tokenizer with
"AttributeError: 'PosixPath' object has no attribute 'pad_token_id'". Both find the tokenizer through
`core.models.model_tokenizer`, the one `ModelPair.load` uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnsight")

from specprobe.core.models import ModelLoadError  # noqa: E402
from specprobe.probe import layers  # noqa: E402

TEXTS = ["The patient had a seizure, then chest pain."]
TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"]}


def _logp(base, tuned, **kwargs) -> np.ndarray:
    return (
        layers(base, tuned, TERMS, TEXTS, controls=None, progress=False, **kwargs).to_pandas()["logp"].to_numpy(float)
    )


def test_paths_as_base_adapter_and_tokenizer(tiny_llama):
    base, adapter = tiny_llama
    ref = _logp(str(base), str(adapter))
    assert np.nanmax(np.abs(_logp(Path(base), Path(adapter), remote="local") - ref)) < 1e-4
    got = _logp(str(base), str(adapter), tokenizer=Path(base), remote="local")
    assert np.nanmax(np.abs(got - ref)) < 1e-4


def test_a_loaded_model_without_a_name_is_told_alike(tiny_llama):
    from transformers import AutoModelForCausalLM

    from specprobe.probe import ModelPair
    from specprobe.probe.remote import _own_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama[0])
    model.config._name_or_path = ""
    message = r"^pass tokenizer= \(LlamaForCausalLM is a loaded model without a name_or_path\)"
    with pytest.raises(ModelLoadError, match=message):
        _own_tokenizer(model, None)
    with pytest.raises(ModelLoadError, match=message):
        ModelPair.load(model, str(tiny_llama[1]), check=False)


def test_a_hub_id_pinned_to_a_revision_reaches_nnsight_split(monkeypatch):
    """ "org/name@<revision>" (how `specprobe run` pins its hub base, and what `ModelPair.load` takes) went to
    nnsight whole, which looked for a repository called "name@<revision>"; the model and its tokenizer now load
    "org/name" at that revision, the adapter attached to the pinned base."""
    import nnsight
    import torch

    import specprobe.probe.remote as remote

    calls, tokenizer_calls, tok = [], [], object()

    class FakeLM:
        def __init__(self, name, **kwargs):
            calls.append((name, kwargs))
            self.tokenizer, self.dispatched, self._module = kwargs.get("tokenizer"), True, torch.nn.Linear(1, 1)

    def fake_tokenizer(model, tokenizer=None, revision=None):
        tokenizer_calls.append((model, revision))
        return tok

    monkeypatch.setattr(nnsight, "LanguageModel", FakeLM)
    monkeypatch.setattr(remote, "model_tokenizer", fake_tokenizer)
    monkeypatch.setattr(remote, "_is_adapter", lambda name: name == "adapters/x")
    remote._load_models("org/base@abc123", "org/tuned@v2", None, remote=True)
    assert calls == [
        ("org/base", {"tokenizer": tok, "revision": "abc123"}),
        ("org/tuned", {"tokenizer": tok, "revision": "v2"}),
    ]
    assert tokenizer_calls == [("org/base", "abc123"), ("org/tuned", "v2")]
    calls.clear()
    remote._load_models("org/base@abc123", "adapters/x", None, remote=True)
    assert calls[1] == ("org/base", {"tokenizer": tok, "peft": "adapters/x", "revision": "abc123"})
