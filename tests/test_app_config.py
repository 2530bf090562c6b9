"""ExperimentConfig is validated when it loads: typed one-line errors naming the file and the key."""

from __future__ import annotations

import inspect
import re
from dataclasses import asdict, fields

import pytest

from specprobe.app.config import CompareSchema, ConfigError, ExperimentConfig, TrainSchema
from specprobe.app.stages import stage_key

BAD = [  # (TOML text, the key the message must name, a phrase it must contain)
    ('test_fraction = "0.3"', "test_fraction", "must be a number"),
    ("test_fraction = 1.0", "test_fraction", "must be < 1"),
    ('seed = "zero"', "seed", "must be an integer"),
    ("seed = 1.5", "seed", "must be an integer"),
    ('layers = "no"', "layers", "must be true or false"),
    ("layers = 0", "layers", "must be true or false"),
    ('include_all = "yes"', "include_all", "must be true or false"),
    ('specialties = "Cardiology"', "specialties", "must be a list"),
    ('specialties = ["Cardiology", 3]', "specialties[1]", "must be a string"),
    ("max_texts = -1", "max_texts", "must be > 0"),
    ("max_texts = 0", "max_texts", "must be > 0"),
    ('out = ""', "out", "must not be empty"),
    ("specialites = []", "specialites", "unknown key"),
    ("train = 3", "train", "must be a table"),
    ("[train]\nmax_steps = 0", "train.max_steps", "must be > 0"),
    ("[train]\nmax_steps = -5", "train.max_steps", "must be > 0"),
    ("[train]\nbatch_size = 0", "train.batch_size", "must be > 0"),
    ('[train]\nlearning_rate = "1e-3"', "train.learning_rate", "must be a number"),
    ('[train]\nscheduler = "exp"', "train.scheduler", "must be 'linear', 'cosine' or 'constant'"),
    ("[train]\nrnak = 4", "train.rnak", "unknown key; valid train keys"),
    ("[compare]\nbatch_size = 0", "compare.batch_size", "must be > 0"),
    ("[compare]\nseed = 1", "compare.seed", "unknown key; valid compare keys"),
    ("[compare]\ncontrols = 3", "compare.controls", "must be 'auto' or a list"),
    ('[compare]\nlong_texts = "cut"', "compare.long_texts", "must be 'window' or 'error'"),
    ("specialties = []", "specialties", "must not be empty"),  # it ran every specialty
    ("trajectory_adapters = []", "trajectory_adapters", "must not be empty"),  # it ran every adapter's
    ('specialties = ["Neurology", "Neurology"]', "specialties", "'Neurology' is listed twice"),
    ('trajectory_adapters = ["Neurology", "Neurology"]', "trajectory_adapters", "listed twice"),
]


@pytest.mark.parametrize("text,key,phrase", BAD, ids=[b[1] + ":" + b[0].split("=")[-1].strip() for b in BAD])
def test_bad_toml_values_are_one_line_errors_naming_file_and_key(tmp_path, text, key, phrase):
    path = tmp_path / "experiment.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_toml(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{path}: {key}: ") and phrase in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"test_fraction": "0.3"}, "test_fraction"),
        ({"seed": "zero"}, "seed"),
        ({"layers": "no"}, "layers"),
        ({"specialties": "Cardiology"}, "specialties"),
        ({"max_texts": -1}, "max_texts"),
        ({"train": {"max_steps": 0}}, "train.max_steps"),
        ({"compare": {"batch_sise": 2}}, "compare.batch_sise"),
    ],
)
def test_bad_values_in_code_are_refused_too(kwargs, key):
    with pytest.raises(ConfigError, match="^experiment config: " + re.escape(key) + ": "):
        ExperimentConfig(**kwargs)


def test_a_field_changed_after_construction_is_checked_before_the_run():
    cfg = ExperimentConfig()
    cfg.train = {**cfg.train, "max_steps": 0}
    with pytest.raises(ConfigError, match="train.max_steps: must be > 0, got 0"):
        cfg.resolved()


