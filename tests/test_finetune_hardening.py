"""finetune hardening (issue 15): signals end in TrainingInterrupted after a checkpoint and a rerun gives
the same adapter; max_length is capped at the model's context; options are checked when made; one
run per output directory."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_utils_locks import hold_in_subprocess

from specprobe.app.cli import main
from specprobe.finetune import TrainingInterrupted, TrainOptionError, TrainOptions, UnknownTrainOptionError
from specprobe.finetune import cli as finetune_cli
from specprobe.finetune.evaluation import evaluate
from specprobe.finetune.run_folder import FINISHING
from specprobe.finetune.training import _Trainer, train
from specprobe.terms.datasets import QARecord
from specprobe.utils.locks import OutputLockedError

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("aspirin", "heparin", "insulin", "rest")
TINY = dict(max_steps=3, batch_size=2, save_every=1, progress=False)


def make_records(n: int = 8, long: bool = False) -> list[QARecord]:
    recs = [
        QARecord(
            f"q{i}",
            f"Which drug helps patient {i} with {'chest' if i % 2 else 'head'} pain?",
            OPTIONS,
            OPTIONS[i % 4],
            ("Cardiology" if i % 2 else "Neurology",),
        )
        for i in range(n)
    ]
    if long:  # far more than the tiny models' 128 positions
        recs.append(
            QARecord(
                "long",
                "Which drug? " + " ".join(f"word{i} pain chest" for i in range(120)),
                OPTIONS,
                OPTIONS[0],
                ("Cardiology",),
            )
        )
    return recs


def write_qa(path: Path, n: int = 24) -> Path:
    path.write_text(
        json.dumps(
            [
                {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
                for r in make_records(n)
            ]
        )
    )
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, field, message",
    [
        ({"rank": 0}, "rank", "positive integer, got 0"),
        ({"rank": 2.5}, "rank", "positive integer, got 2.5"),
        ({"rank": True}, "rank", "positive integer, got True"),
        ({"learning_rate": 0}, "learning_rate", "> 0, got 0"),
        ({"learning_rate": -1e-4}, "learning_rate", "> 0"),
        ({"learning_rate": "0.3"}, "learning_rate", r"must be a number > 0, got '0.3' \(a str\)"),
        ({"max_steps": 0}, "max_steps", "positive integer or None"),
        ({"max_length": 0}, "max_length", "positive integer, got 0"),
        ({"seed": "zero"}, "seed", "integer >= 0, got 'zero'"),
        ({"seed": -1}, "seed", "integer >= 0"),
        ({"dropout": 1.0}, "dropout", r"in \[0, 1\)"),
        ({"warmup_ratio": "0.1"}, "warmup_ratio", "must be a number"),
        ({"alpha": float("nan")}, "alpha", "> 0, got nan"),
        ({"weight_decay": -0.1}, "weight_decay", ">= 0"),
        ({"max_grad_norm": "1"}, "max_grad_norm", "must be a number"),
        ({"load_in_4bit": "no"}, "load_in_4bit", "true or false, got 'no'"),
        ({"append_eos": 1}, "append_eos", "true or false"),
        ({"scheduler": "step"}, "scheduler", "one of"),
        ({"precision": 16}, "precision", "must be a string"),
        ({"target_modules": []}, "target_modules", "names no module"),
        ({"target_modules": [1]}, "target_modules", "list of module names"),
        ({"continuation": "word"}, "continuation", "one of"),
        ({"template": "no placeholders"}, "template", r"\{question\}"),
    ],
)
def test_bad_options_name_the_option(options, field, message):
    with pytest.raises(TrainOptionError, match=rf"^training option {field}: .*{message}") as info:
        TrainOptions.from_kwargs(options)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(
        ValueError, match=r"unknown training option 'learing_rate' \(did you mean 'learning_rate'\?\)"
    ) as info:
        TrainOptions.from_kwargs({"learing_rate": 1e-3, "rank": 4})
    assert isinstance(info.value, UnknownTrainOptionError) and info.value.field == "learing_rate"


def test_good_options_are_kept_as_given():
    opts = TrainOptions.from_kwargs(
        {"learning_rate": 1, "rank": np.int64(4), "target_modules": "q_proj, v_proj", "max_grad_norm": None}
    )
    assert opts.learning_rate == 1 and isinstance(opts.learning_rate, int)  # identities do not change
    assert opts.rank == 4 and type(opts.rank) is int and opts.target_modules == ["q_proj", "v_proj"]
    assert opts.is_explicit("rank") and not opts.is_explicit("max_length")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="specprobe")
    finetune_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", "--base", "b", "--data", "d", "--out", "o", "--max-length", "0"],
        ["finetune", "--base", "b", "--data", "d", "--out", "o", "--max-steps", "0"],
        ["finetune", "--base", "b", "--data", "d", "--out", "o", "--batch-size", "-1"],
        ["finetune", "--base", "b", "--data", "d", "--out", "o", "--seed", "-1"],
        ["finetune", "--base", "b", "--data", "d", "--out", "o", "--rank", "x"],
        ["evaluate", "--model", "m", "--data", "d", "--out", "o.json", "--max-length", "0"],
        ["evaluate", "--model", "m", "--data", "d", "--out", "o.json", "--batch-size", "0"],
    ],
)
def test_cli_refuses_zero_and_negative_counts(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(*argv)
    assert info.value.code == 2
    flag = argv[-2]
    assert f"argument {flag}" in capsys.readouterr().err


def test_cli_accepts_positive_counts():
    args = _parse("finetune", "--base", "b", "--data", "d", "--out", "o", "--max-length", "64", "--seed", "0")
    assert args.max_length == 64 and args.seed == 0


# -- max_length and the model's context ------------------------------------------------------------------
def test_explicit_max_length_past_the_context_is_an_error(tiny_gpt2, tiny_llama, tmp_path):
    for base in (tiny_gpt2[0], tiny_llama[0]):  # learned positions (an IndexError before) and RoPE (silent)
        out = tmp_path / base.name
        with pytest.raises(
            TrainOptionError,
            match=r"^training option max_length: 512 is longer than the model's "
            r"context of 128 tokens .*use at most 128",
        ) as info:
            train(str(base), make_records(), None, out, max_length=512, **TINY)
        assert info.value.field == "max_length"
        assert not out.exists(), "refused before anything was written"


def test_default_max_length_is_capped_at_the_context(tiny_gpt2, tmp_path):
    run = train(str(tiny_gpt2[0]), make_records(long=True), None, tmp_path / "out", **TINY)
    m = run.manifest
    assert run.completed and m["steps"] == 3 and m["context_length"] == 128
    assert m["options"]["max_length"] == 128 and m["identity"]["options"]["max_length"] == 1024
    assert m["filter"]["truncated_prompts"] == 1


def test_cli_names_the_option_and_the_limit(tiny_gpt2, tmp_path, capsys):
    data = write_qa(tmp_path / "qa.json", 8)
    rc = main(
        [
            "finetune",
            "--base",
            str(tiny_gpt2[0]),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--max-steps",
            "1",
            "--max-length",
            "512",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "max_length: 512 is longer than the model's context of 128 tokens" in err
    assert "Traceback" not in err


def test_evaluate_max_length(tiny_gpt2, tmp_path):
    base = str(tiny_gpt2[0])
    recs = make_records(4, long=True)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        evaluate(base, recs, max_length=0, progress=False)
    with pytest.raises(ValueError, match=r"max_length=512 is longer than the model's context of 128 tokens"):
        evaluate(base, recs, max_length=512, progress=False)
    res = evaluate(base, recs, progress=False)  # default: the context, long prompts lose tokens from the left
    assert res.metadata["max_length"] == 128 and res.to_pandas()["truncated"].sum() == 1


# -- signals ---------------------------------------------------------------------------------------------
def test_an_answer_longer_than_max_length_names_its_question(tiny_gpt2):
    """Training data whose answer alone overran max_length said only 'the continuation alone (9 tokens) does
    not fit max_length=4', with no word of which question; evaluation named it, training did not."""
    from transformers import AutoTokenizer

    from specprobe.finetune.prompts import PromptFormat
    from specprobe.finetune.train_examples import build_examples

    tok = AutoTokenizer.from_pretrained(tiny_gpt2[0])
    options = ("a short one", "a much longer answer option with many words")
    long = QARecord("q-long", "Which?", options, options[1], ("X",))
    fmt = PromptFormat(continuation="text")
    with pytest.raises(ValueError, match=r"^question 'q-long': the continuation alone \(\d+ tokens\) does not fit"):
        build_examples(tok, [long], fmt, max_length=4, append_eos=True)


