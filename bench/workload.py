"""The benchmark's workload: S-MedQA questions, their terms, a Llama-architecture model and a LoRA adapter."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# where built models, tokenizers and specs go ($SPECPROBE_BENCH_CACHE, e.g. for a test, else ~/.cache/specprobe-bench)
CACHE = Path(os.environ.get("SPECPROBE_BENCH_CACHE") or Path.home() / ".cache" / "specprobe-bench")


def load_texts(data: Path, n: int) -> list[str]:
    from specprobe.terms.datasets import load_qa

    return [r.context_text() for r in load_qa(data)][:n]


def workload_terms(data: Path, texts: list[str]) -> tuple[list[str], str]:
    """The terms to score: the specialty lexicon `specprobe terms build` makes from the data file
    (offline backend), restricted to terms that occur in the benchmark's texts."""
    from specprobe.probe.occurrences import find_spans
    from specprobe.terms.build import build_lexicon

    lexicon = build_lexicon(data)
    terms = sorted(t for t in lexicon.term_specialties() if any(find_spans(x, t) for x in texts))
    return terms, f"lexicon of {data.name} ({len(lexicon)} terms), {len(terms)} occurring in these texts"


def model_config(hidden: int, layers: int, vocab: int, context: int = 1024):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875) // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=context,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def build_model(texts: list[str], hidden: int, layers: int, vocab: int, lora_rank: int = 16) -> tuple[Path, Path]:
    """Random-weight Llama of the given size with a real BPE tokenizer trained on the texts, plus a LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specprobe.testing.tiny_models import corpus_lines, train_tokenizer

    key = hashlib.sha256(json.dumps([hidden, layers, vocab, lora_rank, len(texts), texts[:3]]).encode()).hexdigest()[
        :12
    ]
    base, adapter = CACHE / f"base-{key}", CACHE / f"lora-{key}"
    if (adapter / "adapter_config.json").exists():
        return base, adapter
    tok = train_tokenizer("llama", vocab_size=min(vocab, 8000), lines=texts + corpus_lines())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(hidden, layers, max(vocab, len(tok))))
    model.save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    torch.manual_seed(1)
    cfg = LoraConfig(
        r=lora_rank,
        lora_alpha=lora_rank,
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(model, cfg).save_pretrained(adapter)
    return base, adapter
