"""Folded LoRA: the tuned view runs W + scaling * B @ A in one matmul, equal to peft's forward, base untouched."""

from __future__ import annotations

import pytest
import torch

from specprobe.core.lora_fold import foldable_layers, folded_lora
from specprobe.probe import ModelPair, compare

TEXTS = ["The patient with angina pectoris was given aspirin.", "Hypertension and diabetes mellitus were noted."]
TERMS = ["angina pectoris", "aspirin", "hypertension", "diabetes mellitus"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_folded_equals_peft_unmerged_forward_and_leaves_base_untouched(tiny_pair):
    arch, base, adapter = tiny_pair
    pair = ModelPair.load(str(base), str(adapter), fold_mode="unmerged")
    model = pair.base_model
    ids = pair.tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_logits = _logits(model, ids)
    layers = foldable_layers(model)
    assert len(layers) > 0, arch
    with folded_lora(model) as n:
        assert n == len(layers)
        folded_logits = _logits(model, ids)
    assert (folded_logits - peft_logits).abs().max().item() < 1e-4
    # the adapter is not a no-op, so the check above has teeth
    with model.disable_adapter():
        assert (_logits(model, ids) - peft_logits).abs().max().item() > 1e-3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "folding must not modify any weight"
    assert all("forward" not in vars(m) for m in layers), "the per-instance forward is removed afterwards"


def test_compare_folded_and_unmerged_agree(tiny_llama):
    base, adapter = tiny_llama
    folded = ModelPair.load(str(base), str(adapter))
    unmerged = ModelPair.load(str(base), str(adapter), fold_mode="unmerged")
    assert folded.metadata["lora_forward"] == "folded"
    assert unmerged.metadata["lora_forward"] == "unmerged"
    a = compare(folded, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    b = compare(unmerged, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    assert len(a) == len(b) > 0
    assert (a["logp_tuned"] - b["logp_tuned"]).abs().max() < 1e-4
    assert (a["logp_base"] - b["logp_base"]).abs().max() == 0.0
    assert (a["delta"].abs() > 0).all()


def test_auto_mode_does_not_fold_16_bit_weights(tiny_llama):
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter), dtype="bfloat16", check=False)
    assert pair.metadata["lora_forward"] == "unmerged"
    forced = ModelPair.load(str(base), str(adapter), dtype="bfloat16", check=False, fold_mode="fold")
    assert forced.metadata["lora_forward"] == "folded"


def test_dora_layers_are_left_to_peft(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base, _ = tiny_llama
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False)
    dora = get_peft_model(model, cfg).eval()
    assert foldable_layers(dora) == []


def test_unknown_fold_mode_is_refused(tiny_llama):
    base, adapter = tiny_llama
    with pytest.raises(ValueError, match="fold_mode"):
        ModelPair.load(str(base), str(adapter), fold_mode="merge")


def test_shard_device_loads_through_accelerate_and_scores_the_same(tiny_llama):
    """device="shard" loads with device_map="auto" (here: no GPU, so all on the CPU) and gives the same logps.
    Spreading over several GPUs itself is untested here (no GPU)."""
    base, adapter = tiny_llama
    sharded = ModelPair.load(str(base), str(adapter), device="shard")
    plain = ModelPair.load(str(base), str(adapter))
    assert sharded.metadata["device"].startswith("shard") and sharded.metadata["devices"] == ["cpu"]
    a = compare(sharded, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    b = compare(plain, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    assert (a["logp_tuned"] - b["logp_tuned"]).abs().max() < 1e-5 and (
        a["logp_base"] - b["logp_base"]
    ).abs().max() < 1e-5


def test_with_adapter_reuses_the_base_and_each_pair_keeps_its_adapter(tiny_llama, tmp_path):
    from specprobe.core.models import ModelLoadError
    from specprobe.testing.tiny_models import build_tiny_adapter

    base, adapter = tiny_llama
    other = build_tiny_adapter(base, "llama", tmp_path / "other", seed=7)
    first = ModelPair.load(str(base), str(adapter))
    weights = first.base_model.get_base_model().model.embed_tokens.weight
    second = first.with_adapter(other)
    assert second.base_model.get_base_model().model.embed_tokens.weight is weights  # no second copy
    assert (
        second.metadata["tuned"] == str(other) and second.metadata["adapter_sha256"] != first.metadata["adapter_sha256"]
    )
    fresh_second = ModelPair.load(str(base), str(other))

    def tuned(pair):
        return compare(pair, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()["logp_tuned"]

    a2, a1 = tuned(second), tuned(first)  # alternate: each pair re-activates its own adapter
    assert (a2 - tuned(fresh_second)).abs().max() < 1e-5
    assert (a1 - tuned(ModelPair.load(str(base), str(adapter)))).abs().max() < 1e-5
    assert (a1 - a2).abs().max() > 1e-3
    assert not any(p.requires_grad for p in first.base_model.parameters())
    with pytest.raises(ModelLoadError, match="not a PEFT adapter directory"):
        first.with_adapter(tmp_path)
