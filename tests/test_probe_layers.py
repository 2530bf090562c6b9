"""Layer views: logit lens == compare() at the last layer, patching recovers the whole delta, direct logit
attribution adds up to the logit, bad input, save/load, CLI. Tiny GPT-2, Llama and Qwen2 with LoRA."""

from __future__ import annotations

import argparse
import importlib.util
import json
from functools import partial
from typing import cast

import numpy as np
import pandas as pd
import pytest
import torch

from specprobe.core.architecture import UnsupportedArchitectureError
from specprobe.probe import LayerView, ModelPair, Patching, compare, layers, logit_attribution, patch
from specprobe.probe.hooks import LayerIndexError

TEXTS = [
    "Myocardial infarction is suspected; myocardial INFARCTION again, and chest pain.",
    "The patient had a seizure, then another seizure! Chest pain?",
]
TERMS = {
    "myocardial infarction": ["Cardiology"],
    "chest pain": ["Cardiology", "Emergency medicine"],
    "seizure": ["Neurology"],
}
KEYS = ["text_id", "term", "start", "is_control"]


def term_tokens(tokenizer, text: str, start: int, end: int) -> tuple[list[int], list[int]]:
    """Token ids (BOS spelled out as in tests/reference.py) and the positions of the span's tokens."""
    from tests.reference import plain_ids

    ids, offs = plain_ids(tokenizer, text)
    return ids, [k for k, (s, e) in enumerate(offs) if e > s and s < end and e > start]


@pytest.fixture(scope="module")
def loaded(tiny_pair):
    arch, base, adapter = tiny_pair
    return arch, ModelPair.load(str(base), str(adapter))


def test_lens_last_layer_equals_compare(loaded):
    arch, pair = loaded
    comp = compare(pair, terms=TERMS, texts=TEXTS, controls=["again", "then"], progress=False).to_pandas()
    view = layers(pair, terms=TERMS, texts=TEXTS, controls=["again", "then"], progress=False)
    n_layers = view.n_layers
    assert n_layers == 2 and len(view) == len(comp) * n_layers * 2
    last = view.wide().query("layer == @n_layers - 1")
    merged = comp.merge(last, on=KEYS, suffixes=("", "_lens"), validate="one_to_one")
    assert len(merged) == len(comp)
    for col in ("logp_base", "logp_tuned"):
        a, b = merged[col].to_numpy(float), merged[f"{col}_lens"].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        diff = np.nanmax(np.abs(a - b))
        assert diff < 1e-4, (arch, col, diff)
    # earlier layers differ from the output (the lens is not a copy of the last layer)
    first = view.wide().query("layer == 0").dropna(subset=["logp_base"])
    assert (
        np.abs(first["logp_base"].to_numpy() - merged.dropna(subset=["logp_base"])["logp_base"].to_numpy()) > 1e-6
    ).any()
    assert view.metadata["cost"]["forward_passes_per_model"] == 1, "one pass per batch of texts, not per layer"


def test_lens_rows_in_small_chunks_give_the_same_result(tiny_llama, monkeypatch):
    """All items' rows go through the head together, in chunks of LENS_ROWS: chunking changes nothing."""
    from specprobe.probe import lens

    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    whole = layers(pair, terms=TERMS, texts=TEXTS, controls=["again"], progress=False).to_pandas()
    monkeypatch.setattr(lens, "LENS_ROWS", 3)
    chunked = layers(pair, terms=TERMS, texts=TEXTS, controls=["again"], progress=False, batch_size=1).to_pandas()
    assert len(whole) == len(chunked) > 0
    a, b = whole["logp"].to_numpy(float), chunked["logp"].to_numpy(float)
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.nanmax(np.abs(a - b)) < 1e-5


