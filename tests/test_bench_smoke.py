"""The benchmark script runs end to end at a tiny size (a smoke test, not a timed test)."""

import json

import pytest


@pytest.mark.slow
def test_bench_runs_on_tiny_size(smedqa_path, tmp_path, monkeypatch):
    from bench import workload
    from bench.__main__ import main

    monkeypatch.setattr(workload, "CACHE", tmp_path / "cache")
    out = tmp_path / "results.json"
    assert (
        main(
            [
                "--data",
                str(smedqa_path),
                "--n-texts",
                "4",
                "--repeats",
                "1",
                "--hidden",
                "64",
                "--layers",
                "1",
                "--vocab",
                "1000",
                "--no-vocab-scaling",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["texts_per_s"]["compare"] > 0 and res["texts_per_s"]["baseline"] > 0
    assert res["agreement"]["max_abs_diff"] < 1e-4
    assert len(res["scaling"]) == 3
    assert res["checkpointed"]["seconds"] > 0 and res["checkpointed"]["plain_seconds"] > 0
    assert res["logit_lens"]["n_layers"] == 1 and res["logit_lens"]["seconds"] > 0
    assert res["patching"]["n_layers"] == 1 and res["patching"]["rows"] > 0
    assert res["workload"]["lora_forward"] == "folded"
    assert 0 < res["fraction_of_peak"] and all(x > 0 for x in res["matmul_mix_peak_flops"])
