"""The TransformerLens engine of the layer views (issue 11, part 3): `engine="transformer_lens"` reads the
residual stream and component outputs at a TransformerBridge's hook points over the pair's own weights.

On tiny models of five architectures (llama and qwen2 with a LoRA adapter, the PEFT path; gpt2, mistral
and gpt_neox as two full models) the logit lens, activation patching and direct logit attribution of
both engines agree within 1e-4. The PEFT views share one module: the adapter off and on. Nothing is
downloaded; transformer-lens is the `tl` extra, installed in CI.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch

from specprobe.core.architecture import UnsupportedArchitectureError
from specprobe.probe import layers, logit_attribution, patch

pytest.importorskip("transformer_lens.model_bridge", reason="transformer-lens (the `tl` extra) is not installed")

from specprobe.probe.tl_bridge import bridged_pair  # noqa: E402

TEXTS = [
    "Myocardial infarction is suspected; myocardial infarction again, and chest pain.",
    "The patient had a seizure, then chest pain.",
]
TERMS = {"myocardial infarction": ["Cardiology"], "chest pain": ["Cardiology"], "seizure": ["Neurology"]}
TOL = 1e-4
#: the float columns each analysis must agree on (recovered is a ratio, checked through logp_patched)
COLUMNS = {layers: ["logp", "logp_per_token"], patch: ["logp_patched", "delta"], logit_attribution: ["contribution"]}
#: the columns naming a row: both engines give the same rows in the same order
KEYS = ("text_id", "term", "start", "end", "is_control", "layer", "model", "direction", "component")
#: architecture -> how its pair is made: "lora" (a PEFT adapter on a tiny model) or "full" (two models)
ARCHS = {"llama": "lora", "qwen2": "lora", "gpt2": "full", "mistral": "full", "gpt_neox": "full"}


@pytest.fixture(scope="module")
def tokenizer():
    from specprobe.testing.tiny_models import train_tokenizer

    return train_tokenizer("gpt2", 600)


def _pair(name: str, tiny_dir, tokenizer) -> Any:
    from specprobe.core.models import ModelPair

    if ARCHS[name] == "lora":
        from tests.conftest import _build

        base, adapter = _build(tiny_dir, name)
        return ModelPair.load(str(base), str(adapter))
    from tests.test_layer_architectures import build

    base, tuned = build(name, tokenizer)
    return ModelPair.load(base, tuned, tokenizer=tokenizer)


def _run(fn, pair, engine: str) -> Any:
    kw: dict[str, Any] = dict(terms=TERMS, texts=TEXTS, progress=False, engine=engine)
    if fn is patch:
        kw.update(texts=TEXTS[1:], site_batch=4)
    return fn(pair, **kw)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_engines_agree(name, tiny_dir, tokenizer):
    pair = _pair(name, tiny_dir, tokenizer)
    for fn, cols in COLUMNS.items():
        ref, tl = _run(fn, pair, "hooks"), _run(fn, pair, "transformer_lens")
        a, b = ref.to_pandas(), tl.to_pandas()
        assert len(a) == len(b) > 0
        keys = [c for c in KEYS if c in a.columns]
        assert a[keys].equals(b[keys]), (name, fn.__name__)
        diff = max(float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)))) for c in cols)
        if "token_logp" in a.columns:
            flat = [np.asarray(x, float) - np.asarray(y, float) for x, y in zip(a["token_logp"], b["token_logp"])]
            diff = max(diff, float(np.nanmax(np.abs(np.concatenate(flat)))))
        print(f"{name} {fn.__name__}: max |hooks - transformer_lens| = {diff:.2e}")
        assert diff < TOL, (name, fn.__name__, diff)
        assert "TransformerLens" in tl.metadata["engine"] and "torch hooks" in ref.metadata["engine"]
    wide = _run(layers, pair, "transformer_lens").wide()
    assert (wide["delta"].abs() > 1e-4).any(), "the tuned view differs from the base view"


def test_peft_views_are_one_module_with_the_adapter_off_and_on(tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter = tiny_llama
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    attention = peft_model.config._attn_implementation
    ref = layers(None, peft_model, TERMS, TEXTS, progress=False)
    view = layers(None, peft_model, TERMS, TEXTS, progress=False, engine="transformer_lens")
    diff = np.nanmax(np.abs(view.to_pandas()["logp"].to_numpy(float) - ref.to_pandas()["logp"].to_numpy(float)))
    assert diff < TOL
    from specprobe.probe.prepare import load_pair

    pair = load_pair(None, peft_model, None, None, None)
    bridged = bridged_pair(pair)
    assert len(bridged.bridges) == 1, "one bridge serves the base and the tuned view"
    copy = bridged.pair.base_model
    assert isinstance(copy, PeftModel) and copy is not peft_model
    ours = {id(p) for p in peft_model.parameters()}
    added = [p for p in copy.parameters() if id(p) not in ours]
    assert ours and ours <= {id(p) for p in copy.parameters()}, "the bridge runs the loaded weights, not copies"
    # TransformerLens 3 gives the copy's bias-free unembed a zero bias *parameter* (4: a buffer); nothing else
    assert all(p.dim() == 1 and not p.any() for p in added) and len(added) <= 1, "only TL's zero unembed bias"
    assert not any(type(m).__module__.startswith("transformer_lens") for m in peft_model.modules()), (
        "the caller's model is not wrapped"
    )
    assert peft_model.config._attn_implementation == attention, "TL switches its copy to eager attention, not ours"
    from importlib.metadata import version

    # TL 4 switches its copy to eager attention; TL 3 runs a given hf_model with the attention it has
    expected = "eager" if int(version("transformer-lens").split(".")[0]) >= 4 else attention
    assert bridged.pair.base_model.config._attn_implementation == expected


def test_gpt2_lora_on_fused_qkv_is_refused(tiny_gpt2):
    """TL's GPT-2 adapter splits c_attn into q, k, v weight copies: a LoRA layer on c_attn would not run."""
    base, adapter = tiny_gpt2
    with pytest.raises(UnsupportedArchitectureError, match=r"bypasses the LoRA layers \[.*attn\.c_attn"):
        layers(str(base), str(adapter), TERMS, TEXTS, progress=False, engine="transformer_lens")


