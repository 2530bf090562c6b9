"""compare() against the plain reference on tiny GPT-2, Llama and Qwen2 models with LoRA adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specprobe.probe import Comparison, ModelPair, compare
from specprobe.probe.occurrences import NO_BOS_AT_START, TRUNCATED_CONTEXT
from tests.reference import load_plain, plain_occurrence_logp

LONG = " ".join(["The committee discussed the new budget and agreed to meet again next month."] * 12)
TEXTS = [
    "Myocardial infarction is suspected; myocardial INFARCTION again, and chest pain.",  # start, case, repeat
    "The patient (45-year-old) had a seizure, then another seizure! Chest pain?",  # punctuation
    "Cirrhosis, nephrotic syndrome and psoriasis: three words, many tokens.",
    LONG + " Finally the patient had chest pain and a seizure.",  # longer than the 128-token context
]
TERMS = {
    "myocardial infarction": ["Cardiology"],
    "chest pain": ["Cardiology", "Emergency medicine"],
    "seizure": ["Neurology"],
    "cirrhosis": ["Gastroenterology"],
    "nephrotic syndrome": ["Nephrology"],
    "psoriasis": ["Dermatology"],
    "not present anywhere": ["Neurology"],
}


@pytest.fixture(scope="module")
def results(tiny_pair):
    arch, base, adapter = tiny_pair
    comp = compare(str(base), str(adapter), TERMS, TEXTS, controls=["budget", "month", "words"], progress=False)
    return arch, base, adapter, comp


def test_every_logp_matches_plain_reference(results):
    arch, base, adapter, comp = results
    df = comp.to_pandas()
    assert len(df) > 15
    texts = dict(zip([f"text{i}" for i in range(len(TEXTS))], TEXTS))
    max_length = comp.metadata["options"]["max_length"]
    for variant, adapter_dir, col in (("base", None, "logp_base"), ("tuned", adapter, "logp_tuned")):
        model, tok = load_plain(base, adapter_dir)
        for row in df.itertuples():
            ref = plain_occurrence_logp(model, tok, texts[row.text_id], row.start, row.end, max_length)
            ours = getattr(row, col)
            if math.isnan(ref):
                assert math.isnan(ours) and NO_BOS_AT_START in row.flags
            else:
                assert abs(ours - ref) < 1e-4, (arch, variant, row.term, row.start, ours, ref)


def test_cases_are_covered(results):
    arch, _, _, comp = results
    df = comp.to_pandas()
    terms = df[~df["is_control"]]
    assert (terms["n_tokens"] > 1).any(), "multi-token terms"
    assert (terms.groupby(["text_id", "term"]).size() > 1).any(), "repeated terms"
    assert {"INFARCTION", "Chest pain"} & set(terms["surface"].str.split().str[-1].tolist() + terms["surface"].tolist())
    assert terms["flags"].str.contains(TRUNCATED_CONTEXT).any(), "long text scored in windows"
    at_start = terms[(terms["text_id"] == "text0") & (terms["start"] == 0)]
    assert len(at_start) == 1
    if arch == "qwen2":  # no BOS token: flagged, not guessed
        assert NO_BOS_AT_START in at_start["flags"].iloc[0] and math.isnan(at_start["logp_base"].iloc[0])
    else:
        assert np.isfinite(at_start["logp_base"].iloc[0])
    assert comp.missing == ["not present anywhere"]
    assert np.allclose(df["delta"].dropna(), (df["logp_tuned"] - df["logp_base"]).dropna())
    assert (df["delta"].dropna().abs() > 0).all(), "the random LoRA adapter changes every logp"
    per_tok = df.dropna(subset=["delta"])
    assert np.allclose([sum(x) for x in per_tok["token_logp_base"]], per_tok["logp_base"])


def test_batch_size_invariance(tiny_llama):
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    one = compare(pair, terms=TERMS, texts=TEXTS, controls=None, batch_size=1, progress=False).to_pandas()
    many = compare(pair, terms=TERMS, texts=TEXTS, controls=None, batch_size=16, progress=False).to_pandas()
    assert np.allclose(one["logp_base"], many["logp_base"], atol=1e-5, equal_nan=True)
    assert np.allclose(one["logp_tuned"], many["logp_tuned"], atol=1e-5, equal_nan=True)


def test_adapter_mode_base_equals_plain_base_model(tiny_llama):
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    assert pair.adapter_mode and pair.variants == ("base", "tuned")
    alone = compare(str(base), str(base), TERMS, TEXTS[:3], controls=None, progress=False).to_pandas()
    both = compare(pair, terms=TERMS, texts=TEXTS[:3], controls=None, progress=False).to_pandas()
    assert np.allclose(alone["logp_base"], both["logp_base"], atol=1e-6, equal_nan=True)


def test_full_tuned_checkpoint_matches_adapter(tiny_llama, tmp_path):
    base, adapter = tiny_llama
    merged, tok = load_plain(base, adapter)
    merged = merged.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged", safe_serialization=True)
    tok.save_pretrained(tmp_path / "merged")
    full = compare(str(base), str(tmp_path / "merged"), TERMS, TEXTS[:3], controls=None, progress=False).to_pandas()
    lora = compare(str(base), str(adapter), TERMS, TEXTS[:3], controls=None, progress=False).to_pandas()
    # merged and unmerged LoRA differ by float rounding only (peft #1836)
    assert np.allclose(full["logp_tuned"], lora["logp_tuned"], atol=1e-4, equal_nan=True)


def test_loaded_objects_are_accepted(tiny_gpt2):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = tiny_gpt2
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = PeftModel.from_pretrained(model, adapter)
    tok = AutoTokenizer.from_pretrained(base)
    from_objects = compare(
        model, peft_model, TERMS, TEXTS[:2], tokenizer=tok, controls=None, progress=False
    ).to_pandas()
    from_paths = compare(str(base), str(adapter), TERMS, TEXTS[:2], controls=None, progress=False).to_pandas()
    assert np.allclose(from_objects["logp_tuned"], from_paths["logp_tuned"], atol=1e-6)
    assert np.allclose(from_objects["logp_base"], from_paths["logp_base"], atol=1e-6)


def test_long_texts_error_policy(tiny_llama):
    base, adapter = tiny_llama
    with pytest.raises(ValueError, match=r"more than max_length=\d+ \(default: the model's context\)"):
        compare(str(base), str(adapter), TERMS, [TEXTS[3]], long_texts="error", progress=False)


def test_a_max_length_beyond_the_models_context_is_refused(tiny_llama):
    """max_length=1000 on a 128-position model scored the long text whole, past the positions the
    model has (RoPE: never trained; GPT-2: an IndexError), with no truncated_context flag."""
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    with pytest.raises(ValueError, match="max_length=1000 is longer than the model's context of 128 tokens"):
        compare(pair, terms=TERMS, texts=[TEXTS[3]], max_length=1000, controls=None, progress=False)
    short = compare(pair, terms=TERMS, texts=[TEXTS[3]], max_length=128, controls=None, progress=False)
    assert TRUNCATED_CONTEXT in short.to_pandas()["flags"].iloc[0]


@pytest.mark.parametrize("max_length", [0, -3, 2.5])
def test_a_max_length_that_is_no_positive_integer_is_refused_before_any_model_loads(max_length):
    """max_length=0 was read as 'the model's context' and -3 gave 'an occurrence ... has 2 tokens, more
    than fit in a window of the model's context of -3'; now one error, before the model is loaded."""
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        compare("/no/such/model", "/no/such/adapter", TERMS, TEXTS[:1], max_length=max_length, progress=False)


def test_save_load_roundtrip(results, tmp_path):
    *_, comp = results
    for name in ("c.json", "c.json.gz"):
        path = comp.save(tmp_path / name)
        back = Comparison.load(path)
        a, b = comp.to_pandas(), back.to_pandas()
        assert list(a.columns) == list(b.columns)
        assert np.allclose(a["logp_base"], b["logp_base"], equal_nan=True)
        assert a["specialties"].tolist() == b["specialties"].tolist()
        assert back.missing == comp.missing
        assert back.metadata["adapter_sha256"] == comp.metadata["adapter_sha256"]
        assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


def test_summaries(results):
    *_, comp = results
    spec = comp.by_specialty()
    assert {"Cardiology", "Neurology", "control"} <= set(spec["specialty"])
    card = spec.set_index("specialty").loc["Cardiology"]
    assert card["n"] >= 3 and card["n_terms"] == 2
    assert {"ci_low", "ci_high", "minus_control", "p_value", "p_holm"} <= set(spec.columns)
    terms = comp.by_term("delta")
    scored = comp.scored()
    assert set(terms[~terms["is_control"]]["term"]) == set(scored[~scored["is_control"]]["term"])
    assert len(terms[~terms["is_control"]]) >= 4
    with pytest.raises(ValueError, match="metric"):
        comp.by_specialty("nonsense")
    assert "Cardiology" in comp.summary()


def test_template_contexts_for_plain_term_lists(tiny_llama):
    base, adapter = tiny_llama
    comp = compare(str(base), str(adapter), ["seizure", "psoriasis"], controls=None, progress=False)
    df = comp.to_pandas()
    assert sorted(df["term"]) == ["psoriasis", "seizure"]
    assert df["text_id"].str.startswith("template:").all()


def test_auto_controls_are_ordinary_words_outside_terms(tiny_llama):
    base, adapter = tiny_llama
    comp = compare(str(base), str(adapter), TERMS, TEXTS, progress=False)
    df = comp.to_pandas()
    ctrl = df[df["is_control"]]
    assert len(ctrl) > 0
    term_words = {w for t in TERMS for w in t.split()}
    assert not set(ctrl["term"]) & term_words
    for _tid, g in df.groupby("text_id"):
        spans = g[~g["is_control"]][["start", "end"]].to_numpy()
        for s, e in g[g["is_control"]][["start", "end"]].to_numpy():
            assert not any(s < te and e > ts for ts, te in spans)


def test_unembedding_only_at_scored_rows_in_chunks(tiny_llama, monkeypatch):
    """The head sees gathered rows only, at most HEAD_CHUNK_ELEMENTS / vocab at a time; results unchanged."""
    from specprobe.core import scoring

    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    reference = compare(pair, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    vocab = len(pair.tokenizer)
    shapes = []
    real_split = scoring.SplitModel

    monkeypatch.setattr(scoring, "HEAD_CHUNK_ELEMENTS", {"cpu": vocab * 3})
    original_view = ModelPair.view

    import contextlib

    @contextlib.contextmanager
    def spying_view(self, variant):
        with original_view(self, variant) as split:
            head = split.head

            def recording_head(h):
                shapes.append(tuple(h.shape))
                return head(h)

            yield real_split(split.causal_lm, split.backbone, recording_head, split.layers, split.final_norm)

    monkeypatch.setattr(ModelPair, "view", spying_view)
    chunked = compare(pair, terms=TERMS, texts=TEXTS, controls=None, progress=False).to_pandas()
    assert shapes and all(len(s) == 2 and s[0] <= 3 for s in shapes), shapes[:5]
    n_scored_tokens = int(reference.dropna(subset=["delta"])["n_tokens"].sum())
    assert sum(s[0] for s in shapes) <= 2 * n_scored_tokens  # rows for scored tokens only, per variant
    assert np.allclose(reference["logp_tuned"], chunked["logp_tuned"], atol=1e-6, equal_nan=True)


def test_unmasked_right_padding_equals_masked(tiny_pair):
    """Right padding in a causal model needs no attention mask: scores equal the masked run."""
    from specprobe.core.scoring import score_items
    from specprobe.probe.prepare import prepare

    arch, base, adapter = tiny_pair
    pair = ModelPair.load(str(base), str(adapter))
    prep = prepare(pair, TERMS, TEXTS, controls=None)
    assert len({len(i.ids) for i in prep.items}) > 1, "items of different lengths, so batches are padded"
    for variant in pair.variants:
        with pair.view(variant) as split:
            masked = score_items(split, prep.items, batch_size=8, attention_mask=True)
            plain = score_items(split, prep.items, batch_size=8)
        for a, b in zip(masked, plain):
            assert np.allclose(a.logps, b.logps, atol=1e-5), arch


def test_non_finite_logits_are_an_error_not_dropped_rows():
    """NaN/inf logits (16-bit overflow) would become NaN log-probs that the statistics drop as unscorable:
    the forward path refuses them; a target logit of -inf under finite others stays a log-prob of -inf."""
    from types import SimpleNamespace

    import torch

    from specprobe.core.scoring import NonFiniteLogitsError, logprobs_at

    head = torch.nn.Linear(4, 6, bias=False)

    def split_with(poison):
        def run_head(h):
            logits = head(h)
            logits[1, 3] = poison
            return logits

        return SimpleNamespace(causal_lm=SimpleNamespace(get_output_embeddings=lambda: head), head=run_head)

    hidden, targets = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with torch.no_grad():
        for poison in (math.nan, math.inf):
            with pytest.raises(NonFiniteLogitsError, match="1 scored position.*float32 on cpu.*bfloat16"):
                logprobs_at(split_with(poison), hidden, targets)
        out = logprobs_at(split_with(-math.inf), hidden, torch.tensor([0, 3, 2]))
        assert out[1] == -math.inf and torch.isfinite(out[[0, 2]]).all()
