"""The bad-input table (tests/reliability.py) holds: no traceback, no silent wrong result, no hang;
and docs/reliability.md is exactly what the table renders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from reliability import CLEAR, HANG, OK, SILENT, TRACEBACK, Env, render, run_all

from specprobe.testing.tiny_models import build_tiny_adapter, build_tiny_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
DEMO_QUESTIONS = Path(__file__).resolve().parents[1] / "specprobe" / "data" / "demo" / "questions.json"


@pytest.fixture(scope="module")
def env(tiny_llama, tiny_dir, tmp_path_factory) -> Env:
    qwen_base, qwen_lora = tiny_dir / "qwen2-base", tiny_dir / "qwen2-lora"
    if not qwen_base.exists():
        build_tiny_model("qwen2", qwen_base)
        build_tiny_adapter(qwen_base, "qwen2", qwen_lora)
    tmp = tmp_path_factory.mktemp("reliability")
    questions = tmp / "questions.json"
    rows = json.loads(DEMO_QUESTIONS.read_text(encoding="utf-8"))
    questions.write_text(json.dumps(rows[::20]), encoding="utf-8")  # 35 questions, every specialty
    return Env(tmp / "work", tiny_llama[0], tiny_llama[1], qwen_lora, questions)


@pytest.mark.slow
def test_bad_inputs_give_clear_errors_and_the_document_matches(env):
    outcomes = run_all(env)
    text = render(outcomes)
    if os.environ.get("SPECPROBE_UPDATE_RELIABILITY") == "1":
        DOC.write_text(text, encoding="utf-8")
    bad = [
        f"{o.case.item} {o.case.name}: {o.status} ({o.problem}): {o.shown}"
        for o in outcomes
        if o.status in (TRACEBACK, SILENT, HANG)
    ]
    assert not bad, "\n".join(bad)
    assert all(o.status in (OK, CLEAR) for o in outcomes)
    assert DOC.read_text(encoding="utf-8") == text, (
        "docs/reliability.md is stale: rerun with SPECPROBE_UPDATE_RELIABILITY=1"
    )