def test_architectures_tl_cannot_bridge_are_refused(tokenizer):
    """TransformerLens 4.3 has no adapter for OLMo 2: one error that says so and points to the default engine."""
    from tests.test_layer_architectures import build

    base, tuned = build("olmo2", tokenizer)
    with pytest.raises(UnsupportedArchitectureError, match=r"Olmo2ForCausalLM: TransformerLens cannot bridge.*'hooks'"):
        layers(base, tuned, TERMS, TEXTS, tokenizer=tokenizer, progress=False, engine="transformer_lens")


def test_engine_arguments(tiny_llama):
    base, adapter = tiny_llama
    with pytest.raises(ValueError, match="engine must be one of"):
        layers(str(base), str(adapter), TERMS, TEXTS, engine="tl")
    with pytest.raises(ValueError, match="pick one"):
        layers(str(base), str(adapter), TERMS, TEXTS, engine="transformer_lens", remote="local")


def test_without_transformer_lens_the_error_names_the_extra(tiny_llama, monkeypatch, capsys):
    for mod in [m for m in sys.modules if m == "transformer_lens" or m.startswith("transformer_lens.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    base, adapter = tiny_llama
    for fn in (layers, patch, logit_attribution):
        with pytest.raises(ImportError, match=r"pip install specprobe\[tl\]") as err:
            fn(str(base), str(adapter), TERMS, TEXTS, engine="transformer_lens")
        assert "\n" not in str(err.value)
    assert len(layers(str(base), str(adapter), TERMS, TEXTS, progress=False).to_pandas()) > 0  # hooks need no TL
    from specprobe.app.cli import main

    capsys.readouterr()
    argv = ["layers", "--base", str(base), "--tuned", str(adapter), "--terms", str(base / "missing.txt")]
    assert main([*argv, "--out", str(base / "no-out"), "--engine", "transformer_lens"]) == 2  # before any load
    err = capsys.readouterr().err.strip()
    assert "pip install specprobe[tl]" in err and "\n" not in err, err


def test_cli_engine_option(tiny_llama, tmp_path, capsys):
    from specprobe.app.cli import main
    from specprobe.core.results import Result

    base, adapter = tiny_llama
    terms = tmp_path / "terms.txt"
    terms.write_text("chest pain\nseizure\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["layers", "--base", str(base), "--tuned", str(adapter), "--terms", str(terms), "--out", str(out)]
    rc = main([*argv, "--controls", "none", "--no-progress", "--engine", "transformer_lens", "--attribution"])
    assert rc == 0, capsys.readouterr().err
    view = Result.load(out / "layers.json.gz")
    assert "TransformerLens" in view.metadata["engine"]
    assert torch.isfinite(torch.tensor(view.to_pandas()["logp"].to_numpy(float))).any()