def test_lens_uses_fresh_norm_statistics(tiny_llama):
    """Layer 0's lens equals head(final_norm(h0)) computed by hand from a plain forward pass."""

    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    view = layers(
        pair, terms=["seizure"], texts=["The patient had a seizure."], controls=None, layer_ids=[0], progress=False
    ).to_pandas()
    row = view[view["model"] == "base"].iloc[0]
    ids, toks = term_tokens(pair.tokenizer, "The patient had a seizure.", row["start"], row["end"])
    with pair.view("base") as split, torch.no_grad():
        hs = split.causal_lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        logp = torch.log_softmax(split.head(split.normed(hs[1][0])).float(), -1)
    assert len(row["token_logp"]) == row["n_tokens"] == len(toks) >= 1
    ref = [float(logp[p - 1, ids[p]]) for p in toks]
    assert np.allclose(row["token_logp"], ref, atol=1e-5)


def test_patching_every_layer_recovers_the_whole_delta(loaded):
    arch, pair = loaded
    res = patch(pair, terms=TERMS, texts=TEXTS[1:], progress=False)
    df = res.to_pandas()
    assert set(df["component"]) == {"attn", "mlp", "layer", "all"} and set(df["direction"]) == {"denoise", "noise"}
    full = df[(df["component"] == "all") | ((df["component"] == "layer") & (df["layer"] == 1))]
    assert len(full) > 0
    denoise = (full["direction"] == "denoise").to_numpy()
    assert np.allclose(
        np.where(denoise, full["logp_patched"], full["logp_base"]),
        np.where(denoise, full["logp_tuned"], full["logp_base"]),
        atol=1e-4,
    )
    assert np.allclose(full["recovered"], 1.0, atol=1e-3), (arch, full["recovered"].tolist())
    partial = df[df["component"].isin(["attn", "mlp"])]
    assert (np.abs(partial["recovered"] - 1) > 1e-3).any(), "single components do not all recover everything"
    sites = res.by_site()
    assert np.allclose(sites.query("component == 'all'")["pooled_recovered"], 1.0, atol=1e-3)
    cost = res.metadata["cost"]
    assert cost["forward_passes"] == cost["items"] * (2 + 2 * 1), "capture x2 + one batched pass per direction"


def test_patching_scored_positions_and_layer_subset(tiny_gpt2):
    base, adapter = tiny_gpt2
    res = patch(
        str(base),
        str(adapter),
        TERMS,
        TEXTS[1:],
        layer_ids=[-1],
        components=["mlp"],
        directions=["noise"],
        positions="scored",
        site_batch=1,
        progress=False,
    ).to_pandas()
    assert set(res["layer"]) == {1, -1} and set(res["component"]) == {"mlp", "all"}
    assert np.allclose(res.query("component == 'all'")["recovered"], 1.0, atol=1e-3)


def test_patching_by_site_never_pools_control_words_with_terms(tiny_gpt2):
    """by_site(): clinical terms only; by_site(by_specialty=True): control words are a row of their own."""
    from specprobe.probe.patching import Patching

    base, adapter = tiny_gpt2
    kw = dict(layer_ids=[-1], components=["mlp"], directions=["denoise"], site_batch=4, progress=False)
    res = patch(str(base), str(adapter), TERMS, TEXTS, controls="auto", **kw)
    frame = res.to_pandas()
    assert frame["is_control"].any() and (~frame["is_control"]).any()
    terms_only = Patching(frame[~frame["is_control"]].reset_index(drop=True), res.metadata)
    pd.testing.assert_frame_equal(res.by_site(n_boot=50), terms_only.by_site(n_boot=50))
    assert "control" in set(res.by_site(by_specialty=True, n_boot=50)["specialty"])


