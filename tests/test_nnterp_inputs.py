"""nnterp `StandardizedTransformer` objects as base / tuned models, on tiny local models (nothing downloaded).

A StandardizedTransformer is an nnsight `LanguageModel` whose modules nnterp renames (layers, ln_final,
lm_head); the Hugging Face model inside is left as it is, so specprobe runs that module and gets the HF
path's log-probs within 1e-4, in `compare` and in the layer views. nnterp is the optional `nnterp`
extra; nnterp 1.3 imports `nnsight.intervention.tracing`, which nnsight 0.8 removed (it needs
nnsight 0.6 or 0.7), so these tests skip, naming the import error, where it cannot be imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from specprobe.core.engines import engine_kind, unwrap_engine
from specprobe.probe import compare, layers

try:
    from nnterp import StandardizedTransformer
except ImportError as exc:  # not installed, or an nnsight it does not support
    pytest.skip(f"nnterp (the `nnterp` extra) cannot be imported: {exc}", allow_module_level=True)

TEXTS = [
    "Myocardial infarction is suspected; myocardial INFARCTION again, and chest pain.",
    "The patient (45-year-old) had a seizure, then another seizure! Chest pain?",
]
TERMS = {"myocardial infarction": ["Cardiology"], "chest pain": ["Cardiology"], "seizure": ["Neurology"]}
KW: dict[str, Any] = dict(terms=TERMS, texts=TEXTS, controls=["again", "then"], progress=False)
TOL = 1e-4


def _hf(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base)


def _merged(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload().eval()


def _max_diff(df, ref, columns=("logp_base", "logp_tuned")) -> float:
    assert len(df) == len(ref) and (df["start"].values == ref["start"].values).all()
    return max(float(np.nanmax(np.abs(df[c].to_numpy(float) - ref[c].to_numpy(float)))) for c in columns)


def _standardized(model, tok) -> Any:
    st = StandardizedTransformer(model, tokenizer=tok)
    assert engine_kind(st) == "nnsight"
    inner, tokenizer, description = unwrap_engine(st)
    assert inner is model and tokenizer is tok, "specprobe runs the Hugging Face module nnterp wraps"
    assert description.startswith("nnterp StandardizedTransformer around")
    return st


def test_standardized_transformer_as_base_and_tuned(tiny_pair):
    """Each architecture: the base as a StandardizedTransformer (the adapter directory goes onto the model
    inside), then both as StandardizedTransformers (the tuned one around the merged model)."""
    arch, base, adapter = tiny_pair
    ref = compare(str(base), str(adapter), **KW).to_pandas()
    assert np.nanmax(np.abs(ref["logp_tuned"] - ref["logp_base"])) > 1e-3, "the adapter changes the log-probs"
    hf, tok = _hf(base)
    comp = compare(_standardized(hf, tok), str(adapter), **KW)
    diff = _max_diff(comp.to_pandas(), ref)
    meta = comp.metadata["engines"]["base"]
    assert meta["engine"] == "nnsight" and meta["class"] == "nnterp.standardized_transformer.StandardizedTransformer"
    hf, tok = _hf(base)  # compare put the adapter onto the first one
    both = compare(_standardized(hf, tok), _standardized(_merged(base, adapter), tok), **KW)
    diff_both = _max_diff(both.to_pandas(), ref)
    print(f"nnterp {arch}: max |logp diff| vs HF path: base only {diff:.2e}, base and tuned {diff_both:.2e}")
    assert diff < TOL and diff_both < TOL
    assert both.metadata["engines"]["tuned"]["engine"] == "nnsight"


def test_standardized_transformer_built_from_a_path(tiny_llama):
    """nnterp loads the local directory itself (its own tokenizer); the tuned model is the adapter directory."""
    base, adapter = tiny_llama
    ref = compare(str(base), str(adapter), **KW).to_pandas()
    st = StandardizedTransformer(str(base))
    comp = compare(st, str(adapter), **KW)
    assert _max_diff(comp.to_pandas(), ref) < TOL


def test_standardized_transformer_in_the_layer_views(tiny_llama):
    """The logit lens runs the same module: equal to the Hugging Face path's within 1e-4."""
    base, adapter = tiny_llama
    ref = layers(str(base), str(adapter), **KW).to_pandas()
    hf, tok = _hf(base)
    view = layers(_standardized(hf, tok), _standardized(_merged(base, adapter), tok), **KW)
    assert view.metadata["engines"]["base"]["engine"] == view.metadata["engines"]["tuned"]["engine"] == "nnsight"
    df = view.to_pandas()
    assert len(df) == len(ref) and (df["layer"].to_numpy() == ref["layer"].to_numpy()).all()
    diff = float(np.nanmax(np.abs(df["logp"].to_numpy(float) - ref["logp"].to_numpy(float))))
    print(f"nnterp layers: max |logp diff| vs HF path = {diff:.2e}")
    assert diff < TOL
