"""QLoRA's base model loads as every other base does: from safetensors only (README, "Loading").

The 4-bit path needs CUDA and bitsandbytes (`tests/test_cuda.py::test_qlora_4bit`); here the loader is
stopped at `from_pretrained`, so the arguments it gets are checked on any machine.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from specprobe.finetune.training import _Trainer


class _Stop(Exception):
    """Raised by the stand-in loader once it has seen its arguments."""


def test_qlora_base_loads_from_safetensors_only(monkeypatch):
    seen: dict = {}

    def fake_from_pretrained(source, **kwargs):
        seen.update(kwargs, source=source)
        raise _Stop

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(fake_from_pretrained))
    trainer = SimpleNamespace(
        base="some/base",
        revision=None,
        trust_remote_code=False,
        precision="bf16",
        accelerator=SimpleNamespace(local_process_index=0),
        opts=SimpleNamespace(gradient_checkpointing=False),
    )
    with pytest.raises(_Stop):
        _Trainer._load_quantized(trainer, torch.bfloat16)  # type: ignore[arg-type]
    assert seen["source"] == "some/base"
    assert seen.get("use_safetensors") is True, "a pytorch_model.bin-only base would be unpickled"
