"""A deliberately plain reference: one text at a time, full forward, full-vocabulary log-softmax."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def plain_ids(tokenizer, text: str) -> tuple[list[int], list]:
    """Tokenizer output with the BOS convention spelled out by hand."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), list(enc["offset_mapping"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids, offs = [bos] + ids, [(0, 0)] + offs
    return ids, offs


@torch.no_grad()
def plain_logp(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1 from one full forward pass; index t-1 holds token t."""
    logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[:-1].gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)


def plain_occurrence_logp(model, tokenizer, text: str, start: int, end: int, max_length: int | None = None) -> float:
    ids, offs = plain_ids(tokenizer, text)
    toks = [k for k, (s, e) in enumerate(offs) if e > s and s < end and e > start]
    first, last = toks[0], toks[-1]
    if first == 0:
        return float("nan")
    if max_length is not None and last + 1 > max_length:
        keep = max_length - (1 if tokenizer.bos_token_id is not None else 0)
        ws = last + 1 - keep
        window = ([ids[0]] if tokenizer.bos_token_id is not None else []) + ids[ws : last + 1]
        shift = ws - (1 if tokenizer.bos_token_id is not None else 0)
        lp = plain_logp(model, window)
        return float(sum(lp[k - shift - 1] for k in range(first, last + 1)))
    lp = plain_logp(model, ids[: last + 1])
    return float(sum(lp[k - 1] for k in range(first, last + 1)))


def load_plain(base_dir, adapter_dir=None):
    """Base model, or base with the adapter merged into a fresh copy (a second, independent load)."""
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    return model, AutoTokenizer.from_pretrained(base_dir)
