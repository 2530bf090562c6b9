"""A folder with both config.json and adapter_config.json is refused as a base everywhere, with one line."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

from specprobe.app.cli import main


def _both(tmp_path: Path) -> Path:
    """A model folder that also holds a PEFT adapter's config (transformers loads it as that adapter)."""
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base-model"}))
    return folder


def _said(what: str, folder: Path) -> str:
    return (
        f"{what} {folder} holds both config.json and adapter_config.json: transformers would load it as a PEFT "
        "adapter on the model its adapter_config.json names (org/base-model), not as this model"
    )


def test_run_refuses_it_before_the_lexicon_or_the_base_hash(tmp_path, capsys):
    """`specprobe run` took it as a base (hashed it, built the split and the lexicon), then training refused it
    as "a PEFT adapter folder, not a base model", which it is not only."""
    folder = _both(tmp_path)
    questions = Path(str(files("specprobe") / "data" / "demo" / "questions.json"))
    toml = tmp_path / "exp.toml"
    toml.write_text(f'base = "{folder}"\ndata = "{questions}"\nout = "{tmp_path / "out"}"\nlayers = false\n')
    rc = main(["run", str(toml)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"specprobe run: error: {_said('base', folder)}"), err
    assert [p.name.split("-")[0] for p in (tmp_path / "out" / "stages").iterdir()] == ["split"]


def test_training_and_model_pair_refuse_it_with_the_same_line(tmp_path):
    from specprobe.app.base_identity import base_identity
    from specprobe.core.models import ModelLoadError, ModelPair
    from specprobe.finetune import train

    folder = _both(tmp_path)
    said = re.escape(_said("base", folder))
    with pytest.raises(ValueError, match=said):
        base_identity(str(folder), None, tmp_path / "out")
    with pytest.raises(ModelLoadError, match=said):
        train(str(folder), tmp_path / "q.json", None, tmp_path / "o", max_steps=1, progress=False)
    with pytest.raises(ModelLoadError, match=said + ".*, and the adapter as `tuned`"):
        ModelPair.load(str(folder), device="cpu")
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()
