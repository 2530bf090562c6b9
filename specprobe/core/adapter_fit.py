"""Does a PEFT adapter belong to this base? Checked before loading, since peft accepts an adapter of
another architecture whenever module names and shapes happen to agree, and silently skips the
tensors whose modules it cannot find.

Two checks, each from what is on disk:
- the architecture the adapter records (`base_model_name_or_path`'s local config, or the
  `base_model_type` of a specprobe manifest) against the base's `config.model_type` and sizes;
- every LoRA tensor in the adapter file names a module of the base, with matching in/out features.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from specprobe.core.architecture import HFModel, unwrap_peft

#: sizes that must agree between the adapter's recorded base config and the base given
_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "n_embd", "n_layer", "vocab_size")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


class AdapterMismatchError(ValueError):
    """The adapter was made for another architecture or shape than the base it is put on."""


def recorded_base_config(adapter: Path, adapter_config: dict, manifest: dict) -> dict:
    """What the adapter says about its base: model_type and sizes, from what is available offline."""
    found: dict[str, Any] = {}
    source = adapter_config.get("base_model_name_or_path")
    if isinstance(source, str) and source and (Path(source) / "config.json").is_file():
        try:
            cfg = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        found.update({k: cfg[k] for k in ("model_type", *_SIZE_KEYS) if k in cfg})
    if manifest.get("base_model_type"):
        found.setdefault("model_type", manifest["base_model_type"])
    return found


def architecture_problems(recorded: dict, base: HFModel) -> list[str]:
    """Differences between the recorded base config and the base model's config."""
    cfg = unwrap_peft(base).config
    problems = []
    if recorded.get("model_type") and recorded["model_type"] != getattr(cfg, "model_type", None):
        problems.append(f"model_type {recorded['model_type']!r} vs the base's {getattr(cfg, 'model_type', None)!r}")
    for key in _SIZE_KEYS:
        have = getattr(cfg, key, None)
        if key in recorded and isinstance(have, int) and recorded[key] != have:
            problems.append(f"{key} {recorded[key]} vs the base's {have}")
    return problems


def tensor_problems(adapter: Path, base: HFModel, limit: int = 3) -> list[str]:
    """LoRA tensors whose module the base lacks, or whose shape does not fit that module."""
    files = sorted(adapter.glob("adapter_model.safetensors"))
    if not files:
        return []  # .bin adapters: peft's own loader checks shapes (weights_only)
    from safetensors import SafetensorError

    try:
        return _tensor_problems(files[0], base, limit)
    except SafetensorError as exc:  # not a mismatch that --force-adapter could accept
        raise ValueError(f"adapter {adapter}: {files[0].name} is truncated or damaged (copy it again): {exc}") from exc


def _tensor_problems(weights: Path, base: HFModel, limit: int) -> list[str]:
    from safetensors import safe_open

    modules = dict(unwrap_peft(base).named_modules())
    problems: list[str] = []
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            m = _LORA_KEY.match(key)
            if m is None:
                continue
            name = m.group("module")
            module = modules.get(name) or modules.get(name.removeprefix("model."))
            if module is None:
                problems.append(f"tensor {key!r}: the base has no module {name!r}")
            else:
                problems.extend(_shape_problem(key, m.group("ab"), fh.get_slice(key).get_shape(), module))
            if len(problems) >= limit:
                break
    return problems


def _shape_problem(key: str, ab: str, shape: list[int], module: nn.Module) -> list[str]:
    """lora_A is (r, in_features), lora_B is (out_features, r); Conv1D (GPT-2) stores its weight transposed."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.ndim != 2 or len(shape) != 2:
        return []
    out_f, in_f = weight.shape if type(module).__name__ != "Conv1D" else weight.shape[::-1]
    if ab == "A" and shape[1] != in_f:
        return [f"tensor {key!r} expects {shape[1]} input features, the base module has {in_f}"]
    if ab == "B" and shape[0] != out_f:
        return [f"tensor {key!r} expects {shape[0]} output features, the base module has {out_f}"]
    return []


def check_adapter_fits(
    adapter: str | Path, adapter_config: dict, manifest: dict, base: HFModel, force: bool = False
) -> list[str]:
    """Raise `AdapterMismatchError` naming the first differences, unless `force` (then return them)."""
    adapter = Path(adapter)
    problems = architecture_problems(recorded_base_config(adapter, adapter_config, manifest), base)
    problems += tensor_problems(adapter, base)
    if problems and not force:
        raise AdapterMismatchError(
            f"adapter {str(adapter)!r} does not belong to this base: {'; '.join(problems[:3])} "
            "(pass force_adapter=True / --force-adapter to load it anyway)"
        )
    return problems
