"""Model objects in states that would change the numbers silently: 16-bit weights in the direct logit
attribution, a PeftModel with its adapter layers switched off, a tuned engine object with a tokenizer of
its own, nnsight objects in train mode on the remote lens path, TransformerLens-processed weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from specprobe.core.models import ModelLoadError
from specprobe.probe import ModelPair, compare, layers, logit_attribution

TEXTS = ["The patient had chest pain and a seizure.", "Chest pain again, then a seizure."]
TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"]}


def _hf(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_logit_attribution_of_16_bit_models(dtype, tiny_llama, tiny_gpt2):
    """The final norm's match and the adds-up check allow the model's own 16-bit rounding (they compared a
    16-bit norm's output with a float64 recomputation at a float64 tolerance: UnsupportedArchitectureError
    'does not match them (off by 0.00129)' for every model, bfloat16 on a GPU being the default dtype)."""
    for base, adapter in (tiny_llama, tiny_gpt2):
        kw: dict = dict(terms=TERMS, texts=TEXTS, progress=False)
        ref = logit_attribution(str(base), str(adapter), **kw).to_pandas()
        got = logit_attribution(str(base), str(adapter), dtype=dtype, device="cpu", **kw).to_pandas()
        assert len(got) == len(ref)
        diff = np.abs(got["contribution"].to_numpy() - ref["contribution"].to_numpy()).max()
        assert diff < 1e-2, (base.name, dtype, diff)  # measured 2e-4 (float16), 1.5e-3 (bfloat16)


def test_peft_model_with_disabled_adapter_layers_is_refused(tiny_llama):
    """peft's disable_adapter_layers() made the tuned view the base: every delta came out exactly 0."""
    from peft import PeftModel

    base, adapter = tiny_llama
    peft_model = PeftModel.from_pretrained(_hf(base)[0], str(adapter))
    peft_model.base_model.disable_adapter_layers()  # pyright: ignore[reportCallIssue]
    with pytest.raises(ModelLoadError, match="adapter layers are disabled"):
        ModelPair.load(None, peft_model)
    peft_model.base_model.enable_adapter_layers()  # pyright: ignore[reportCallIssue]
    df = compare(None, peft_model, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    assert (df["logp_tuned"] - df["logp_base"]).abs().max() > 1e-3


def _other_tokenizer(tok):
    from specprobe.testing.tiny_models import corpus_lines, train_tokenizer

    other = train_tokenizer("llama", len(tok), lines=corpus_lines()[::3])
    assert len(other) == len(tok) and other.get_vocab() != tok.get_vocab()
    return other


def test_tuned_nnsight_model_with_another_tokenizer_is_refused(tiny_llama):
    """The tuned object's own tokenizer was ignored: it was scored with the base's token ids."""
    pytest.importorskip("nnsight")
    from nnsight import LanguageModel

    base, _ = tiny_llama
    hf, tok = _hf(base)
    tuned = LanguageModel(_hf(base)[0], tokenizer=_other_tokenizer(tok))
    kw: dict = dict(terms=TERMS, texts=TEXTS, controls=None)
    for base_obj in (LanguageModel(hf, tokenizer=tok), str(base)):
        with pytest.raises(ModelLoadError, match="different tokenizers"):
            compare(base_obj, tuned, progress=False, **kw)
    with pytest.raises(ValueError, match="different tokenizers"):
        layers(LanguageModel(hf, tokenizer=tok), tuned, remote="local", **kw)


def test_remote_lens_takes_nnsight_objects_and_runs_them_in_eval_mode(tiny_gpt2):
    """LanguageModel objects crashed the remote path (nnsight 0.8's LanguageModel is no `NNsight`: TypeError
    'stat: path should be string ... not LanguageModel'), and models in train mode ran with dropout on
    (GPT-2: the same call twice differed by 0.26 in log-prob)."""
    pytest.importorskip("nnsight")
    from nnsight import LanguageModel
    from peft import PeftModel

    base, adapter = tiny_gpt2
    kw: dict = dict(terms=TERMS, texts=TEXTS[:1], controls=None)
    ref = layers(str(base), str(adapter), progress=False, **kw).to_pandas()["logp"].to_numpy(float)
    hf, tok = _hf(base)
    tuned = PeftModel.from_pretrained(_hf(base)[0], str(adapter))
    b, t = LanguageModel(hf.train(), tokenizer=tok), LanguageModel(tuned.train(), tokenizer=tok)
    got = layers(b, t, remote="local", **kw).to_pandas()["logp"].to_numpy(float)
    assert np.nanmax(np.abs(got - ref)) < 1e-4  # dropout on: 0.18
    assert not hf.training and not tuned.training


def test_logit_attribution_warns_on_processed_transformer_lens_weights(tiny_llama):
    """center_unembed shifts every logit of a position: the contributions moved by 0.04 (of 0.3) against the
    Hugging Face model's, recorded in metadata only."""
    pytest.importorskip("transformer_lens")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        pytest.skip("this transformer_lens has no TransformerBridge")
    base, _ = tiny_llama
    hf, tok = _hf(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(base), hf_model=hf, tokenizer=tok, device="cpu")
        bridge.enable_compatibility_mode(disable_warnings=True)
    with pytest.warns(UserWarning, match="weight processing"):
        logit_attribution(bridge, bridge, terms=TERMS, texts=TEXTS, progress=False)


def test_metadata_records_the_dtype_of_model_objects(tiny_llama):
    """Objects are used as given (not cast): the metadata said "float32" (the dtype= default) for a float16
    model object, and the dtype asked for where it differed from the object's."""

    base, adapter = tiny_llama
    half = _hf(base)[0].half()
    assert ModelPair.load(half, str(adapter), check=False).metadata["dtype"] == "float16"
    assert ModelPair.load(half, str(adapter), dtype="bfloat16", check=False).metadata["dtype"] == "float16"
    hf, tok = _hf(base)
    mixed = ModelPair.load(hf, _hf(base)[0].half(), tokenizer=tok, check=False)
    assert mixed.metadata["dtype"] == "base float32, tuned float16"
    assert ModelPair.load(str(base), str(adapter), check=False).metadata["dtype"] == "float32"


def test_mixed_dtypes_are_warned_about(tiny_llama, caplog):
    """base bfloat16 against tuned float32 with the same weights: every delta was off by up to 2.4e-3 (rounding
    alone), said only in metadata["dtype"]."""
    base, _ = tiny_llama
    hf, tok = _hf(base)
    with caplog.at_level("WARNING", logger="specprobe.core.models"):
        ModelPair.load(hf, _hf(base)[0].bfloat16(), tokenizer=tok, check=False)
    assert "different dtypes (base float32, tuned bfloat16)" in caplog.text


def _peft(base, adapter, hf=None):
    from peft import PeftModel

    return PeftModel.from_pretrained(_hf(base)[0] if hf is None else hf, str(adapter))


def test_remote_lens_refuses_a_peft_model_with_disabled_adapter_layers(tiny_llama):
    """The nnsight lens ran a tuned PeftModel inside `with model.disable_adapter():` (or after
    disable_adapter_layers()) as it was: every delta came out 0.0 (0.92 with the adapter on)."""
    pytest.importorskip("nnsight")
    from nnsight import LanguageModel

    base, adapter = tiny_llama
    hf, tok = _hf(base)
    tuned = _peft(base, adapter)
    kw: dict = dict(terms=TERMS, texts=TEXTS, controls=None)
    with tuned.disable_adapter(), pytest.raises(ModelLoadError, match="adapter layers are disabled"):
        layers(LanguageModel(hf, tokenizer=tok), LanguageModel(tuned, tokenizer=tok), remote="local", **kw)
    tuned.base_model.disable_adapter_layers()  # pyright: ignore[reportCallIssue]
    with pytest.raises(ModelLoadError, match="adapter layers are disabled"):
        layers(hf, tuned, tokenizer=tok, remote="local", **kw)


def test_one_peft_model_as_base_and_tuned_is_refused_saying_what_to_do(tiny_llama):
    """nnsight lens: the same LanguageModel(PeftModel) twice, or its base model (which peft changed in place)
    as base, ran the adapter in both: every delta 0.0; a bare PeftModel twice failed with 'Impossible to guess
    which tokenizer to use', base=None with a request for the hub model 'None'. compare: 'tuned is a PeftModel
    on a different base object than `base`' for the very same object."""
    pytest.importorskip("nnsight")
    from nnsight import LanguageModel

    base, adapter = tiny_llama
    hf, tok = _hf(base)
    tuned = _peft(base, adapter, hf)
    lm = LanguageModel(tuned, tokenizer=tok)
    kw: dict = dict(terms=TERMS, texts=TEXTS, controls=None)
    for pair in ((lm, lm), (tuned, tuned), (LanguageModel(hf, tokenizer=tok), lm), (hf, tuned)):
        with pytest.raises(ModelLoadError, match="same PeftModel .* leave remote= off and pass base=None"):
            layers(*pair, remote="local", **kw)
    with pytest.raises(ValueError, match=r"needs base=.* leave remote= off"):
        layers(None, lm, remote="local", **kw)
    for pair in ((lm, lm), (tuned, tuned)):
        with pytest.raises(ModelLoadError, match="same PeftModel: pass base=None"):
            compare(*pair, progress=False, **kw)
    view = layers(None, lm, progress=False, **kw).wide()  # as the messages say
    assert view["delta"].abs().max() > 0.1


def test_model_objects_on_the_meta_device_are_refused(tiny_llama):
    """Weights never loaded (built under torch.device('meta')) crashed in the layer check with 'Tensor.item()
    cannot be called on meta tensors'."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base, adapter = tiny_llama
    hf, tok = _hf(base)
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    kw: dict = dict(terms=TERMS, texts=TEXTS, controls=None, tokenizer=tok, progress=False)
    for pair in ((empty, str(adapter)), (hf, empty)):
        with pytest.raises(ModelLoadError, match="weights are on the 'meta' device"):
            compare(*pair, **kw)
    pytest.importorskip("nnsight")
    with pytest.raises(ModelLoadError, match="weights are on the 'meta' device"):
        layers(hf, empty, remote="local", **kw)


def test_remote_lens_of_loaded_models_without_a_tokenizer(tiny_llama):
    """Loaded models without tokenizer= failed on the nnsight path with 'Impossible to guess which tokenizer
    to use' (ModelPair reads a loaded model's tokenizer from its name_or_path); the numbers equal the local
    engine's."""
    pytest.importorskip("nnsight")
    base, adapter = tiny_llama
    kw: dict = dict(terms=TERMS, texts=TEXTS, controls=None)
    got = layers(_hf(base)[0], _peft(base, adapter), remote="local", **kw).to_pandas()
    ref = layers(str(base), str(adapter), progress=False, **kw).to_pandas()
    assert len(got) == len(ref) > 0
    assert np.nanmax(np.abs(got["logp"].to_numpy(float) - ref["logp"].to_numpy(float))) < 1e-4
