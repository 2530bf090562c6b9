"""Build tiny models of real architectures with real (locally trained) tokenizers: nothing is downloaded.

Three tokenizer conventions are covered on purpose: GPT-2 (has a BOS token the tokenizer does not
add), Llama (adds BOS itself, Metaspace pieces), Qwen2 (no BOS at all, offsets keep the leading space).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

ARCHITECTURES = ("gpt2", "llama", "qwen2")


def corpus_lines() -> list[str]:
    text = resources.files("specprobe").joinpath("data/tiny_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_tokenizer(arch: str, vocab_size: int = 600, lines: list[str] | None = None):
    """A fast tokenizer in the convention of `arch`, trained with `tokenizers` on the tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = lines or corpus_lines()
    if arch == "llama":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence(
            [decoders.Metaspace(replacement="▁", prepend_scheme="first"), decoders.ByteFallback()]
        )
        specials = ["<unk>", "<s>", "</s>"]
        alphabet = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + alphabet, show_progress=False)
        tok.train_from_iterator(lines, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    if arch == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
    if arch == "qwen2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def tiny_config(arch: str, vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, context: int = 128):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=context,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            bos_token_id=0,
            eos_token_id=0,
        )
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=context,
    )
    if arch == "llama":
        return LlamaConfig(**common, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def build_tiny_model(arch: str, out: str | Path, *, seed: int = 0, vocab_size: int = 600, **config_kw) -> Path:
    """Write a randomly initialised tiny causal LM and its tokenizer to `out` (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out)
    tok = train_tokenizer(arch, vocab_size)
    config = tiny_config(arch, len(tok), **config_kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def lora_targets(arch: str) -> list[str]:
    return ["c_attn", "c_proj", "c_fc"] if arch == "gpt2" else ["q_proj", "v_proj", "up_proj", "down_proj"]


def build_tiny_adapter(
    base_dir: str | Path, arch: str, out: str | Path, *, seed: int = 1, rank: int = 4, scale: float = 1.0
) -> Path:
    """A LoRA adapter with random (non-zero) weights on `base_dir`, saved as a standard PEFT directory."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    # peft annotates lora_alpha as int; it only divides by it (scaling = alpha / r), so a float alpha is fine.
    cfg = LoraConfig(
        r=rank,
        lora_alpha=rank * scale,  # pyright: ignore[reportArgumentType]
        target_modules=lora_targets(arch),
        init_lora_weights=False,
        lora_dropout=0.1,
        fan_in_fan_out=(arch == "gpt2"),
    )
    model = get_peft_model(base, cfg)
    model.save_pretrained(str(out))
    return Path(out)
