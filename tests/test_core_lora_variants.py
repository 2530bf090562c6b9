"""PEFT adapter variants: the tuned view equals peft's own forward (folded or not), the base view the
untouched base, or the adapter is refused with the reason. Tiny models, float32, adapters with random
non-zero weights, so every check has teeth."""

from __future__ import annotations

import pytest
import torch

from specprobe.core.models import ModelLoadError
from specprobe.probe import ModelPair

TEXT = "The patient with angina pectoris was given aspirin."
LLAMA = ["q_proj", "v_proj", "up_proj", "down_proj"]
GPT2 = dict(target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)


def _perturb(model, *names: str) -> None:
    """Move the parameters whose name contains one of `names` away from their initial values."""
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in names):
                p.add_(0.3 * torch.randn_like(p))


def _adapter(base, out, config, perturb=()):
    from peft import LoraConfig, PeftConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    cfg = config if isinstance(config, PeftConfig) else LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **config)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg)
    _perturb(model, *perturb)
    model.save_pretrained(str(out))
    return out


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _view_logits(pair, variant, ids):
    with pair.view(variant) as split, torch.no_grad():
        return split.head(split.backbone(input_ids=ids).last_hidden_state).float()


VARIANTS = {
    "rslora": ("llama", dict(target_modules=LLAMA, use_rslora=True), ()),
    "dora": ("llama", dict(target_modules=LLAMA, use_dora=True), ("lora_magnitude",)),
    "dora-conv1d": ("gpt2", dict(**GPT2, use_dora=True), ("lora_magnitude",)),
    "patterns": ("llama", dict(target_modules=LLAMA, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 32}), ()),
    "lora-bias": ("gpt2", dict(**GPT2, lora_bias=True), ("lora_B",)),
    "modules-to-save-tied-head": ("gpt2", dict(**GPT2, modules_to_save=["lm_head"]), ("modules_to_save",)),
    "embedding-and-head-lora": ("llama", dict(target_modules=[*LLAMA, "embed_tokens", "lm_head"]), ()),
    "trainable-tokens": ("llama", dict(target_modules=LLAMA, trainable_token_indices=[5, 6, 7]), ("trainable_tokens",)),
    "bias-all-on-a-base-without-biases": ("llama", dict(target_modules=LLAMA, bias="all"), ()),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tuned_view_equals_peft_and_base_view_the_base(variant, tiny_llama, tiny_gpt2, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    arch, config, perturb = VARIANTS[variant]
    base = (tiny_llama if arch == "llama" else tiny_gpt2)[0]
    adapter = _adapter(base, tmp_path / variant, config, perturb)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    for fold_mode in ("auto", "unmerged"):
        pair = ModelPair.load(str(base), str(adapter), fold_mode=fold_mode)
        ids = pair.tokenizer(TEXT, return_tensors="pt")["input_ids"]
        want = _logits(peft_model, ids)
        assert (_logits(base_model, ids) - want).abs().max().item() > 1e-2, "the adapter must change the logits"
        assert (_view_logits(pair, "tuned", ids) - want).abs().max().item() < 1e-5, (variant, fold_mode)
        assert (_view_logits(pair, "base", ids) - _logits(base_model, ids)).abs().max().item() == 0.0


def test_lora_bias_layers_are_not_folded(tiny_gpt2, tmp_path):
    """peft's get_delta_weight leaves lora_B's bias out: folding such a layer would drop it."""
    base, _ = tiny_gpt2
    adapter = _adapter(base, tmp_path / "lora-bias", dict(**GPT2, lora_bias=True), ("lora_B",))
    pair = ModelPair.load(str(base), str(adapter))
    assert pair.metadata["lora_forward"] == "unmerged"


def _refused(case):
    from peft import PrefixTuningConfig, PromptTuningConfig

    return {
        "bias-all": ("gpt2", dict(**GPT2, bias="all"), ("bias",), "bias='all'"),
        "bias-lora-only": ("gpt2", dict(**GPT2, bias="lora_only"), ("bias",), "bias='lora_only'"),
        "layer-replication": ("llama", dict(target_modules=LLAMA, layer_replication=[[0, 2], [1, 2]]), (), "layer_"),
        "activated-lora": (
            "llama",
            dict(target_modules=LLAMA, alora_invocation_tokens=[5], task_type="CAUSAL_LM"),
            (),
            "activated LoRA",
        ),
        "prefix-tuning": ("llama", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4), (), "PREFIX"),
        "prompt-tuning": ("llama", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4), (), "PROMPT"),
    }[case]