def test_several_bad_keys_report_the_first_and_count_the_rest(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('seed = "zero"\nlayers = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r": seed: .*\(and 1 more invalid key\(s\)\)$"):
        ExperimentConfig.from_toml(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text("out = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: not a valid TOML file"):
        ExperimentConfig.from_toml(path)


def test_valid_values_are_kept_exactly_as_given(tmp_path):
    """Validation does not coerce (an int stays an int), so stage keys hashed from the values do not change."""
    path = tmp_path / "e.toml"
    path.write_text(
        'out = "x"\nspecialties = ["Cardiology"]\ntest_fraction = 0.25\nlayers = false\nmax_texts = 5\n'
        '[train]\nmax_steps = 3\nlearning_rate = 1\ntarget_modules = "q_proj,v_proj"\n'
        '[compare]\ncontrols = ["the", "and"]\nbatch_size = 2\n',
        encoding="utf-8",
    )
    cfg = ExperimentConfig.from_toml(path)
    assert cfg.train == {"max_steps": 3, "learning_rate": 1, "target_modules": "q_proj,v_proj"}
    assert isinstance(cfg.train["learning_rate"], int)
    assert cfg.compare == {"controls": ["the", "and"], "batch_size": 2}
    assert (cfg.specialties, cfg.test_fraction, cfg.layers, cfg.max_texts) == (["Cardiology"], 0.25, False, 5)
    assert asdict(cfg.resolved())["train"] == cfg.train


def test_defaults_and_stage_keys_are_unchanged():
    """The demo's defaults, and the key of a stage, hash exactly as before (existing caches stay valid)."""
    from specprobe.app.experiment import split_key

    cfg = ExperimentConfig()
    assert cfg.train == {"max_steps": 60, "batch_size": 8, "learning_rate": 2e-3, "rank": 8, "continuation": "text"}
    assert cfg.compare == {"batch_size": 16} and cfg.max_texts is None and cfg.layers and cfg.include_all
    assert stage_key("split", split_key("abc", 0.3, 0)) == stage_key(
        "split", {"data": "abc", "test_fraction": 0.3, "seed": 0}
    )
    assert stage_key("split", {"data": "abc", "test_fraction": 0.3, "seed": 0}) == "split-a0398f14ffcd"


def test_paths_and_tuples_are_accepted_in_code(tmp_path):
    cfg = ExperimentConfig(base=tmp_path, out=tmp_path / "out", specialties=("Cardiology",))
    assert (cfg.base, cfg.out, cfg.specialties) == (str(tmp_path), str(tmp_path / "out"), ["Cardiology"])


def test_train_keys_are_exactly_what_finetune_train_accepts():
    from specprobe.finetune import TrainOptions

    assert set(TrainSchema.model_fields) == {f.name for f in fields(TrainOptions)} | {"revision", "trust_remote_code"}
    for scheduler in TrainSchema.model_fields["scheduler"].annotation.__args__:
        TrainOptions(scheduler=scheduler)
    for precision in TrainSchema.model_fields["precision"].annotation.__args__:
        TrainOptions(precision=precision)
    for continuation in TrainSchema.model_fields["continuation"].annotation.__args__:
        TrainOptions(continuation=continuation)


def test_compare_keys_are_options_of_both_compare_and_layers():
    from specprobe.probe import compare
    from specprobe.probe.layers import layers

    for probe in (compare, layers):
        params = inspect.signature(probe).parameters
        assert set(CompareSchema.model_fields) <= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def test_cli_prints_one_line_for_a_bad_config(tmp_path, capsys):
    from specprobe.app.cli import main

    path = tmp_path / "e.toml"
    path.write_text('seed = "zero"\n', encoding="utf-8")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"specprobe run: error: {path}: seed: must be an integer, got 'zero'\n"


@pytest.mark.parametrize("flag,value", [("--max-texts", "-1"), ("--max-steps", "0"), ("--max-texts", "many")])
def test_demo_refuses_counts_below_one(tmp_path, capsys, flag, value):
    from specprobe.app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(tmp_path / "d"), flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_blank_control_words_are_refused_naming_the_key():
    """[compare] controls = ["", ""] ran without any control word (every minus-control comparison then had
    none), where a --controls file without words is refused; [] stays "no control words"."""
    with pytest.raises(ConfigError, match=r"compare\.controls\[1\]: an empty control word"):
        ExperimentConfig(compare={"controls": ["table", " "]})
    assert ExperimentConfig(compare={"controls": []}).compare == {"controls": []}


def test_compare_refuses_control_words_that_are_all_blank():
    from specprobe.probe.controls import given_controls

    with pytest.raises(ValueError, match="every control word given is empty"):
        given_controls(["", "  "], {"seizure": ("Neurology",)})
    assert given_controls([], {"seizure": ("Neurology",)}) == []


def test_an_out_folder_under_a_file_is_refused_naming_the_key(tmp_path):
    """`out` under a file failed in the lock with a bare "[Errno 20] Not a directory", naming no key."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"experiment config: out: .*afile/sub is under .*afile, a file"):
        ExperimentConfig(out=str(tmp_path / "afile" / "sub"))
    with pytest.raises(ConfigError, match=r"out: .*afile is a file, not a folder"):
        ExperimentConfig(out=str(tmp_path / "afile"))
    assert ExperimentConfig(out=str(tmp_path / "new" / "deeper")).out.endswith("deeper")
