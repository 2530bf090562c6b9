"""`ProbeOptions`: one object for the options every probe analysis shares, from keywords or the CLI."""

from __future__ import annotations

import argparse

import pytest

from specprobe.probe import compare, layers, logit_attribution, patch
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions, add_probe_arguments
from specprobe.probe.prepare import options_meta, prepare
from specprobe.probe.remote import remote_layers

TERMS = {"chest pain": ["Cardiology"], "seizure": ["Neurology"], "psoriasis": ["Dermatology"]}
TEXTS = ["The patient had chest pain, then a seizure.", "Psoriasis and chest pain; no seizure today."]
REQUIRED = ["--base", "b", "--tuned", "t", "--terms", "x.json"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_probe_arguments(parser)
    return parser.parse_args(REQUIRED + argv)


def test_from_args_equals_keywords(tmp_path):
    words = tmp_path / "controls.txt"
    words.write_text("table\n\nwindow \nriver\n", encoding="utf-8")
    args = _parse(
        [
            "--controls",
            str(words),
            "--batch-size",
            "3",
            "--max-length",
            "96",
            "--long-texts",
            "error",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--no-progress",
        ]
    )
    expected = ProbeOptions(
        controls=["table", "window", "river"],
        batch_size=3,
        max_length=96,
        long_texts="error",
        device="cpu",
        dtype="float32",
        progress=False,
    )
    assert ProbeOptions.from_args(args) == expected
    assert expected.controls == ("table", "window", "river")  # a list of words is kept frozen, as a tuple
    assert ProbeOptions.from_args(_parse(["--controls", "none"])) == ProbeOptions(
        controls=None, device="auto", dtype="auto"
    )
    assert ProbeOptions.from_args(_parse([])) == ProbeOptions(device="auto", dtype="auto")


@pytest.mark.parametrize("module", ["cli", "layers_cli"])
def test_both_clis_share_the_arguments(module):
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"specprobe.probe.{module}").register(parser.add_subparsers())
    command = "compare" if module == "cli" else "layers"
    args = parser.parse_args(
        [
            command,
            *REQUIRED,
            "--out",
            "o",
            "--controls",
            "none",
            "--batch-size",
            "2",
            "--max-length",
            "64",
            "--no-progress",
        ]
    )
    assert ProbeOptions.from_args(args) == ProbeOptions(
        controls=None, batch_size=2, max_length=64, device="auto", dtype="auto", progress=False
    )


@pytest.fixture(scope="module")
def tokenizer():
    from specprobe.testing.tiny_models import train_tokenizer

    return train_tokenizer("llama")


def test_options_meta_unchanged(tokenizer):
    """The keys, values and their order that saved results and caches depend on."""
    match = MatchOptions(case_sensitive=True)
    prep = prepare(
        tokenizer,
        TERMS,
        TEXTS,
        ProbeOptions(
            controls=["table"], n_controls=4, match=match, add_bos=True, max_length=64, long_texts="error", seed=7
        ),
    )
    meta = options_meta(prep, batch_size=5)
    assert list(meta) == ["options", "n_texts", "n_terms", "control_words"]
    assert list(meta["options"]) == [
        "match",
        "add_bos",
        "max_length",
        "long_texts",
        "controls",
        "n_controls",
        "template",
        "seed",
        "batch_size",
    ]
    assert meta == {
        "options": {
            "match": {"case_sensitive": True, "whole_word": True, "flexible_whitespace": True},
            "add_bos": True,
            "max_length": 64,
            "long_texts": "error",
            "controls": "given",
            "n_controls": 4,
            "template": None,
            "seed": 7,
            "batch_size": 5,
        },
        "n_texts": 2,
        "n_terms": 3,
        "control_words": ["table"],
    }
    no_texts = prepare(tokenizer, TERMS, None, ProbeOptions(controls=None, max_length=64))
    opts = options_meta(no_texts)["options"]
    assert "batch_size" not in opts and opts["controls"] is None and opts["template"] == ProbeOptions().template
    auto = options_meta(prepare(tokenizer, TERMS, TEXTS, ProbeOptions(max_length=64)))["options"]
    assert auto["controls"] == "auto" and auto["match"] == {
        "case_sensitive": False,
        "whole_word": True,
        "flexible_whitespace": True,
    }


def test_prepare_with_options_equals_keywords(tokenizer):
    by_options = prepare(tokenizer, TERMS, TEXTS, ProbeOptions(controls=None, max_length=64, add_bos=False))
    by_keywords = prepare(tokenizer, TERMS, TEXTS, controls=None, max_length=64, add_bos=False)
    assert by_options.items == by_keywords.items and by_options.where == by_keywords.where
    assert by_options.options == by_keywords.options and by_options.occs == by_keywords.occs
    with pytest.raises(ValueError, match="not both"):
        prepare(tokenizer, TERMS, TEXTS, ProbeOptions(max_length=64), controls=None)


@pytest.mark.parametrize("fn", [compare, layers, patch, logit_attribution, remote_layers])
def test_conflicting_options_and_keywords(fn):
    """Refused before any model is loaded (the model names do not exist)."""
    with pytest.raises(ValueError, match=r"options= and the keyword argument\(s\) controls, seed disagree"):
        fn(
            "no-such-base",
            "no-such-tuned",
            TERMS,
            TEXTS,
            options=ProbeOptions(controls=("table",), seed=1),
            controls=["river"],
            seed=2,
        )
    with pytest.raises(TypeError, match="must be a ProbeOptions"):
        fn("no-such-base", "no-such-tuned", TERMS, TEXTS, options={"seed": 1})


def test_keywords_that_agree_or_stay_default_defer_to_options():
    opts = ProbeOptions(controls=("table",), seed=3, max_length=64)
    assert ProbeOptions.resolve(opts, compare, controls=["table"], seed=3, max_length=None) is opts
    assert ProbeOptions.resolve(None, compare, controls=["table"], seed=3) == ProbeOptions(controls=("table",), seed=3)
    # patch's own default is no control words; a keyword left at it defers to options
    assert ProbeOptions.resolve(opts, patch, controls=None).controls == ("table",)


def test_compare_with_options_is_identical(tiny_gpt2):
    base, adapter = tiny_gpt2
    kw = dict(controls=None, max_length=48, batch_size=2, progress=False)
    by_keywords = compare(str(base), str(adapter), TERMS, TEXTS, **kw)
    by_options = compare(str(base), str(adapter), TERMS, TEXTS, options=ProbeOptions(**kw))
    frame_k, frame_o = by_keywords.to_pandas(), by_options.to_pandas()
    assert frame_k.equals(frame_o)
    drop = {"created"}
    assert {k: v for k, v in by_keywords.metadata.items() if k not in drop} == {
        k: v for k, v in by_options.metadata.items() if k not in drop
    }
