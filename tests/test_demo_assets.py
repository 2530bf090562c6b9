"""Fast checks of the built-in demo assets (specprobe/data/demo): base model, tokenizer, questions."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

import specprobe

DEMO = Path(specprobe.__file__).parent / "data" / "demo"
MODEL_DIR = DEMO / "model"
QUESTIONS = DEMO / "questions.json"
REPO = Path(__file__).resolve().parent.parent

# Specialty names as spelled in S-MedQA.
SMEDQA_SPECIALTIES = {
    "Cardiology",
    "Gastroenterology",
    "Pediatrics",
    "Neurology",
    "Infectious diseases",
    "Obstetrics and gynecology",
    "Psychiatry",
    "Hematology",
    "Emergency medicine",
    "Endocrinology",
    "Nephrology",
    "Orthopedics",
    "Dermatology",
    "Rheumatology",
    "Respiratory medicine",
}

SAMPLES = [
    "A 54-year-old man presents with crushing substernal chest pain and diaphoresis.",
    "Echocardiography shows a left ventricular ejection fraction of 25%; start furosemide.",
    "the act of going from one place to another",
    "Serum anti-tissue transglutaminase IgA antibodies are elevated (celiac disease).",
    "  Two  spaces,\ttabs and 'quotes' work!",
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def questions():
    return json.loads(QUESTIONS.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ model files


def test_model_files_present_and_within_budget():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024, f"demo model directory is {total / 1e6:.1f} MB"
    assert (DEMO / "WORDNET_LICENSE").is_file()
    assert "Princeton University" in (DEMO / "WORDNET_LICENSE").read_text()


def test_config_is_small_llama():
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert cfg["max_position_embeddings"] >= 512
    assert 4000 <= cfg["vocab_size"] <= 8192
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 0)


# -------------------------------------------------------------------- tokenizer


def test_tokenizer_is_fast_with_special_tokens(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.bos_token_id
    assert len(tokenizer) == json.loads((MODEL_DIR / "config.json").read_text())["vocab_size"]


@pytest.mark.parametrize("text", SAMPLES)
def test_tokenizer_adds_exactly_one_bos(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", SAMPLES)
def test_offsets_are_character_offsets_without_leading_space(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert tuple(offsets[0]) == (0, 0)  # BOS
    prev_end = 0
    for tid, (s, e) in zip(ids[1:], offsets[1:]):
        piece = tokenizer.decode([tid])
        assert s >= prev_end
        if not piece.strip():  # whitespace-only token: trimmed to an empty span
            continue
        assert text[s:e] == piece.lstrip(" "), (piece, text[s:e])
        prev_end = e


def test_offsets_locate_clinical_terms(tokenizer):
    text = "The patient was given metoprolol for atrial fibrillation."
    enc = tokenizer(text, return_offsets_mapping=True)
    start = text.index("metoprolol")
    span = [(s, e) for s, e in enc["offset_mapping"][1:] if s >= start and e <= start + len("metoprolol")]
    assert span[0][0] == start and span[-1][1] == start + len("metoprolol")


# ------------------------------------------------------------------------ model


def test_model_loads_and_runs(model, tokenizer):
    import torch

    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 10_000_000
    enc = tokenizer(SAMPLES[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100))
    assert out.logits.shape[:2] == enc["input_ids"].shape
    assert out.logits.shape[-1] == len(tokenizer)
    assert torch.isfinite(out.logits).all()
    assert math.isfinite(out.loss.item())


def test_model_knows_general_english_better_than_medicine(model, tokenizer):
    """In the training-text style ("Lemma: definition. Example."), general English is much more
    familiar to the base model than clinical text (which was filtered out of its training data)."""
    import torch

    def loss(text):
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            return model(**enc, labels=enc["input_ids"]).loss.item()

    general = [
        "Traveler: a person who goes from one place to another. He was a traveler in search of work.",
        "House: a building in which people live. They bought a new house in the town.",
        "Boat: a small vessel for travel on water. We rowed the boat across the lake.",
        "Happy: feeling or showing pleasure. She was happy to see her old friends.",
    ]
    medical = [
        "Myocardial infarction: death of heart muscle caused by blocked coronary arteries. "
        "The patient was given aspirin and metoprolol.",
        "Pancreatitis: inflammation of the pancreas. Serum lipase was elevated and the patient had epigastric pain.",
        "Tachycardia: abnormally rapid heartbeat. Adenosine was given for supraventricular tachycardia.",
        "Nephrolithiasis: a kidney stone. Tamsulosin helps the ureteral stone pass.",
    ]
    g = sum(map(loss, general)) / len(general)
    m = sum(map(loss, medical)) / len(medical)
    assert g < 5.0, g
    assert g + 0.5 < m, (g, m)


# -------------------------------------------------------------------- questions


def test_questions_format(questions):
    assert isinstance(questions, list) and questions
    ids = set()
    for q in questions:
        assert isinstance(q["id"], str) and q["id"] not in ids
        ids.add(q["id"])
        assert isinstance(q["Question"], str) and q["Question"].strip()
        assert isinstance(q["Specialty"], str)
        assert isinstance(q["Options"], list) and len(q["Options"]) == 4
        assert all(isinstance(o, str) and o for o in q["Options"])
        assert len(set(q["Options"])) == 4
        assert q["Answer"] in q["Options"]
    assert len({q["Question"] for q in questions}) == len(questions)


def test_questions_specialties_and_counts(questions):
    counts = Counter(q["Specialty"] for q in questions)
    assert set(counts) <= SMEDQA_SPECIALTIES
    assert len(counts) >= 6
    assert min(counts.values()) >= 80


def test_answers_are_not_positionally_biased(questions):
    pos = Counter(q["Options"].index(q["Answer"]) for q in questions)
    assert len(pos) == 4
    assert max(pos.values()) < 0.4 * len(questions)


def test_questions_file_is_reproducible(questions):
    path = REPO / "scripts" / "build_demo_questions.py"
    if not path.exists():
        pytest.skip("scripts/ not available (installed package)")
    spec = importlib.util.spec_from_file_location("build_demo_questions", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(spec.name, None)
    assert mod.build(100, 0) == questions
