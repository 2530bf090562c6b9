"""`python -m bench --shape`: a real shape's config, truncated and narrowed so that it runs in seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_shape_configs_are_the_published_ones():
    from bench.shapes import SHAPES, shape_config, shape_dict

    small, large = SHAPES["llama-3.2-3b"], SHAPES["llama-3.1-8b"]
    assert (small["hidden_size"], small["num_hidden_layers"], small["num_attention_heads"]) == (3072, 28, 24)
    assert (small["num_key_value_heads"], small["intermediate_size"], small["tie_word_embeddings"]) == (8, 8192, True)
    assert (large["hidden_size"], large["num_hidden_layers"], large["num_attention_heads"]) == (4096, 32, 32)
    assert (large["num_key_value_heads"], large["intermediate_size"], large["tie_word_embeddings"]) == (8, 14336, False)
    for shape in (small, large):
        assert shape["vocab_size"] == 128256 and shape["max_position_embeddings"] == 131072
        assert shape["rope_theta"] == 500000.0 and shape["rope_scaling"]["rope_type"] == "llama3"
        assert (
            shape["rope_scaling"]["factor"] == 32.0
            and shape["rope_scaling"]["original_max_position_embeddings"] == 8192
        )
    cfg = shape_config("llama-3.2-3b", layers=2, hidden=256)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 256, 2, 1)
    assert shape_dict("llama-3.1-8b")["num_hidden_layers"] == 32  # the table itself is not changed


def test_help_lists_the_shape_options(capsys):
    from bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--shape", "--layers", "--hidden", "--fold-check-layers", "llama-3.2-3b", "llama-3.1-8b"):
        assert option in text  # bench/gpu_check.sh runs the shape step when `--help` shows --shape


def test_materialise_builds_on_meta_and_fills_bf16_in_place():
    import torch

    from bench.shapes import add_lora, materialise, param_bytes, shape_config

    model = materialise(shape_config("llama-3.2-3b", layers=1, hidden=128), torch.device("cpu"), torch.bfloat16)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in params.values())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, one copy
    assert param_bytes(model) == 2 * sum(p.numel() for p in model.parameters())
    assert torch.all(model.model.norm.weight == 1)
    assert 0.015 < model.model.layers[0].mlp.up_proj.weight.float().std().item() < 0.025
    rotary = model.model.rotary_emb
    assert torch.isfinite(rotary.inv_freq).all() and rotary.inv_freq.max().item() == pytest.approx(1.0)
    again = materialise(shape_config("llama-3.2-3b", layers=1, hidden=128), torch.device("cpu"), torch.bfloat16)
    assert torch.equal(again.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)
    tuned = add_lora(model, rank=4)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 7 and all(p.abs().sum() > 0 for p in lora_b)  # every projection, non-zero B


@pytest.mark.slow
def test_bench_shape_reports_memory_speed_and_lora_forward(smedqa_path, tmp_path):
    out = tmp_path / "shape.json"
    env = dict(
        os.environ,
        SPECPROBE_BENCH_CACHE=str(tmp_path / "cache"),
        SPECPROBE_SMEDQA=str(smedqa_path),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--shape",
        "llama-3.2-3b",
        "--layers",
        "2",
        "--hidden",
        "256",
        "--n-texts",
        "2",
        "--fold-check-layers",
        "1",
        "--out",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "locally trained stand-in" in run.stdout
    assert "| llama-3.2-3b | 2 |" in run.stdout  # the table row
    res = json.loads(out.read_text())
    mem = res["memory"]
    assert mem["weights_bytes"] > 0 and res["peak_memory_ratio"] == mem["peak_bytes"] / mem["weights_bytes"]
    assert res["peak_memory_ratio"] >= 1.0  # the weights themselves are resident
    assert set(mem["peaks_by_phase_bytes"]) >= {"materialise", "lora", "compare", "lens"}
    assert res["compare_tokens_per_s"] > 0 and res["lens_tokens_per_s"] > 0
    assert res["lora_forward"] == "unmerged"  # bf16: unmerged by default
    assert res["unmerged_cost"]["tuned_unmerged_over_base"] > 0
    assert res["folded"]["base_view_max_abs_logp"] == 0.0  # the base view never folds
    assert 0 < res["folded"]["max_abs_logp_vs_unmerged"] < 1.0
    fold = res["fold_check"]
    assert fold["layers"] == 1 and fold["occurrences"] > 0 and fold["median_abs_delta"] > 0
    assert res["workload"]["config"]["vocab_size"] == 128256 and res["lens"]["n_layers"] == 2
