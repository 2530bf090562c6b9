"""An adapter made for another architecture or shape is refused before peft loads it (unless forced)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from specprobe.core.models import ModelLoadError, ModelPair, resolve_device
from specprobe.testing.tiny_models import build_tiny_adapter, build_tiny_model


@pytest.fixture(scope="module")
def qwen2_lora(tiny_dir):
    base, adapter = tiny_dir / "qwen2-base", tiny_dir / "qwen2-lora"
    if not base.exists():
        build_tiny_model("qwen2", base)
        build_tiny_adapter(base, "qwen2", adapter)
    return adapter


def test_foreign_architecture_adapter_is_refused(tiny_llama, qwen2_lora):
    base, _ = tiny_llama
    with pytest.raises(ModelLoadError, match="model_type 'qwen2' vs the base's 'llama'"):
        ModelPair.load(str(base), str(qwen2_lora), check=False)


def test_force_adapter_loads_and_records_the_mismatch(tiny_llama, qwen2_lora):
    base, _ = tiny_llama
    pair = ModelPair.load(str(base), str(qwen2_lora), check=False, force_adapter=True)
    assert pair.adapter_mode
    assert any("model_type" in p for p in pair.metadata["adapter_mismatch_forced"])


def test_own_adapter_passes(tiny_llama):
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter), check=False)
    assert "adapter_mismatch_forced" not in pair.metadata


def test_adapter_of_other_shape_is_refused_even_without_a_local_config(tiny_llama, tiny_dir, tmp_path):
    base, _ = tiny_llama
    wide = tiny_dir / "llama-wide-base"
    if not wide.exists():
        build_tiny_model("llama", wide, hidden=96)
    adapter = build_tiny_adapter(wide, "llama", tmp_path / "wide-lora")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "some-org/not-here"  # a hub id: no local config to compare with
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="input features"):
        ModelPair.load(str(base), str(adapter), check=False)


def test_adapter_tensor_for_a_missing_module_is_refused(tiny_llama, tmp_path):
    base, adapter = tiny_llama
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "renamed"
    shutil.copytree(adapter, copy)
    tensors = load_file(copy / "adapter_model.safetensors")
    renamed = {k.replace("q_proj", "query_key_value"): v for k, v in tensors.items()}
    save_file(renamed, copy / "adapter_model.safetensors")
    with pytest.raises(ModelLoadError, match="has no module"):
        ModelPair.load(str(base), str(copy), check=False)


def test_corrupt_adapter_config_names_the_file(tiny_llama, tmp_path):
    base, adapter = tiny_llama
    copy = tmp_path / "corrupt"
    shutil.copytree(adapter, copy)
    (copy / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="adapter_config.json: not valid JSON"):
        ModelPair.load(str(base), str(copy), check=False)


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "banana"])
def test_unavailable_devices_are_clear_errors(device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8+ GPUs")
    with pytest.raises(ModelLoadError, match="device"):
        resolve_device(device)


def _adapter_copy(adapter, tmp_path, name: str):
    copy = tmp_path / name
    shutil.copytree(adapter, copy)
    return copy


def test_force_adapter_also_loads_an_adapter_recorded_for_other_base_weights(tiny_llama, tmp_path):
    """README: an adapter recorded for another base (weights hash in its manifest, ...) is refused unless
    force_adapter; the hash check raised even when forced, so the same weights saved otherwise (another
    shard size: another file hash) could not be loaded at all."""
    base, adapter = tiny_llama
    copy = _adapter_copy(adapter, tmp_path, "other-hash")
    (copy / "manifest.json").write_text(json.dumps({"base_weights_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match=r"sha256 000000.*pass force_adapter=True / --force-adapter"):
        ModelPair.load(str(base), str(copy), check=False)
    pair = ModelPair.load(str(base), str(copy), check=False, force_adapter=True)
    assert pair.adapter_mode
    assert any("sha256 000000" in p for p in pair.metadata["adapter_mismatch_forced"])


def test_base_fingerprint_is_of_the_weights_transformers_loads(tiny_llama, tmp_path):
    """A base folder that also holds a safetensors file transformers does not load (Mistral's
    consolidated.safetensors sorts before model.safetensors) was fingerprinted by that file, so an adapter
    trained on the same weights without it was refused as trained on another base."""
    from safetensors.torch import save_file

    from specprobe.core.models import weights_fingerprint

    base, adapter = tiny_llama
    full = tmp_path / "base-with-consolidated"
    shutil.copytree(base, full)
    save_file({"tok_embeddings.weight": torch.zeros(3, 2)}, str(full / "consolidated.safetensors"))
    assert weights_fingerprint(str(full)) == weights_fingerprint(str(base))
    copy = _adapter_copy(adapter, tmp_path, "trained-on-base")
    (copy / "manifest.json").write_text(json.dumps({"base_weights_sha256": weights_fingerprint(str(base))}))
    assert ModelPair.load(str(full), str(copy), check=False).adapter_mode


def test_adapter_folder_with_a_tokenizer_of_another_vocabulary_is_refused(tiny_llama, tmp_path):
    """An adapter folder's own tokenizer (a trainer saves it there) with added tokens was ignored: the
    tuned model, trained with "tachycardia" as one token, was scored on the base's pieces of it."""
    from transformers import AutoTokenizer

    base, adapter = tiny_llama
    same = _adapter_copy(adapter, tmp_path, "same-tok")
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(same))
    pair = ModelPair.load(str(base), str(same), check=False)  # the base's own tokenizer beside it: fine
    added = _adapter_copy(adapter, tmp_path, "added-tok")
    tok = AutoTokenizer.from_pretrained(str(base))
    tok.add_tokens(["tachycardia"])
    tok.save_pretrained(str(added))
    with pytest.raises(ModelLoadError, match="different tokenizers"):
        ModelPair.load(str(base), str(added), check=False)
    with pytest.raises(ModelLoadError, match="different tokenizers"):
        pair.with_adapter(str(added))


def test_adapter_folder_with_full_model_weights_says_which_loads(tiny_llama, tmp_path, caplog):
    """A folder with adapter_config.json and a full model's weights loads the adapter; the other weights
    were passed over without a word."""
    base, adapter = tiny_llama
    both = _adapter_copy(adapter, tmp_path, "both")
    shutil.copy(base / "model.safetensors", both / "model.safetensors")
    shutil.copy(base / "config.json", both / "config.json")
    with caplog.at_level("WARNING", logger="specprobe.core.models"):
        assert ModelPair.load(str(base), str(both), check=False).adapter_mode
    assert "full model weights (model.safetensors)" in caplog.text


def test_a_tokenizer_with_ids_beyond_the_embedding_is_refused_on_load(tiny_llama):
    """A tokenizer with tokens added but the model not resized loaded fine, and a text holding such a token
    crashed the scoring with "IndexError: index out of range in self" (a device-side assert on a GPU)."""
    from transformers import AutoTokenizer

    base, adapter = tiny_llama
    tok = AutoTokenizer.from_pretrained(str(base))
    tok.add_tokens(["tachycardia"])
    rows = ModelPair.load(str(base), check=False).base_model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ModelLoadError, match=rf"1 token\(s\) with ids beyond the model's {rows} embedding rows"):
        ModelPair.load(str(base), str(adapter), tokenizer=tok, check=False)
