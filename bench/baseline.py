"""The plain way, as the study's own code works: two full model copies (base, and base+adapter merged),
one text at a time, full-vocabulary log-softmax over every position, and each term located by
re-tokenizing " " + term and searching the token list. Kept deliberately naive: it is the yardstick."""

from __future__ import annotations

import torch


def load_two_copies(base_dir, adapter_dir, device="cpu", dtype=torch.float32):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device).eval()
    tuned = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device)
    tuned = PeftModel.from_pretrained(tuned, adapter_dir).merge_and_unload().eval()
    return base, tuned, AutoTokenizer.from_pretrained(base_dir)


def find_by_retokenizing(ids: list[int], term_ids: list[int]) -> list[int]:
    n = len(term_ids)
    return [i for i in range(len(ids) - n + 1) if ids[i : i + n] == term_ids]


@torch.no_grad()
def score(base, tuned, tok, texts: list[str], terms: list[str]) -> list[tuple[int, str, int, float, float]]:
    """(text index, term, first token index, logp base, logp tuned) for every occurrence found."""
    term_ids = {t: tok(" " + t, add_special_tokens=False)["input_ids"] for t in terms}
    out = []
    for ti, text in enumerate(texts):
        ids = tok(text)["input_ids"]
        x = torch.tensor([ids], device=base.device)
        lp_b = torch.log_softmax(base(x).logits[0].float(), dim=-1)
        lp_t = torch.log_softmax(tuned(x).logits[0].float(), dim=-1)
        for term, tids in term_ids.items():
            for i in find_by_retokenizing(ids, tids):
                if i == 0:
                    continue
                b = sum(lp_b[i + k - 1, tids[k]].item() for k in range(len(tids)))
                t = sum(lp_t[i + k - 1, tids[k]].item() for k in range(len(tids)))
                out.append((ti, term, i, b, t))
    return out
