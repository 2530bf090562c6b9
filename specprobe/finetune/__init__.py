"""Per-specialty LoRA fine-tuning and multiple-choice evaluation.

    from specprobe import finetune
    run = finetune.train("base-model", "S-MedQA_validation.json", specialty="Cardiology", out="lora/cardiology")
    result = finetune.evaluate("base-model", "S-MedQA_validation.json", adapter="lora/cardiology")
    print(result.table())
    m = finetune.matrix("base-model", ["lora/cardiology", "lora/neurology"], "S-MedQA_validation.json")
    m.contrast()

Heavy libraries (torch, peft, accelerate) are imported when a function is called.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "evaluate", "matrix", "TrainOptions", "TrainRun", "MCEvaluation", "AccuracyMatrix", "PromptFormat",
           "wilson_interval", "find_lora_targets"]

_WHERE = {
    "train": "specprobe.finetune.training", "TrainOptions": "specprobe.finetune.training", "TrainRun": "specprobe.finetune.training",
    "find_lora_targets": "specprobe.finetune.training",
    "evaluate": "specprobe.finetune.evaluation", "MCEvaluation": "specprobe.finetune.evaluation",
    "wilson_interval": "specprobe.finetune.evaluation",
    "matrix": "specprobe.finetune.accuracy_matrix", "AccuracyMatrix": "specprobe.finetune.accuracy_matrix",
    "PromptFormat": "specprobe.finetune.prompts",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'specprobe.finetune' has no attribute {name!r}")