def test_patching_scored_positions_are_the_occurrences_own(tiny_llama):
    """positions="scored" patches the positions that predict this occurrence's tokens only: its rows do not
    depend on the other terms of the text (their positions, patched too, once changed it through attention),
    and equal a hand-written hook on the Hugging Face module."""
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    text = TEXTS[0]  # "chest pain" comes after two occurrences of "myocardial infarction"
    kw = dict(texts=[text], layer_ids=[0], components=["attn", "layer"], positions="scored", site_batch=3)
    alone = patch(pair, terms={"chest pain": ["Cardiology"]}, progress=False, **kw).to_pandas()
    with_others = patch(pair, terms=TERMS, progress=False, **kw).to_pandas()
    keys = ["direction", "layer", "component"]
    m = alone.merge(with_others[with_others["term"] == "chest pain"], on=keys, suffixes=("", "_other"))
    assert len(m) == len(alone) == 6
    assert np.allclose(m["logp_patched"], m["logp_patched_other"], atol=1e-5), m[
        keys + ["recovered", "recovered_other"]
    ]
    # hand-written reference: denoise layer 0's attention output at the occurrence's own positions
    row = alone.query("direction == 'denoise' and component == 'attn'").iloc[0]
    ids, toks = term_tokens(pair.tokenizer, text, row["start"], row["end"])
    ids, cols = ids[: toks[-1] + 1], [p - 1 for p in toks]
    with torch.no_grad():
        with pair.view("tuned") as split:
            donor = {}

            def keep(_m, _a, o):
                donor["x"] = o[0].clone()

            h = split.layers[0].self_attn.register_forward_hook(keep)
            split.causal_lm(input_ids=torch.tensor([ids]))
            h.remove()

        def put(_m, _a, o):
            x = o[0].clone()
            x[0, cols] = donor["x"][0, cols]
            return (x,) + tuple(o[1:])

        with pair.view("base") as split:
            h = split.layers[0].self_attn.register_forward_hook(put)
            logits = split.causal_lm(input_ids=torch.tensor([ids])).logits[0].double()
            h.remove()
    ref = sum(float(torch.log_softmax(logits[p - 1], -1)[ids[p]]) for p in toks)
    assert abs(row["logp_patched"] - ref) < 1e-4, (row["logp_patched"], ref)


def test_logit_attribution_adds_up_to_the_logit(tiny_pair):
    arch, base, adapter = tiny_pair
    pair = ModelPair.load(str(base), str(adapter))
    text = "The patient had a seizure."
    dla = logit_attribution(pair, terms=["seizure"], texts=[text], progress=False)
    df = dla.to_pandas()
    assert set(df["component"]) == {"embed", "attn", "mlp", "bias"}
    assert dla.metadata["final_norm_scale"].startswith("frozen")
    occ = df.iloc[0]
    ids, toks = term_tokens(pair.tokenizer, text, occ["start"], occ["end"])
    for variant in ("base", "tuned"):
        total = df[df["model"] == variant]["contribution"].sum()
        with pair.view(variant) as split, torch.no_grad():
            logits = split.causal_lm(input_ids=torch.tensor([ids])).logits[0].double()
        ref = sum(float(logits[p - 1, ids[p]]) for p in toks)
        assert abs(total - ref) < 1e-3 * max(1.0, abs(ref)), (arch, variant, total, ref)
    spec = dla.by_specialty()
    assert {"mean_delta", "ci_low"} <= set(spec.columns)


def test_attribution_parts_that_miss_a_residual_write_are_refused(tiny_llama):
    """The adds-up check compared the parts with the logit of their own sum, so parts that left out a
    residual write (the last MLP here; a layer of a deeper model before pair_depth) passed. Now the parts'
    sum must also give the model's own log-probs."""
    from specprobe.core.scoring import ScoreItem
    from specprobe.probe.hooks import layer_modules
    from specprobe.probe.lens import direct_logit_attribution
    from specprobe.probe.patching import _capture

    base, _ = tiny_llama
    pair = ModelPair.load(str(base))
    ids = pair.tokenizer("The patient had a seizure.")["input_ids"]
    item = ScoreItem(tuple(ids), tuple(range(1, len(ids))))
    cols, targets = torch.tensor([p - 1 for p in item.positions]), torch.tensor(ids[1:])
    with pair.view("base") as split, torch.no_grad():
        mods = layer_modules(split)
        logps, store = _capture(split, mods, item, range(len(mods)), with_embed=True)
        keys = ["embed"] + [(c, k) for k in range(len(mods)) for c in ("attn", "mlp")]
        parts = torch.stack([store[key][0, cols] for key in keys])
        direct_logit_attribution(split, parts, targets, logps=logps)  # the whole stream: accepted
        with pytest.raises(UnsupportedArchitectureError, match="do not add up to the model's final residual"):
            direct_logit_attribution(split, parts[:-1], targets, logps=logps)


