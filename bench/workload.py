"""The benchmark's workload: S-MedQA questions, their terms, a Llama-architecture model and a LoRA adapter."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

CACHE = Path.home() / ".cache" / "specprobe-bench"


def load_texts(data: Path, n: int) -> list[str]:
    from specprobe.terms.datasets import load_qa

    return [r.context_text() for r in load_qa(data)][:n]


def workload_terms(texts: list[str], max_terms: int = 300) -> list[str]:
    """Terms to score: the lexicon builder's when available, else words rare in general English (Zipf < 3.5)
    that recur in these texts (a stand-in good enough for timing)."""
    try:
        from specprobe.terms.lexicon import build_lexicon  # type: ignore[attr-defined]

        lex = build_lexicon(texts)  # pragma: no cover - depends on terms/ API
        return sorted(lex.term_specialties())[:max_terms]
    except Exception:
        pass
    from wordfreq import zipf_frequency

    counts = Counter(w.lower() for t in texts for w in re.findall(r"[A-Za-z][a-z]{4,}", t))
    rare = [w for w, c in counts.most_common() if c >= 2 and zipf_frequency(w, "en") < 3.5]
    return sorted(rare[:max_terms])


def model_config(hidden: int, layers: int, vocab: int, context: int = 1024):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.6875) // 16 * 16,
                       num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                       num_key_value_heads=max(1, hidden // 64), max_position_embeddings=context,
                       bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_model(texts: list[str], hidden: int, layers: int, vocab: int, lora_rank: int = 16) -> tuple[Path, Path]:
    """Random-weight Llama of the given size with a real BPE tokenizer trained on the texts, plus a LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specprobe.testing.tiny_models import corpus_lines, train_tokenizer

    key = hashlib.sha256(json.dumps([hidden, layers, vocab, lora_rank, len(texts), texts[:3]]).encode()).hexdigest()[:12]
    base, adapter = CACHE / f"base-{key}", CACHE / f"lora-{key}"
    if (adapter / "adapter_config.json").exists():
        return base, adapter
    tok = train_tokenizer("llama", vocab_size=min(vocab, 8000), lines=texts + corpus_lines())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(hidden, layers, max(vocab, len(tok))))
    model.save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    torch.manual_seed(1)
    cfg = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                     init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(adapter)
    return base, adapter
