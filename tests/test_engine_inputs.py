"""TransformerLens and nnsight objects as base / tuned models (issue 11, part 1), on tiny Llama models.

Each object holding the Hugging Face weights unchanged gives the HF path's log-probs within 1e-4;
where TransformerLens weight processing rewrote the weights, the metadata says so and the test
prints how much logits and log-probs moved.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from specprobe.core.engines import engine_kind, unwrap_engine
from specprobe.probe import compare, layers

TEXTS = [
    "Myocardial infarction is suspected; myocardial INFARCTION again, and chest pain.",
    "The patient (45-year-old) had a seizure, then another seizure! Chest pain?",
]
TERMS = {"myocardial infarction": ["Cardiology"], "chest pain": ["Cardiology"], "seizure": ["Neurology"]}
KW: dict[str, Any] = dict(terms=TERMS, texts=TEXTS, controls=["again", "then"], progress=False)
TOL = 1e-4


@pytest.fixture(scope="module")
def reference(tiny_llama):
    base, adapter = tiny_llama
    return compare(str(base), str(adapter), **KW).to_pandas()


def _hf(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base)


def _merged(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload().eval()


def _max_diff(df, ref) -> float:
    assert len(df) == len(ref) and (df["start"].values == ref["start"].values).all()
    return max(float(np.nanmax(np.abs(df[c].values - ref[c].values))) for c in ("logp_base", "logp_tuned"))


def test_other_objects_are_not_engines(tiny_llama):
    hf, tok = _hf(tiny_llama[0])
    assert engine_kind(hf) is None and engine_kind(tok) is None and engine_kind("gpt2") is None
    assert unwrap_engine(hf) == (None, None, "")


def test_nnsight_language_model(tiny_llama, reference):
    from nnsight import LanguageModel

    base, adapter = tiny_llama
    hf, tok = _hf(base)
    lm = LanguageModel(hf, tokenizer=tok)
    assert unwrap_engine(lm)[0] is hf and unwrap_engine(lm)[1] is tok
    comp = compare(lm, str(adapter), **KW)  # the adapter goes onto the model inside; tokenizer from the object
    diff = _max_diff(comp.to_pandas(), reference)
    print(f"nnsight LanguageModel vs HF path: max |logp diff| = {diff:.2e}")
    assert diff < TOL
    assert comp.metadata["engines"]["base"]["engine"] == "nnsight"
    view = layers(lm, str(adapter), **KW)  # the layer views run on the same module
    assert view.metadata["engines"]["base"]["engine"] == "nnsight"


def test_nnsight_around_a_peft_model(tiny_llama, reference):
    from nnsight import LanguageModel
    from peft import PeftModel

    base, adapter = tiny_llama
    hf, tok = _hf(base)
    lm = LanguageModel(PeftModel.from_pretrained(hf, str(adapter)), tokenizer=tok)
    comp = compare(None, lm, **KW)  # base view = adapter disabled, as for a bare PeftModel
    assert _max_diff(comp.to_pandas(), reference) < TOL
    assert "PeftModel" in comp.metadata["engines"]["tuned"]["description"]


def _bridge(model, base, tok, process: bool):
    tl = pytest.importorskip("transformer_lens", reason="transformer-lens (the `tl` extra) is not installed")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        pytest.skip(f"transformer_lens {getattr(tl, '__version__', '?')} has no TransformerBridge")
    bridge = TransformerBridge.boot_transformers(str(base), hf_model=model, tokenizer=tok, device="cpu")
    if process:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge.enable_compatibility_mode(disable_warnings=True)  # fold_ln, centering: HookedTransformer numerics
    return bridge


@pytest.mark.parametrize("process", [False, True], ids=["raw", "processed"])
def test_transformer_bridge(tiny_llama, reference, process):
    base, adapter = tiny_llama
    hf, tok = _hf(base)
    ids = tok("The patient reported chest pain.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_logits = hf(ids).logits.clone()
    b_base = _bridge(hf, base, tok, process)
    b_tuned = _bridge(
        _merged(base, adapter), base, tok, process
    )  # a bridge takes no adapter directory (renamed modules)
    comp = compare(b_base, b_tuned, **KW)
    meta = comp.metadata["engines"]
    assert meta["base"]["engine"] == meta["tuned"]["engine"] == "transformer_bridge"
    assert meta["base"]["weights_processed"] is process
    diff = _max_diff(comp.to_pandas(), reference)
    with torch.no_grad():
        logit_shift = (b_base.original_model(ids).logits - hf_logits).abs().max().item()
    print(f"TransformerBridge processed={process}: max |logit diff| = {logit_shift:.2e}, max |logp diff| = {diff:.2e}")
    assert diff < TOL  # fold_ln and centering keep log-probs (float error only)
    if process:
        assert "weight processing is on" in meta["base"]["note"]
        assert logit_shift > 1e-3  # center_unembed shifts every logit of a position by the same amount
    else:
        assert logit_shift < 1e-4
    view = layers(b_base, b_tuned, **KW)
    assert view.metadata["engines"]["base"]["weights_processed"] is process
    # engine="transformer_lens" reads the caller's own bridges at their hook points (issue 11, part 3)
    tl_view = layers(b_base, b_tuned, **KW, engine="transformer_lens")
    lens_diff = np.nanmax(
        np.abs(tl_view.to_pandas()["logp"].to_numpy(float) - view.to_pandas()["logp"].to_numpy(float))
    )
    print(f"TransformerBridge processed={process}: lens, TL engine vs hooks: max |logp diff| = {lens_diff:.2e}")
    assert lens_diff < TOL


def _hooked(model, base, tok, tmp_path, process: bool, **cfg_kw: Any):
    pytest.importorskip("transformer_lens", reason="transformer-lens (the `tl` extra) is not installed")
    try:
        # TransformerLens < 4 only; typed against the installed version, hence the pyright ignores
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.loading_from_pretrained import (  # pyright: ignore[reportMissingImports]
            convert_hf_model_config,
            get_pretrained_state_dict,
        )
    except ImportError:
        pytest.skip("this transformer_lens has no HookedTransformer (removed in TransformerLens 4)")
    # TL derives the config from a local directory unless its path names a family ("llama"): link it
    link = tmp_path / "tiny-local-model"
    if not link.exists():
        os.symlink(base, link)
    side = cfg_kw.pop("default_padding_side", "right")
    cfg = HookedTransformerConfig(**{**convert_hf_model_config(str(link)), **cfg_kw}, device="cpu")  # pyright: ignore[reportCallIssue]
    ht = HookedTransformer(cfg, tokenizer=tok, move_to_device=False, default_padding_side=side)  # pyright: ignore[reportCallIssue]
    ht.load_and_process_state_dict(
        get_pretrained_state_dict(str(link), cfg, hf_model=model),
        fold_ln=process,
        center_writing_weights=process,
        center_unembed=process,
        fold_value_biases=process,
    )
    return ht.eval()


@pytest.mark.parametrize("process", [False, True], ids=["no_processing", "processed"])
def test_hooked_transformer(tiny_llama, reference, tmp_path, process):
    base, adapter = tiny_llama
    hf, tok = _hf(base)
    ht_base = _hooked(hf, base, tok, tmp_path, process)
    ht_tuned = _hooked(_merged(base, adapter), base, tok, tmp_path, process)
    comp = compare(ht_base, ht_tuned, **KW)
    meta = comp.metadata["engines"]["base"]
    assert meta["engine"] == "hooked_transformer" and meta["weights_processed"] is process
    assert meta["processing"]["fold_ln"] is process and meta["processing"]["center_unembed"] is process
    diff = _max_diff(comp.to_pandas(), reference)
    ids = tok("The patient reported chest pain.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logit_shift = (ht_base(ids) - hf(ids).logits).abs().max().item()
    print(f"HookedTransformer processed={process}: max |logit diff| = {logit_shift:.2e}, max |logp diff| = {diff:.2e}")
    assert diff < TOL
    assert (logit_shift > 1e-3) if process else (logit_shift < 1e-4)
    view = layers(ht_base, ht_tuned, **KW)  # the blocks and ln_final are hooked like HF layers
    assert view.metadata["engines"]["tuned"]["engine"] == "hooked_transformer"


def test_transformer_lens_objects_of_a_model_without_bos(tiny_dir, tmp_path):
    """Qwen2 has no BOS token; TransformerLens gives its tokenizer the EOS as BOS (the caller's tokenizer
    included) but runs it without one (default_prepend_bos=False). specprobe scores with a copy that has no
    BOS, as the Hugging Face path does (prepending TL's would move the log-probs by ~0.1 here)."""
    from tests.conftest import _build

    base, adapter = _build(tiny_dir, "qwen2")
    ref = compare(str(base), str(adapter), **KW).to_pandas()
    hf, tok = _hf(base)
    assert tok.bos_token_id is None
    bridges = (_bridge(hf, base, tok, False), _bridge(_merged(base, adapter), base, _hf(base)[1], False))
    objects = {"TransformerBridge": bridges}
    try:
        hf, tok = _hf(base)
        objects["HookedTransformer"] = (
            _hooked(hf, base, tok, tmp_path, False),
            _hooked(_merged(base, adapter), base, _hf(base)[1], tmp_path, False),
        )
    except pytest.skip.Exception:
        pass  # TransformerLens 4: no HookedTransformer
    for name, (b_base, b_tuned) in objects.items():
        assert b_base.cfg.default_prepend_bos is False and b_base.tokenizer.bos_token_id is not None  # TL's BOS
        comp = compare(b_base, b_tuned, **KW)
        diff = _max_diff(comp.to_pandas(), ref)
        print(f"{name} of a model without BOS (qwen2): max |logp diff| = {diff:.2e}")
        assert diff < TOL
        assert comp.metadata["engines"]["base"]["bos_dropped"] is True
        assert b_base.tokenizer.bos_token_id is not None, "the object's tokenizer is left as it is"


def test_nnsight_lens_under_each_nnsight_version(tiny_llama):
    """The nnsight lens (remote="local") under nnsight 0.7, which the nnterp extra pins: it failed with
    "No module named 'nnsight.intervention.backends.local'", then (its trace body runs in a thread of its own,
    outside no_grad) "Can't call numpy() on Tensor that requires grad"; an adapter folder as tuned with
    "LlamaForCausalLM.__init__() got an unexpected keyword argument 'peft'" (0.7 has no peft=)."""
    import importlib.util

    from peft import PeftModel

    base, adapter = tiny_llama
    kw: dict[str, Any] = dict(terms=TERMS, texts=TEXTS[:1], controls=None)
    ref = layers(str(base), str(adapter), progress=False, **kw).to_pandas()["logp"].to_numpy(float)
    tuned = PeftModel.from_pretrained(_hf(base)[0], str(adapter))
    got = layers(_hf(base)[0], tuned, remote="local", **kw).to_pandas()["logp"].to_numpy(float)
    assert np.nanmax(np.abs(got - ref)) < TOL
    if importlib.util.find_spec("nnsight.modeling.peft") is None:  # nnsight < 0.8
        with pytest.raises(ValueError, match="cannot attach one"):
            layers(str(base), str(adapter), remote="local", **kw)
    else:
        got = layers(str(base), str(adapter), remote="local", **kw).to_pandas()["logp"].to_numpy(float)
        assert np.nanmax(np.abs(got - ref)) < TOL


def test_hooked_transformer_with_left_padding_and_pad_as_bos(tiny_llama, reference, tmp_path):
    """A HookedTransformer whose tokenizer pads on the left computes its own mask when given none, masking
    leading pad tokens; with default_prepend_bos=False and pad == BOS (GPT-2's tokenizers) that was the BOS in
    front of every text: log-probs off by 0.26 from the Hugging Face path's."""
    base, adapter = tiny_llama
    hf, tok = _hf(base)
    kw: dict[str, Any] = dict(default_prepend_bos=False, default_padding_side="left")
    models = [
        _hooked(hf, base, tok, tmp_path, False, **kw),
        _hooked(_merged(base, adapter), base, tok, tmp_path, False, **kw),
    ]
    for ht in models:
        ht.tokenizer.pad_token = ht.tokenizer.bos_token
    diff = _max_diff(compare(*models, **KW).to_pandas(), reference)
    print(f"HookedTransformer, left padding, pad == BOS: max |logp diff| = {diff:.2e}")
    assert diff < TOL