@pytest.mark.parametrize(
    "case", ["bias-all", "bias-lora-only", "layer-replication", "activated-lora", "prefix-tuning", "prompt-tuning"]
)
def test_adapters_the_views_cannot_show_are_refused(case, tiny_llama, tiny_gpt2, tmp_path):
    """Prompt learning and aLoRA act in PeftModel.forward, which scoring does not run; trained base biases
    and layer replication change the base itself, so the base view (adapter disabled) would not be the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    arch, config, perturb, reason = _refused(case)
    base, plain = tiny_llama if arch == "llama" else tiny_gpt2
    adapter = _adapter(base, tmp_path / case, config, perturb)
    with pytest.raises(ModelLoadError, match=f"not supported: {reason}"):
        ModelPair.load(str(base), str(adapter))
    first = ModelPair.load(str(base), str(plain))
    ids = first.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with pytest.raises(ModelLoadError, match=f"not supported: {reason}"):
        first.with_adapter(adapter)
    untouched = AutoModelForCausalLM.from_pretrained(base).eval()
    assert (_view_logits(first, "base", ids) - _logits(untouched, ids)).abs().max().item() == 0.0
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    with pytest.raises(ModelLoadError, match=f"not supported: {reason}"):
        ModelPair.load(None, loaded, tokenizer=str(base))


@pytest.mark.parametrize(("targets", "refused"), [(["up_proj", "down_proj"], False), (["q_proj", "up_proj"], True)])
def test_lora_only_biases_are_refused_only_where_adapted_layers_have_them(targets, refused, tiny_llama, tmp_path):
    """bias="lora_only" trains the biases of the adapted layers only: on a base whose attention has biases
    and whose MLP has none, an MLP adapter leaves the base intact and is shown (it was once refused because
    the base had any bias); an adapter on q_proj trains q_proj's bias into the base and is refused."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "llama-attention-bias"
    config = AutoConfig.from_pretrained(tiny_llama[0])
    config.attention_bias = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_llama[0]).save_pretrained(base)
    adapter = _adapter(base, tmp_path / "adapter", dict(target_modules=targets, bias="lora_only"), ("bias",))
    if refused:
        with pytest.raises(ModelLoadError, match=r"not supported: bias='lora_only' .*q_proj"):
            ModelPair.load(str(base), str(adapter))
        return
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    pair = ModelPair.load(str(base), str(adapter))
    ids = pair.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    want = _logits(peft_model, ids)
    assert (_logits(base_model, ids) - want).abs().max().item() > 1e-2
    assert (_view_logits(pair, "tuned", ids) - want).abs().max().item() < 1e-5
    assert (_view_logits(pair, "base", ids) - _logits(base_model, ids)).abs().max().item() == 0.0


def test_layer_views_find_a_final_norm_the_adapter_trains(tiny_llama, tmp_path):
    """modules_to_save=["norm"] wraps the final norm; the logit lens still finds it, and its last layer
    gives what compare gives, base and tuned."""
    from specprobe.probe import compare, layers

    base, _ = tiny_llama
    adapter = _adapter(
        base, tmp_path / "norm", dict(target_modules=LLAMA, modules_to_save=["norm"]), ("modules_to_save",)
    )
    pair = ModelPair.load(str(base), str(adapter))
    kw = dict(terms=["angina pectoris", "aspirin"], texts=[TEXT], controls=None, progress=False)
    lens = layers(pair, **kw).to_pandas()
    final = lens[lens["layer"] == lens["layer"].max()]
    scores = compare(pair, **kw).to_pandas()
    for model in ("base", "tuned"):
        both = scores.merge(final[final["model"] == model], on=["term", "text_id", "start"])
        assert len(both) == len(scores) > 0
        assert (both["logp"] - both[f"logp_{model}"]).abs().max() < 1e-5
    assert (scores["logp_tuned"] - scores["logp_base"]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("arch", "config", "perturb"),
    [
        ("llama", dict(target_modules=[*LLAMA, "lm_head"]), ()),
        ("gpt2", dict(**GPT2, modules_to_save=["lm_head"]), ("modules_to_save",)),
    ],
    ids=["lora-on-the-head", "head-in-modules-to-save"],
)
def test_logit_attribution_reads_the_tuned_head(arch, config, perturb, tiny_llama, tiny_gpt2, tmp_path):
    """With an adapter on the head, direct logit attribution reads the tuned head's weight (it read the
    base weight and failed its own adds-up check): the parts add up to peft's tuned logit, folded or not."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from specprobe.probe import logit_attribution
    from tests.test_probe_layers import term_tokens

    base = (tiny_llama if arch == "llama" else tiny_gpt2)[0]
    adapter = _adapter(base, tmp_path / "head", config, perturb)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    for fold_mode in ("auto", "unmerged"):
        pair = ModelPair.load(str(base), str(adapter), fold_mode=fold_mode)
        df = logit_attribution(pair, terms=["aspirin"], texts=[TEXT], progress=False).to_pandas()
        occ = df.iloc[0]
        ids, toks = term_tokens(pair.tokenizer, TEXT, occ["start"], occ["end"])
        logits = _logits(peft_model, torch.tensor([ids]))[0].double()
        want = sum(float(logits[p - 1, ids[p]]) for p in toks)
        total = df[df["model"] == "tuned"]["contribution"].sum()
        assert abs(total - want) < 1e-3 * max(1.0, abs(want)), (fold_mode, total, want)
