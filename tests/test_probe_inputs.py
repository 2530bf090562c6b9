"""Bad input gets a clear error naming the thing; encoding gives one BOS and trustworthy offsets."""

from __future__ import annotations

import json
import shutil

import pytest

from specprobe.core.encoding import TokenizerError, encode, offsets_look_valid
from specprobe.core.models import weights_fingerprint
from specprobe.probe import ModelLoadError, ModelPair, compare
from specprobe.testing.tiny_models import train_tokenizer


def test_unknown_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no-such-dir"):
        ModelPair.load(str(tmp_path / "no-such-dir" / "x" / "y"))


def test_adapter_for_another_base(tiny_llama, tiny_gpt2):
    with pytest.raises(ModelLoadError, match="does not fit the base model|does not belong to this base"):
        ModelPair.load(str(tiny_llama[0]), str(tiny_gpt2[1]))


def test_adapter_manifest_hash_mismatch(tiny_llama, tmp_path):
    base, adapter = tiny_llama
    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    (copy / "manifest.json").write_text(json.dumps({"base_weights_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="trained on a base with weights sha256 000000"):
        ModelPair.load(str(base), str(copy))


def test_different_tokenizers(tiny_llama, tmp_path):
    from specprobe.testing.tiny_models import build_tiny_model

    other = build_tiny_model("llama", tmp_path / "other", vocab_size=700)
    with pytest.raises(ModelLoadError, match="different"):
        ModelPair.load(str(tiny_llama[0]), str(other))


def test_slow_tokenizer_is_refused(tiny_llama):
    from transformers import AutoModelForCausalLM

    class Slow:
        is_fast = False

    model = AutoModelForCausalLM.from_pretrained(tiny_llama[0])
    with pytest.raises(TokenizerError, match="slow tokenizer"):
        ModelPair.load(model, tokenizer=Slow())


def test_empty_terms_and_bad_texts(tiny_llama):
    base, adapter = tiny_llama
    pair = ModelPair.load(str(base), str(adapter))
    with pytest.raises(ValueError, match="no terms"):
        compare(pair, terms=[], texts=["a text"])
    with pytest.raises(ValueError, match="empty"):
        compare(pair, terms=["  "], texts=["a text"])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        compare(pair, terms=["seizure"], texts=["a seizure", 42])
    with pytest.raises(TypeError, match="single string"):
        compare(pair, terms=["seizure"], texts="a seizure")
    with pytest.raises(TypeError, match="terms must be strings"):
        compare(pair, terms={3: "Neurology"}, texts=["a seizure"])
    with pytest.raises(ValueError, match="needs a tuned model"):
        compare(str(base), None, ["seizure"], ["a seizure"])


@pytest.mark.parametrize("arch,expect_bos", [("gpt2", True), ("llama", True), ("qwen2", False)])
def test_exactly_one_bos(arch, expect_bos):
    tok = train_tokenizer(arch)
    enc = encode(tok, "The patient had a seizure.")
    assert enc.has_bos == expect_bos
    if expect_bos:
        assert enc.ids[0] == tok.bos_token_id and enc.ids[1] != tok.bos_token_id
        assert list(enc.ids).count(tok.bos_token_id) == 1
    else:
        assert enc.offsets[0] is not None
    assert encode(tok, "x", add_bos=False).ids[0] != tok.bos_token_id or tok.bos_token_id is None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_broken_offsets_fall_back_to_decoding(arch, monkeypatch):
    tok = train_tokenizer(arch)
    text = "Myocardial infarction, then a seizure; café €12."
    good = encode(tok, text)
    assert good.offsets_source == "tokenizer"
    real_call = type(tok).__call__

    def zero_width(self, *a, **kw):  # simulate the Llama-3 zero-width offsets bug (tokenizers #1553)
        out = real_call(self, *a, **kw)
        out["offset_mapping"] = [(s, s) for s, _ in out["offset_mapping"]]
        return out

    monkeypatch.setattr(type(tok), "__call__", zero_width)
    bad = encode(tok, text)
    assert bad.offsets_source == "decode"
    assert bad.ids == good.ids
    for (g, b), tid in zip(zip(good.offsets, bad.offsets), good.ids):
        if g is None:
            assert b is None
        else:  # same characters, up to leading whitespace
            assert text[g[0] : g[1]].strip() == text[b[0] : b[1]].strip(), (tok.convert_ids_to_tokens(tid), g, b)


def test_offsets_validator():
    assert offsets_look_valid("ab cd", [None, (0, 2), (2, 5)])
    assert not offsets_look_valid("ab cd", [(0, 2), (3, 3)])  # zero-width content token
    assert not offsets_look_valid("ab cd", [(0, 2)])  # "cd" uncovered
    assert not offsets_look_valid("ab cd", [(3, 5), (0, 2)])  # not monotone


def _hub_cache(cache, source, repo: str, commit: str, branch: str = "main") -> None:
    """A Hugging Face hub cache holding the files of `source` as `repo` at `commit` (refs/<branch>)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    shutil.copytree(source, root / "snapshots" / commit, dirs_exist_ok=True)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty offline hub cache, as the loaders (huggingface_hub and transformers) see it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_base_is_checked_against_the_adapters_manifest(tiny_llama, offline_hub, tmp_path):
    """The base-hash check read a hub id's weights as unknown (only local folders were hashed), so an
    adapter trained on one base loaded silently on another hub model of the same shapes."""
    base, adapter = tiny_llama
    _hub_cache(offline_hub, base, "specprobe-test/tiny", "1" * 40)
    pair = ModelPair.load("specprobe-test/tiny", str(adapter))  # the fixture's adapter was trained on it
    assert pair.metadata["base_weights_sha256"] == weights_fingerprint(str(base))
    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    (copy / "manifest.json").write_text(json.dumps({"base_weights_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="trained on a base with weights sha256 000000"):
        ModelPair.load("specprobe-test/tiny", str(copy))


def test_a_hub_revision_loads_the_base_and_its_tokenizer_at_that_revision(tiny_llama, offline_hub, tmp_path):
    """`revision` reached the base's weights but not its tokenizer, which came from the default branch."""
    from specprobe.testing.tiny_models import build_tiny_model

    other = build_tiny_model("llama", tmp_path / "other", vocab_size=700)
    _hub_cache(offline_hub, tiny_llama[0], "specprobe-test/tiny", "1" * 40)
    _hub_cache(offline_hub, other, "specprobe-test/tiny", "2" * 40, branch="v2")
    pair = ModelPair.load("specprobe-test/tiny", revision="v2")
    assert len(pair.tokenizer) == 700 == pair.base_model.config.vocab_size
    assert pair.metadata["base_weights_sha256"] == weights_fingerprint(str(other))


def test_a_hub_base_pinned_as_name_at_revision_loads_that_revision(tiny_llama, offline_hub, tmp_path):
    """ "org/name@<revision>" (how `specprobe run` pins its hub base) loads that revision, whatever the
    default branch says now; a local path with an "@" is a path, and a second, other revision is an error."""
    from specprobe.core.models import model_ref
    from specprobe.testing.tiny_models import build_tiny_model

    other = build_tiny_model("llama", tmp_path / "other", vocab_size=700)
    _hub_cache(offline_hub, tiny_llama[0], "specprobe-test/tiny", "1" * 40)
    _hub_cache(offline_hub, other, "specprobe-test/tiny", "2" * 40, branch="v2")
    pair = ModelPair.load("specprobe-test/tiny@" + "2" * 40)
    assert len(pair.tokenizer) == 700 and pair.metadata["base"] == "specprobe-test/tiny"
    assert pair.metadata["base_revision"] == "2" * 40
    assert model_ref("org/name@v1") == ("org/name", "v1") and model_ref("org/name") == ("org/name", None)
    local = tmp_path / "models@v1"
    local.mkdir()
    assert model_ref(str(local)) == (str(local), None)
    with pytest.raises(ModelLoadError, match="names revision 'v1', but revision='v2'"):
        model_ref("org/name@v1", "v2")


@pytest.mark.parametrize(
    "template", ["Age {age}: {term}.", 'JSON {"a": 1} has {term}', "Item {0}: {term}", "A {term} {"]
)
def test_a_template_with_another_brace_field_is_a_clear_error_before_any_model_loads(template):
    """'Age {age}: {term}.' said only "KeyError: 'age'" (and after loading both models when texts came
    from the template), 'Item {0}: {term}' 'IndexError: Replacement index 0 out of range'."""
    with pytest.raises(ValueError, match=r"template .*: only \{term\} is filled .*write other braces doubled"):
        compare("/no/such/model", "/no/such/adapter", ["pain"], None, template=template, progress=False)


def test_a_template_with_doubled_braces_keeps_them_as_text():
    from specprobe.probe.inputs import normalize_terms, normalize_texts

    records = normalize_texts(None, ["pain"], normalize_terms(["pain"]), "Set {{x}}: {term}.")
    assert [r.text for r in records] == ["Set {x}: pain."]