def test_logit_attribution_builds_no_autograd_graph(tiny_gpt2):
    """GPT-2's final LayerNorm has a bias (a trainable parameter): the attribution must not track gradients
    through it (a graph kept alive per text, and torch's requires_grad warning on every float())."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specprobe.probe.lens import direct_logit_attribution

    base, _ = tiny_gpt2
    model = AutoModelForCausalLM.from_pretrained(base).eval()  # a caller's model: parameters require grad
    pair = ModelPair.load(model, model, tokenizer=AutoTokenizer.from_pretrained(base))
    with pair.view("base") as split:
        assert split.final_norm is not None and split.final_norm.bias is not None
        assert split.final_norm.bias.requires_grad
        d = split.final_norm.weight.shape[0]
        parts = torch.randn((3, 4, d), generator=torch.Generator().manual_seed(0))  # the split is exact for any parts
        contrib, const = direct_logit_attribution(split, parts, torch.tensor([2, 4, 6, 8]))
    assert not contrib.requires_grad and not const.requires_grad


def test_pythia_architecture_is_found_and_post_norm_blocks_are_refused(tiny_llama):
    """GPT-NeoX (Pythia) is hooked structurally; blocks that do not write attn + mlp to the residual stream
    (post-LN OPT) get an error naming the model and what is missing."""
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, OPTConfig, OPTForCausalLM

    base, _ = tiny_llama
    tok = AutoTokenizer.from_pretrained(base)
    cfg = GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    a, b = GPTNeoXForCausalLM(cfg).eval(), GPTNeoXForCausalLM(cfg).eval()
    view = layers(a, b, ["seizure"], ["The patient had a seizure."], tokenizer=tok, progress=False)
    assert view.n_layers == 1 and len(view) > 0
    ocfg = OPTConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=64,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        do_layer_norm_before=False,
    )
    a, b = OPTForCausalLM(ocfg).eval(), OPTForCausalLM(ocfg).eval()
    for fn in (layers, patch, logit_attribution):
        with pytest.raises(
            UnsupportedArchitectureError,
            match=r"OPTForCausalLM.*'opt'.*does not add attention and MLP outputs to the residual stream",
        ):
            fn(a, b, ["seizure"], ["The patient had a seizure."], tokenizer=tok, progress=False)


def test_layer_index_out_of_range(loaded):
    _, pair = loaded
    with pytest.raises(LayerIndexError, match="layer index 2 is out of range for a model with 2 layers"):
        layers(pair, terms=TERMS, texts=TEXTS, layer_ids=[0, 2], progress=False)
    with pytest.raises(IndexError, match="-3"):
        patch(pair, terms=TERMS, texts=TEXTS, layer_ids=[-3], progress=False)
    with pytest.raises(ValueError, match="layer_ids is empty"):  # was a view of no rows: "no scored occurrences"
        layers(pair, terms=TERMS, texts=TEXTS, layer_ids=[], progress=False)
    view = layers(pair, terms=TERMS, texts=TEXTS[:1], layer_ids=[-1], controls=None, progress=False)
    assert set(view.to_pandas()["layer"]) == {1}


def test_save_load_and_summaries(tiny_gpt2, tmp_path):
    base, adapter = tiny_gpt2
    view = layers(str(base), str(adapter), TERMS, TEXTS, progress=False)
    back = cast(LayerView, LayerView.load(view.save(tmp_path / "l.json.gz")))
    a, b = view.to_pandas(), back.to_pandas()
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    assert np.allclose(a["logp"], b["logp"], equal_nan=True)
    assert a["specialties"].tolist() == b["specialties"].tolist()
    spec = back.by_specialty()
    assert {"Cardiology", "Neurology", "control"} <= set(spec["specialty"])
    assert set(spec["model"]) == {"base", "tuned", "delta"} and set(spec["layer"]) == {0, 1}
    assert {"mean", "ci_low", "ci_high", "n_texts"} <= set(spec.columns)
    pat = patch(str(base), str(adapter), TERMS, TEXTS[1:], layer_ids=[1], progress=False)
    pback = Patching.load(pat.save(tmp_path / "p.json"))
    assert np.allclose(pat.to_pandas()["recovered"], pback.to_pandas()["recovered"], equal_nan=True)


def test_cli_writes_results(tiny_gpt2, tmp_path, capsys):
    from specprobe.probe import layers_cli

    base, adapter = tiny_gpt2
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    parser = argparse.ArgumentParser()
    layers_cli.register(parser.add_subparsers())
    argv = [
        "layers",
        "--base",
        str(base),
        "--tuned",
        str(adapter),
        "--terms",
        str(terms),
        "--out",
        str(tmp_path / "out"),
        "--patch",
        "--attribution",
        "--layers",
        "0,-1",
        "--no-progress",
        "--controls",
        "none",
    ]
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    for name in (
        "layers.json.gz",
        "layers_by_specialty.csv",
        "patching.json.gz",
        "patching_by_site.csv",
        "logit_attribution.json.gz",
        "logit_attribution_by_specialty.csv",
    ):
        assert (tmp_path / "out" / name).exists(), name
    assert "wrote" in capsys.readouterr().out
    # --overwrite without --patch/--attribution: the folder holds this run only, not the earlier patching
    argv = [a for a in argv if a not in ("--patch", "--attribution")] + ["--overwrite"]
    again = parser.parse_args(argv)
    assert again.handler(again) == 0
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == ["layers.json.gz", "layers_by_specialty.csv"], left
    for bad in ("a", "", ","):  # an empty list ran no layer and wrote empty results
        with pytest.raises(SystemExit):
            parser.parse_args(["layers", "--base", "b", "--tuned", "t", "--terms", "x", "--out", "o", "--layers", bad])
    ok = parser.parse_args(["layers", "--base", "b", "--tuned", "t", "--terms", "x", "--out", "o", "--layers=-2,-1"])
    assert ok.layers == [-2, -1]


def test_cli_run_that_fails_writes_nothing(tiny_gpt2, tmp_path, monkeypatch):
    """The lens is written only once --patch has run too: a run that fails in patching writes no output to a
    new --out (only its finished lens batches, partial-scores/, for the rerun), and an --overwrite run's
    failure leaves the earlier run's files as they were (not its lens beside the earlier patching)."""
    from specprobe.probe import layers_cli, patching

    base, adapter = tiny_gpt2
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    parser = argparse.ArgumentParser()
    layers_cli.register(parser.add_subparsers())
    common = ["layers", "--base", str(base), "--tuned", str(adapter), "--terms", str(terms), "--no-progress"]
    first = parser.parse_args(common + ["--out", str(tmp_path / "out"), "--controls", "none"])
    assert first.handler(first) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def fail(*_a, **_k):
        raise RuntimeError("patching failed")

    monkeypatch.setattr(patching, "patch", fail)
    for out, extra in (("out", ["--overwrite"]), ("fresh", [])):
        args = parser.parse_args(common + ["--out", str(tmp_path / out), "--patch", "--layers", "0", *extra])
        with pytest.raises(RuntimeError, match="patching failed"):
            args.handler(args)
    outputs = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.name != "partial-scores"}
    assert outputs == before
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == ["partial-scores"]


def test_models_of_different_depths_are_refused(tiny_llama):
    """The layer views read layer k of base against layer k of tuned: a 2-layer base with a 3-layer tuned model
    silently gave the tuned model's first two layers (its last lens row was not its output; attribution left
    its last layer out), patching failed with KeyError ('attn', 2)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base, _ = tiny_llama
    tok = AutoTokenizer.from_pretrained(base)

    def model(n_layers: int) -> LlamaForCausalLM:
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4, intermediate_size=64
        )
        return LlamaForCausalLM(cfg).eval()

    two, three = model(2), model(3)
    calls = [partial(layers), partial(patch), partial(logit_attribution)]
    if importlib.util.find_spec("nnsight") is not None:  # the nnsight lens read base 3 / tuned 2 as 2 layers
        calls.append(partial(layers, remote="local"))
    for fn in calls:
        for a, b, msg in ((two, three, "base has 2 decoder layers and tuned 3"), (three, two, "base has 3 .* tuned 2")):
            with pytest.raises(ValueError, match=msg):
                fn(a, b, ["seizure"], ["The patient had a seizure."], tokenizer=tok, progress=False)
