"""Layer views on many decoder-only architectures, found structurally (specprobe.probe.hooks): on tiny random
models of each, the lens at the last layer equals compare(), patching every attention and MLP output
recovers the whole delta, and direct logit attribution adds up to the logit. Nothing is downloaded."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from specprobe.core.architecture import UnsupportedArchitectureError
from specprobe.probe import compare, layers, logit_attribution, patch

pytestmark = pytest.mark.slow

TEXTS = [
    "Myocardial infarction is suspected; myocardial infarction again, and chest pain.",
    "The patient had a seizure, then chest pain.",
]
TERMS = {"myocardial infarction": ["Cardiology"], "chest pain": ["Cardiology"], "seizure": ["Neurology"]}
KEYS = ["text_id", "term", "start", "is_control"]

H, L, NH, FF, CTX = 32, 2, 4, 64, 128
ROPE: dict[str, Any] = dict(
    hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=FF, max_position_embeddings=CTX
)
#: name -> (model_type, config overrides): tiny versions of each family (2 layers, hidden 32)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("gpt2", dict(n_embd=H, n_layer=L, n_head=NH, n_positions=CTX)),
    "gpt_neox": ("gpt_neox", dict(ROPE, use_parallel_residual=True)),
    "gpt_neox_sequential": ("gpt_neox", dict(ROPE, use_parallel_residual=False)),
    "gptj": ("gptj", dict(n_embd=H, n_layer=L, n_head=NH, rotary_dim=4, n_positions=CTX)),
    "opt": (
        "opt",
        dict(
            hidden_size=H,
            num_hidden_layers=L,
            num_attention_heads=NH,
            ffn_dim=FF,
            word_embed_proj_dim=H,
            max_position_embeddings=CTX,
        ),
    ),
    "opt_project_out": (
        "opt",
        dict(
            hidden_size=H,
            num_hidden_layers=L,
            num_attention_heads=NH,
            ffn_dim=FF,
            word_embed_proj_dim=16,
            max_position_embeddings=CTX,
        ),
    ),
    "bloom": ("bloom", dict(hidden_size=H, n_layer=L, n_head=NH)),
    "falcon": ("falcon", dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, parallel_attn=True)),
    "falcon_new_arch": (
        "falcon",
        dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, num_kv_heads=2, new_decoder_architecture=True),
    ),
    "llama": ("llama", dict(ROPE, num_key_value_heads=2)),
    "mistral": ("mistral", dict(ROPE, num_key_value_heads=2)),
    "mixtral": ("mixtral", dict(ROPE, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("qwen2", dict(ROPE, num_key_value_heads=2)),
    "qwen2_moe": (
        "qwen2_moe",
        dict(
            ROPE,
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
        ),
    ),
    "qwen3": ("qwen3", dict(ROPE, num_key_value_heads=2, head_dim=8)),
    "gemma": ("gemma", dict(ROPE, num_key_value_heads=2, head_dim=8)),
    "gemma2": ("gemma2", dict(ROPE, num_key_value_heads=2, head_dim=8, final_logit_softcapping=5.0)),
    "gemma3_text": ("gemma3_text", dict(ROPE, num_key_value_heads=2, head_dim=8)),
    "phi": ("phi", dict(ROPE)),
    "phi3": ("phi3", dict(ROPE, num_key_value_heads=2, pad_token_id=0)),
    "olmo2": ("olmo2", dict(ROPE, num_key_value_heads=2)),
    "stablelm": ("stablelm", dict(ROPE, num_key_value_heads=2)),
    "cohere": ("cohere", dict(ROPE, num_key_value_heads=2, logit_scale=0.5)),
    # base_model_prefix "language_model" names no attribute: the backbone is `.model` (was refused)
    "llama4_text": (
        "llama4_text",
        dict(ROPE, num_key_value_heads=2, head_dim=8, intermediate_size_mlp=64, num_local_experts=2),
    ),
    "granite": (
        "granite",
        dict(ROPE, num_key_value_heads=2, residual_multiplier=0.5, logits_scaling=2.0, embedding_multiplier=2.0),
    ),
}


@pytest.fixture(scope="module")
def tokenizer():
    from specprobe.testing.tiny_models import train_tokenizer

    return train_tokenizer("gpt2", 600)


_BUILT: dict[str, tuple[Any, Any]] = {}


def build(name: str, tokenizer) -> tuple[Any, Any]:
    """A tiny random model of `name` and a "tuned" copy whose decoder layers' weights are perturbed
    (embeddings, final norm and head shared, as with a LoRA adapter on attention and MLP)."""
    if name not in _BUILT:
        from transformers import AutoConfig, AutoModelForCausalLM

        model_type, kw = CONFIGS[name]
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0, **kw)
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_config(config).float().eval()
        with torch.no_grad():  # larger weights than the 0.02 init: far-from-uniform predictions, visible deltas
            for p in base.parameters():
                if p.dim() >= 2:
                    p.normal_(0, 0.15)
        tuned = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer_name, p in tuned.named_parameters():
                if ".layers." in layer_name or ".h." in layer_name:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        _BUILT[name] = (base, tuned)
    return _BUILT[name]


def run(fn, name, tokenizer, **kw):
    base, tuned = build(name, tokenizer)
    return fn(
        base,
        tuned,
        kw.pop("terms", TERMS),
        kw.pop("texts", TEXTS),
        tokenizer=tokenizer,
        progress=False,
        add_bos=True,
        **kw,
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_lens_last_layer_equals_compare(name, tokenizer):
    comp = run(compare, name, tokenizer, controls=None).to_pandas()
    view = run(layers, name, tokenizer, controls=None)
    assert view.n_layers == L
    last = view.wide().query("layer == @L - 1")
    merged = comp.merge(last, on=KEYS, suffixes=("", "_lens"), validate="one_to_one")
    assert len(merged) == len(comp) > 0
    for col in ("logp_base", "logp_tuned"):
        diff = np.nanmax(np.abs(merged[col].to_numpy(float) - merged[f"{col}_lens"].to_numpy(float)))
        assert diff < 1e-4, (name, col, diff)
    assert (np.abs(merged["logp_base"] - merged["logp_tuned"]) > 1e-4).any(), "the tuned model differs"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_patching_every_site_recovers_the_delta(name, tokenizer):
    df = run(patch, name, tokenizer, texts=TEXTS[1:], components=["attn", "mlp"]).to_pandas()
    full = df[df["component"] == "all"]
    assert len(full) > 0 and set(full["direction"]) == {"denoise", "noise"}
    want = np.where(full["direction"] == "denoise", full["logp_tuned"], full["logp_base"])
    assert np.allclose(full["logp_patched"], want, atol=1e-4), (name, full["logp_patched"].tolist(), want)
    big = np.abs(np.asarray(full["delta"], dtype=float)) > 1e-3
    assert big.any(), "the tuned model changes the terms' log-probabilities"
    assert np.allclose(np.asarray(full["recovered"], dtype=float)[big], 1.0, atol=1e-2), (
        name,
        full["recovered"].tolist(),
    )
    single = df[df["component"] != "all"]
    assert (np.abs(single["logp_patched"] - single["logp_base"]) > 1e-6).any(), "single sites change something"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_attribution_sums_to_the_logit(name, tokenizer):
    from specprobe.core.architecture import split_model
    from tests.reference import plain_ids

    text = "The patient had a seizure."
    dla = run(logit_attribution, name, tokenizer, terms=["seizure"], texts=[text])
    df = dla.to_pandas()
    assert set(df["component"]) == {"embed", "attn", "mlp", "bias"}
    occ = df.iloc[0]
    ids, offs = plain_ids(tokenizer, text)
    if ids[0] != tokenizer.bos_token_id:
        ids = [tokenizer.bos_token_id] + ids
        offs = [(0, 0)] + list(offs)
    toks = [k for k, (s, e) in enumerate(offs) if e > s and s < occ["end"] and e > occ["start"]]
    for variant, model in zip(("base", "tuned"), build(name, tokenizer)):
        total = df[df["model"] == variant]["contribution"].sum()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        cap = split_model(model).softcap
        if cap:  # attribution is of the logit before the soft-cap
            logits = torch.atanh(logits / cap) * cap
        ref = sum(float(logits[p - 1, ids[p]]) for p in toks)
        assert abs(total - ref) < 1e-3 * max(1.0, abs(ref)), (name, variant, total, ref)


def test_post_norm_blocks_are_refused_with_the_reason(tokenizer):
    """OPT-350m-style post-LN blocks (norm after the residual add) do not write attn + mlp to the residual."""
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=NH,
        ffn_dim=FF,
        word_embed_proj_dim=H,
        max_position_embeddings=CTX,
        do_layer_norm_before=False,
    )
    torch.manual_seed(0)
    a, b = OPTForCausalLM(cfg).eval(), OPTForCausalLM(cfg).eval()
    for fn in (layers, patch, logit_attribution):
        with pytest.raises(
            UnsupportedArchitectureError,
            match=r"OPTForCausalLM \(model_type 'opt'\): decoder layer 0 .*does not add attention and MLP",
        ):
            fn(a, b, ["seizure"], ["The patient had a seizure."], tokenizer=tokenizer, progress=False)


def test_a_bridged_post_norm_model_is_refused_pointing_at_the_engine_that_takes_it(tokenizer):
    """A TransformerBridge wraps the Hugging Face modules in place, so the hooks engine cannot find Gemma 2's
    post-norms and said the architecture was unsupported (the plain Hugging Face Gemma 2 is supported)."""
    bridge_module = pytest.importorskip("transformer_lens.model_bridge", reason="no TransformerLens TransformerBridge")
    from specprobe.probe.tl_bridge import _tl_tokenizer

    base, tuned = build("gemma2", tokenizer)
    bridges = [
        bridge_module.TransformerBridge.boot_transformers(
            "gemma2", hf_model=copy.deepcopy(m), tokenizer=_tl_tokenizer(tokenizer), device="cpu"
        )
        for m in (base, tuned)
    ]
    with pytest.raises(UnsupportedArchitectureError, match=r"TransformerBridge's wrappers.*engine='transformer_lens'"):
        layers(*bridges, TERMS, TEXTS, tokenizer=tokenizer, progress=False, add_bos=True, controls=None)
