"""specprobe: what did clinical-specialty fine-tuning put into a language model?

The main entry points, importable from here:

    import specprobe
    lex = specprobe.build_lexicon("S-MedQA_validation.json")          # a Lexicon: terms -> specialties
    run = specprobe.finetune.train("base", "S-MedQA_validation.json", specialty="Cardiology", out="lora/cardio")
    cmp = specprobe.compare("base", "lora/cardio", lex, texts)          # per-token log-prob deltas
    cmp.report("compare.html")

Names resolve on first use (PEP 562), so `import specprobe.terms` alone does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs (never run)
    from specprobe import app, core, finetune, probe, reports, terms
    from specprobe.app.experiment import run_experiment
    from specprobe.app.experiment_result import ExperimentResult
    from specprobe.core import ModelLoadError, ModelPair, Result
    from specprobe.core.results import load_result
    from specprobe.finetune import AccuracyMatrix, MCEvaluation
    from specprobe.probe import (
        AccuracyLink,
        Comparison,
        GeneralTextShift,
        LayerView,
        LogitAttribution,
        MatchOptions,
        Patching,
        ProbeOptions,
        SeenUnseen,
        Trajectory,
        accuracy_link,
        compare,
        general_text_control,
        layers,
        logit_attribution,
        patch,
        seen_unseen,
        trajectory,
    )
    from specprobe.reports import render
    from specprobe.terms import Lexicon, QARecord, load_qa
    from specprobe.terms.build import build_lexicon

#: public name -> the module that defines it
_API = {
    "compare": "specprobe.probe",
    "layers": "specprobe.probe",
    "patch": "specprobe.probe",
    "logit_attribution": "specprobe.probe",
    "ProbeOptions": "specprobe.probe",
    "MatchOptions": "specprobe.probe",
    "Comparison": "specprobe.probe",
    "LayerView": "specprobe.probe",
    "Patching": "specprobe.probe",
    "LogitAttribution": "specprobe.probe",
    "seen_unseen": "specprobe.probe",
    "SeenUnseen": "specprobe.probe",
    "accuracy_link": "specprobe.probe",
    "AccuracyLink": "specprobe.probe",
    "trajectory": "specprobe.probe",
    "Trajectory": "specprobe.probe",
    "general_text_control": "specprobe.probe",
    "GeneralTextShift": "specprobe.probe",
    "ModelPair": "specprobe.core",
    "ModelLoadError": "specprobe.core",
    "Result": "specprobe.core",
    "Lexicon": "specprobe.terms",
    "build_lexicon": "specprobe.terms.build",
    "QARecord": "specprobe.terms",
    "load_qa": "specprobe.terms",
    "MCEvaluation": "specprobe.finetune",
    "AccuracyMatrix": "specprobe.finetune",
    "ExperimentResult": "specprobe.app.experiment_result",
    "run_experiment": "specprobe.app.experiment",
    "load_result": "specprobe.core.results",
    "render": "specprobe.reports",
}
_SUBPACKAGES = ("core", "terms", "probe", "finetune", "reports", "app")

__all__ = [
    "__version__",
    "core",
    "terms",
    "probe",
    "finetune",
    "reports",
    "app",
    "compare",
    "layers",
    "patch",
    "logit_attribution",
    "ProbeOptions",
    "MatchOptions",
    "Comparison",
    "LayerView",
    "Patching",
    "LogitAttribution",
    "seen_unseen",
    "SeenUnseen",
    "accuracy_link",
    "AccuracyLink",
    "trajectory",
    "Trajectory",
    "general_text_control",
    "GeneralTextShift",
    "ModelPair",
    "ModelLoadError",
    "Result",
    "Lexicon",
    "build_lexicon",
    "QARecord",
    "load_qa",
    "MCEvaluation",
    "AccuracyMatrix",
    "ExperimentResult",
    "run_experiment",
    "load_result",
    "render",
]  # literal, for static tools; tests check it against _API


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"specprobe.{name}")
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'specprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
