"""An adapter made for another architecture or shape is refused before peft loads it (unless forced)."""

from __future__ import annotations

import json
import shutil

import pytest

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