def test_sigterm_checkpoints_then_raises(tiny_llama, tmp_path):
    before = signal.getsignal(signal.SIGTERM)

    def stop(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted) as info:
        train(
            str(tiny_llama[0]), make_records(), None, out, on_step=stop, **{**TINY, "max_steps": 5, "save_every": 100}
        )
    stop_ = info.value
    assert isinstance(stop_, KeyboardInterrupt) and not isinstance(stop_, Exception)
    assert (stop_.signum, stop_.signal_name, stop_.exit_code) == (signal.SIGTERM, "SIGTERM", 143)
    assert (stop_.step, stop_.total_steps, stop_.out, stop_.completed) == (2, 5, out, False)
    assert stop_.checkpoint == out / "checkpoints" / "step-00000002" and stop_.checkpoint.is_dir()
    assert str(stop_) == f"stopped at step 2 of 5 after SIGTERM; checkpoint in {out}; rerun the same command to resume"
    assert not (out / "manifest.json").exists()
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers are put back"


def test_a_second_signal_stops_at_once(tiny_llama, tmp_path):
    def twice(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted) as info:
        train(str(tiny_llama[0]), make_records(), None, out, on_step=twice, **{**TINY, "max_steps": 6})
    # step 3 was not checkpointed: a rerun resumes from step 2
    assert (info.value.step, info.value.exit_code) == (2, 130)
    assert info.value.checkpoint == out / "checkpoints" / "step-00000002"


