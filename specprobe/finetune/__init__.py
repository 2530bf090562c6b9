"""Per-specialty LoRA fine-tuning and multiple-choice evaluation.

    from specprobe import finetune
    run = finetune.train("base-model", "S-MedQA_validation.json", specialty="Cardiology", out="lora/cardiology")
    result = finetune.evaluate("base-model", "S-MedQA_validation.json", adapter="lora/cardiology")
    print(result.table())
    m = finetune.matrix("base-model", ["lora/cardiology", "lora/neurology"], "S-MedQA_validation.json")
    m.contrast()

peft, accelerate and transformers' training parts are imported when a function is called.
"""

from specprobe.finetune.accuracy_matrix import AccuracyMatrix, matrix
from specprobe.finetune.evaluation import MCEvaluation, evaluate, wilson_interval
from specprobe.finetune.lora_targets import find_lora_targets
from specprobe.finetune.prompts import PromptFormat
from specprobe.finetune.train_options import TrainOptionError, TrainOptions, UnknownTrainOptionError
from specprobe.finetune.train_signals import TrainingInterrupted
from specprobe.finetune.training import TrainRun, train

__all__ = [
    "train",
    "evaluate",
    "matrix",
    "TrainOptions",
    "TrainRun",
    "TrainingInterrupted",
    "TrainOptionError",
    "UnknownTrainOptionError",
    "MCEvaluation",
    "AccuracyMatrix",
    "PromptFormat",
    "wilson_interval",
    "find_lora_targets",
]