def test_signal_before_training_raises_at_once(tiny_llama, tmp_path, monkeypatch):
    def load(self):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(_Trainer, "load", load)
    with pytest.raises(TrainingInterrupted) as info:
        train(str(tiny_llama[0]), make_records(), None, tmp_path / "out", **TINY)
    assert info.value.step == 0 and info.value.checkpoint is None and info.value.exit_code == 143
    assert "before any checkpoint was saved" in str(info.value)


def test_signal_while_writing_the_adapter_finishes_it_first(tiny_llama, tmp_path, monkeypatch):
    finish = _Trainer.finish

    def finish_with_a_signal(self, wall):
        os.kill(os.getpid(), signal.SIGTERM)
        return finish(self, wall)

    monkeypatch.setattr(_Trainer, "finish", finish_with_a_signal)
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted) as info:
        train(str(tiny_llama[0]), make_records(), None, out, **TINY)
    assert info.value.completed and info.value.step == 3 and "is complete" in str(info.value)
    assert (out / "manifest.json").exists() and not (out / FINISHING).exists()
    monkeypatch.setattr(_Trainer, "finish", finish)
    assert train(str(tiny_llama[0]), make_records(), None, out, **TINY).completed  # done: nothing to do


def test_a_run_killed_while_writing_its_adapter_is_trained_again(tiny_llama, tmp_path):
    """No checkpoint left (save_every past the end): the marker tells the rerun the files are its own."""
    base, recs, out = str(tiny_llama[0]), make_records(), tmp_path / "out"
    opts = {**TINY, "save_every": 100}
    first = train(base, recs, None, out, **opts)
    good = sha256(out / "adapter_model.safetensors")
    (out / "manifest.json").unlink()  # as a SIGKILL between the adapter and the manifest leaves it
    (out / FINISHING).write_text(json.dumps({"identity_hash": first.manifest["identity_hash"]}))
    again = train(base, recs, None, out, **opts)
    assert again.completed and sha256(out / "adapter_model.safetensors") == good and not (out / FINISHING).exists()
    (out / "manifest.json").unlink()
    (out / FINISHING).write_text(json.dumps({"identity_hash": "another run"}))
    with pytest.raises(FileExistsError, match="did not write"):
        train(base, recs, None, out, **opts)


# -- the output lock -------------------------------------------------------------------------------------
def test_second_run_into_one_output_is_refused(tiny_llama, tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_in_subprocess(out)
    try:
        with pytest.raises(OutputLockedError, match=rf"PID {holder.pid}\b") as info:
            train(str(tiny_llama[0]), make_records(), None, out, **TINY)
        assert info.value.pid == holder.pid
        data = write_qa(tmp_path / "qa.json", 8)
        rc = main(
            [
                "finetune",
                "--base",
                str(tiny_llama[0]),
                "--data",
                str(data),
                "--out",
                str(out),
                "--max-steps",
                "1",
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert rc != 0 and f"PID {holder.pid}" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    # a stale lock (its holder SIGKILLed) is taken over, and the lock files do not count as content
    run = train(str(tiny_llama[0]), make_records(), None, out, **TINY)
    assert run.completed and run.manifest["steps"] == 3


# -- SIGTERM / SIGINT on the CLI, then a rerun: the same adapter, bit for bit ------------------------------
STEPS = 40


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "specprobe.app.cli", "finetune", *args]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cli_run(tiny_llama, tmp_path_factory):
    """The CLI arguments of a small run (a checkpoint every step, dropout on) and its uninterrupted adapter."""
    root = tmp_path_factory.mktemp("signals")
    data = write_qa(root / "qa.json", 24)
    args = [
        "--base",
        str(tiny_llama[0]),
        "--data",
        str(data),
        "--max-steps",
        str(STEPS),
        "--batch-size",
        "2",
        "--save-every",
        "1",
        "--dropout",
        "0.1",
        "--no-progress",
    ]
    full = root / "full"
    subprocess.run(_cli(*args, "--out", str(full)), env=_env(), cwd=REPO, check=True, capture_output=True)
    return args, full


def _first_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    ckdir = out / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ckdir.exists():
            steps = [int(p.name.split("-")[1]) for p in ckdir.iterdir() if p.name.startswith("step-")]
            if steps:
                return max(steps)
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint appeared (exit code {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_signal_then_rerun_gives_the_same_adapter(cli_run, tmp_path, sig):
    args, full = cli_run
    out = tmp_path / "out"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            _cli(*args, "--out", str(out)), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
        )
        seen = _first_checkpoint(out, proc)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    stderr = err_path.read_text()
    assert rc == 128 + sig, stderr[-3000:]
    assert not (out / "manifest.json").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    stopped = steps[-1]
    assert seen <= stopped < STEPS
    name = signal.Signals(sig).name
    line = f"stopped at step {stopped} of {STEPS} after {name}; checkpoint in {out}; rerun the same command to resume"
    assert stderr.strip().splitlines()[-1] == line and "Traceback" not in stderr
    res = subprocess.run(_cli(*args, "--out", str(out)), env=_env(), cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["steps"] == STEPS and m["resumed_from"] == [stopped]
    assert sha256(out / "adapter_model.safetensors") == sha256(full / "adapter_model.safetensors")
