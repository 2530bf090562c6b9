"""LoRA training: targets per architecture, manifest, output-directory rules, Ctrl-C/SIGKILL resume, 2-process DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specprobe.finetune.lora_targets import find_lora_targets
from specprobe.finetune.train_examples import group_indices
from specprobe.finetune.train_options import TrainOptions
from specprobe.finetune.train_signals import TrainingInterrupted
from specprobe.finetune.training import train
from specprobe.terms.datasets import DataError, QARecord
from tests.interrupts import sigint_at

OPTIONS = ("aspirin", "heparin", "insulin", "rest")
REPO = Path(__file__).resolve().parents[1]


def make_records(n: int = 16) -> list[QARecord]:
    return [
        QARecord(
            f"q{i}",
            f"Which drug helps patient {i} with {'chest' if i % 2 else 'head'} pain?",
            OPTIONS,
            OPTIONS[i % 4],
            ("Cardiology" if i % 2 else "Neurology",),
        )
        for i in range(n)
    ]


def write_qa(path: Path, n: int = 16) -> Path:
    path.write_text(
        json.dumps(
            [
                {"Question": r.question, "Options": list(r.options), "Answer": r.answer, "Specialty": r.specialties[0]}
                for r in make_records(n)
            ]
        )
    )
    return path


def load_adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


FAST = dict(max_steps=6, batch_size=2, save_every=2, progress=False)


class Killed(Exception):
    """A hard stop (SIGKILL) at a training step: unlike Ctrl-C, no checkpoint is written on the way out."""


def kill_at(step: int):
    """An `on_step` callback that stops training with `Killed` at `step`."""

    def on_step(at, loss):
        if at == step:
            raise Killed

    return on_step


def test_lora_targets_found_per_architecture(tiny_llama, tiny_gpt2):
    from transformers import AutoModelForCausalLM

    assert find_lora_targets(AutoModelForCausalLM.from_pretrained(tiny_llama[0])) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    assert find_lora_targets(AutoModelForCausalLM.from_pretrained(tiny_gpt2[0])) == ["c_attn", "c_fc", "c_proj"]


def test_data_order_is_a_function_of_seed_and_epoch():
    a = group_indices(10, 0, 0, 1, 4)
    assert a == group_indices(10, 0, 0, 1, 4) and len(a) == 4
    epoch = sum((group_indices(10, 0, 0, k, 4) for k in range(3)), [])
    assert set(epoch) == set(range(10)) and len(epoch) == 12  # wrapped to full groups
    assert group_indices(10, 0, 1, 0, 4) != group_indices(10, 0, 0, 0, 4) or group_indices(10, 1, 0, 0, 4) != a


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown training option 'learning_rat'"):
        TrainOptions.from_kwargs({"learning_rat": 1e-3})
    with pytest.raises(TypeError, match="unknown training option"):  # still a TypeError, as before
        TrainOptions.from_kwargs({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="rank"):
        TrainOptions(rank=0)
    with pytest.raises(ValueError, match="scheduler"):
        TrainOptions(scheduler="step")


def test_train_writes_adapter_and_manifest(tiny_llama, tmp_path):
    from specprobe.core.models import ModelPair

    base, _ = tiny_llama
    data = write_qa(tmp_path / "qa.json")
    run = train(str(base), data, "Cardiology", tmp_path / "out", **FAST)
    assert run.completed
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["steps"] == 6 and len(m["loss_curve"]) == 6
    assert m["filter"]["specialty"] == ["Cardiology"] and m["filter"]["n_examples"] == 8
    assert m["data"]["sha256"] and m["base_weights_sha256"] and m["seed"] == 0
    assert m["options"]["target_modules"] == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    assert {"torch", "transformers", "peft", "accelerate"} <= set(m["versions"])
    assert m["wall_time_s"] > 0 and not (tmp_path / "out" / "checkpoints").exists()
    assert (tmp_path / "out" / "adapter_config.json").exists()
    pair = ModelPair.load(base, tmp_path / "out")  # a standard PEFT adapter directory
    assert pair.variants == ("base", "tuned")
    # the same call again: nothing to do, same manifest
    again = train(str(base), data, "Cardiology", tmp_path / "out", **FAST)
    assert again.manifest["identity_hash"] == m["identity_hash"]


def test_manifest_names_the_specialty_as_the_data_spells_it(tiny_llama, tmp_path):
    """A specialty given as "cardiology" selects the data's "Cardiology" questions; the manifest must say
    "Cardiology" (the accuracy matrix matches the adapter's own specialty by that name: it silently
    left the adapter out of the own-vs-others contrast)."""
    base = str(tiny_llama[0])
    recs = make_records()
    run = train(base, recs, " cardiology", tmp_path / "out", max_steps=1, batch_size=2, progress=False)
    assert run.manifest["specialty"] == ["Cardiology"] == run.manifest["filter"]["specialty"]
    assert run.manifest["filter"]["n_examples"] == 8
    again = train(base, recs, "Cardiology", tmp_path / "out", max_steps=1, batch_size=2, progress=False)
    assert again.manifest["identity_hash"] == run.manifest["identity_hash"]  # the same run: nothing to do


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_training_labels_are_the_answer_tokens_evaluation_scores(tiny_dir, arch):
    """Loss falls on exactly the tokens evaluation scores for the answer option (same ids, same BOS,
    same prompt/answer boundary), plus the EOS; prompt tokens and padding are -100."""
    from conftest import _build

    from specprobe.core.models import load_tokenizer
    from specprobe.finetune.evaluation import build_option_items
    from specprobe.finetune.prompts import PromptFormat
    from specprobe.finetune.train_examples import build_examples, collate

    tok = load_tokenizer(str(_build(tiny_dir, arch)[0]))
    recs = make_records(4)
    for continuation in ("letter", "text"):
        fmt = PromptFormat(continuation=continuation)
        examples, _ = build_examples(tok, recs, fmt, 128, True)
        items, _ = build_option_items(tok, recs, fmt, 128)
        ids, mask, labels = collate(examples, 0)
        for r, (rec, ex) in enumerate(zip(recs, examples)):
            scored = items[r * len(rec.options) + rec.answer_index]
            assert ex.ids == (*scored.ids, tok.eos_token_id)
            assert ex.positions == (*scored.positions, len(scored.ids))
            trained = [(p, t) for p, t in enumerate(labels[r].tolist()) if t != -100]
            assert trained == [(p, ex.ids[p]) for p in ex.positions]
            assert mask[r].sum() == len(ex.ids) and not mask[r, len(ex.ids) :].any()  # right padding


@pytest.mark.parametrize("template", ["Question: {question}\n{options}\nAnswer:", "{options}\nQ: {question}\nAnswer:"])
def test_a_truncated_prompt_records_what_of_its_question_was_cut(tiny_llama, template):
    """The manifest's 'filter.truncated_questions' says which characters of each cut question (its context
    text, as seen/unseen reads it) fell out of the training window: what is left is what the tokens hold."""
    from specprobe.core.models import load_tokenizer
    from specprobe.finetune.prompts import PromptFormat
    from specprobe.finetune.train_examples import build_examples
    from specprobe.probe.training_data import kept_text

    tok, fmt = load_tokenizer(str(tiny_llama[0])), PromptFormat(template=template)
    filler = " ".join(["the patient was then observed closely"] * 6)
    rec = QARecord("x", f"marker pain. {filler}. Which drug?", ("aspirin daily", "bed rest"), "bed rest", ("C",))
    for max_length in (20, 40, 64, 120):
        examples, truncated = build_examples(tok, [rec], fmt, max_length, True)
        window = tok.decode(list(examples[0].ids), skip_special_tokens=True)
        kept = kept_text(rec, truncated[0]["context_cut"])
        assert letters(kept) in letters(window) and letters(window).startswith(letters(kept)[:6]), (kept, window)
        assert "marker" not in kept and letters(kept)


def letters(text: str) -> str:
    """`text` without option labels ("A.") and anything but word characters (the tiny tokenizer drops newlines)."""
    import re

    return re.sub(r"\W", "", re.sub(r"\b[A-Z]\.", "", text))


def test_loss_is_per_answer_token_over_the_whole_step(tiny_llama, tmp_path):
    """Answers of different lengths (text continuations): the step's loss is the mean over all its answer
    tokens, so batch 4 == batch 1 x grad_accum 4 == batch 2 x grad_accum 2 (not a mean of per-batch means)."""
    import torch

    from specprobe.core.models import load_tokenizer
    from specprobe.finetune.prompts import PromptFormat
    from specprobe.finetune.train_examples import build_examples

    base = str(tiny_llama[0])
    options = ("aspirin", "low molecular weight heparin infusion", "insulin", "rest and fluids for a week")
    recs = [QARecord(r.id, r.question, options, options[i % 4], r.specialties) for i, r in enumerate(make_records(8))]
    common = dict(max_steps=2, dropout=0.0, continuation="text", warmup_ratio=0.0, learning_rate=1e-2, progress=False)
    runs = [train(base, recs, None, tmp_path / f"b{b}", batch_size=b, grad_accum=4 // b, **common) for b in (4, 1, 2)]
    for run in runs[1:]:
        assert max_diff(load_adapter(runs[0].path), load_adapter(run.path)) < 1e-5
        for x, y in zip(run.manifest["loss_curve"], runs[0].manifest["loss_curve"]):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)
    # step 1 (LoRA B is zero: the base model) by hand: summed token losses / number of answer tokens
    from transformers import AutoModelForCausalLM

    examples, _ = build_examples(load_tokenizer(base), recs, PromptFormat(continuation="text"), 128, True)
    group = group_indices(len(examples), 0, 0, 0, 4)
    assert len({len(examples[i].positions) for i in group}) > 1  # uneven answers, or the test shows nothing
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    total = n = 0
    for i in group:
        ids = examples[i].ids
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        total -= sum(logp[p - 1, ids[p]].item() for p in examples[i].positions)
        n += len(examples[i].positions)
    assert runs[0].manifest["loss_curve"][0]["loss"] == pytest.approx(total / n, rel=1e-5)


def test_unknown_specialty_lists_available(tiny_llama, tmp_path):
    with pytest.raises(
        DataError, match=r"no questions for specialty 'Dermatology'; available: Cardiology \(8\), Neurology \(8\)"
    ):
        train(str(tiny_llama[0]), make_records(), "Dermatology", tmp_path / "out", **FAST)


def test_a_question_given_twice_with_different_answers_is_refused(tiny_llama, tmp_path):
    """A raw QA file listing one question twice with different gold answers trained on both answers
    silently (only the experiment's split refused it); training now refuses it the same way, naming both rows.
    A repeat with the same answer still trains."""
    base, recs = str(tiny_llama[0]), make_records()
    q0 = recs[0]  # Neurology; the repeat is listed under another specialty and the run trains on all
    conflict = [*recs, QARecord("q0-again", q0.question, q0.options, "rest", ("Cardiology",))]
    message = (
        f"data: rows 'q0' and 'q0-again' give the question {q0.question!r} different answers, 'aspirin' and 'rest'"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        train(base, conflict, None, tmp_path / "out", max_steps=1, progress=False)
    assert not (tmp_path / "out").exists()
    same = [*recs, QARecord("q0-again", q0.question, q0.options, q0.answer, ("Cardiology",))]
    run = train(base, same, None, tmp_path / "out", max_steps=1, batch_size=2, progress=False)
    assert run.manifest["filter"]["n_examples"] == 17


def test_output_directory_with_a_different_run_is_refused(tiny_llama, tmp_path):
    base = str(tiny_llama[0])
    recs = make_records()
    out = tmp_path / "out"
    train(base, recs, "Cardiology", out, **FAST)
    with pytest.raises(FileExistsError, match=r"different finished run.*learning_rate"):
        train(base, recs, "Cardiology", out, learning_rate=1e-3, **FAST)
    with pytest.raises(FileExistsError, match="specialty"):
        train(base, recs, "Neurology", out, **FAST)
    run = train(base, recs, "Neurology", out, overwrite=True, **FAST)
    assert run.manifest["specialty"] == ["Neurology"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        train(base, recs, "Neurology", other, **FAST)


def test_a_finished_run_rerun_with_other_snapshots_or_tracker_warns(tiny_llama, tmp_path, caplog):
    """A finished run rerun with save_steps (or report_to) it did not have was returned as it is with an
    info line only: the snapshots (the tracker's logs) asked for were silently missing. Same run (no weight
    changes), so it is still returned, with a warning naming what is missing and what to do."""
    from specprobe.finetune.run_folder import unmet_file_options

    base, recs, out = str(tiny_llama[0]), make_records(), tmp_path / "out"
    first = train(base, recs, None, out, max_steps=2, batch_size=2, save_steps=[2], progress=False)
    with caplog.at_level("WARNING", logger="specprobe.finetune"):
        again = train(base, recs, None, out, max_steps=2, batch_size=2, save_steps=[1, 2], progress=False)
    assert again.manifest == first.manifest and not (out / "snapshots" / "step-00000001").exists()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1, warned
    assert "save_steps [1, 2] (it kept snapshots after [2], not after [1])" in warned[0]
    assert "take effect only in a new run; train into a new folder, or pass overwrite=True" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="specprobe.finetune"):  # asking for less than is there: no warning
        train(base, recs, None, out, max_steps=2, batch_size=2, progress=False)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    manifest = {"options": {"save_steps": None, "report_to": "none"}}
    assert unmet_file_options(manifest, None, "tensorboard") == ["report_to 'tensorboard' (it logged to 'none')"]
    assert unmet_file_options({"options": {"report_to": "wandb"}}, None, "wandb") == []


def test_a_finished_run_whose_adapter_changed_is_not_adopted(tiny_llama, tmp_path):
    """A rerun returns a finished run as done on its manifest; an adapter file replaced or deleted since
    (by hand, or by another tool writing into the folder) was adopted as this run's result."""
    base, recs, out = str(tiny_llama[0]), make_records(), tmp_path / "out"
    first = train(base, recs, "Cardiology", out, **FAST)
    assert set(first.manifest["adapter_files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert train(base, recs, "Cardiology", out, **FAST).manifest == first.manifest  # unchanged: adopted
    with open(out / "adapter_model.safetensors", "r+b") as fh:  # one byte of the weights changed
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(FileExistsError, match=r"changed or are missing since \(adapter_model\.safetensors\)"):
        train(base, recs, "Cardiology", out, **FAST)
    (out / "adapter_config.json").unlink()
    with pytest.raises(
        FileExistsError, match=r"\(adapter_config\.json, adapter_model\.safetensors\); pass --overwrite"
    ):
        train(base, recs, "Cardiology", out, **FAST)
    again = train(base, recs, "Cardiology", out, overwrite=True, **FAST)
    assert again.manifest["adapter_files"] == first.manifest["adapter_files"]  # the same run, trained again


def test_overwrite_keeps_the_finished_adapter_when_the_new_run_cannot_start(tiny_llama, tmp_path):
    """`overwrite` removed the finished adapter before the new run had loaded: a run that then failed (a
    target module the model does not have) left the folder empty."""
    base, recs, out = str(tiny_llama[0]), make_records(), tmp_path / "out"
    first = train(base, recs, "Cardiology", out, **FAST)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    with pytest.raises(ValueError, match="cannot put LoRA on target modules"):
        train(base, recs, "Neurology", out, overwrite=True, target_modules=["no_such_proj"], **FAST)
    assert {n: (out / n).read_bytes() for n in files} == files
    # a save_steps past the run's end was refused only once the old run had been removed
    with pytest.raises(ValueError, match="save_steps: step 7 is after the run's last step"):
        train(base, recs, "Neurology", out, overwrite=True, save_steps=[7], **FAST)
    assert {n: (out / n).read_bytes() for n in files} == files
    assert train(base, recs, "Cardiology", out, **FAST).manifest == first.manifest  # still this finished run


def test_an_overwrite_stopped_on_the_way_keeps_the_finished_run_it_was_to_replace(tiny_llama, tmp_path):
    """`overwrite` removed the finished adapter as the new run started: a kill, crash or Ctrl-C of that run
    lost it. It is kept in .previous-run until the new run finishes, which resumes as any other."""
    from specprobe.finetune.run_folder import PREVIOUS

    base, recs, out = str(tiny_llama[0]), make_records(), tmp_path / "out"
    train(base, recs, "Cardiology", out, **FAST)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    opts = {**FAST, "max_steps": 4, "save_every": 2}
    with pytest.raises(Killed):
        train(base, recs, "Neurology", out, overwrite=True, on_step=kill_at(3), **opts)
    assert {n: (out / PREVIOUS / n).read_bytes() for n in files} == files
    with pytest.raises(Killed):  # an overwrite again, of an unfinished run: the finished one stays kept
        train(base, recs, "Neurology", out, overwrite=True, on_step=kill_at(1), **opts)
    assert {n: (out / PREVIOUS / n).read_bytes() for n in files} == files
    done = train(base, recs, "Neurology", out, **opts)  # resumes or starts the new run, and finishes it
    assert done.manifest["specialty"] == ["Neurology"] and not (out / PREVIOUS).exists()


def test_a_relative_and_an_absolute_path_to_the_base_are_the_same_run(tiny_llama, tmp_path, monkeypatch):
    """The run identity held the base path as typed, so a rerun with `--base model` after `--base
    /abs/model` was refused as a different finished run; the same folder with the same weights is one base.
    Another folder with other weights stays another run."""
    base, recs, out = tiny_llama[0], make_records(), tmp_path / "out"
    first = train(str(base.resolve()), recs, "Cardiology", out, **FAST)
    monkeypatch.chdir(base.parent)
    again = train(base.name, recs, "Cardiology", out, **FAST)
    assert again.manifest == first.manifest
    from specprobe.testing.tiny_models import build_tiny_model

    other = build_tiny_model("llama", tmp_path / "llama-base", seed=1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match="different finished run"):
        train(other.name, recs, "Cardiology", out, **FAST)


def test_ctrl_c_leaves_a_checkpoint_and_resume_matches(tiny_llama, tmp_path):
    """SIGINT mid-run: checkpoint at the step boundary, then TrainingInterrupted; re-running ends with
    identical weights (dropout on)."""
    base = str(tiny_llama[0])
    recs = make_records()
    opts = dict(max_steps=8, batch_size=2, save_every=100, dropout=0.1, grad_accum=2, progress=False)
    full = train(base, recs, None, tmp_path / "full", **opts)

    interrupt = sigint_at(3)

    with pytest.raises(TrainingInterrupted) as info:  # never a silently incomplete TrainRun
        train(base, recs, None, tmp_path / "part", on_step=interrupt, **opts)
    stop = info.value
    assert stop.signum == signal.SIGINT and stop.exit_code == 130 and (stop.step, stop.total_steps) == (3, 8)
    assert stop.checkpoint == tmp_path / "part" / "checkpoints" / "step-00000003" and not stop.completed
    assert (tmp_path / "part" / "checkpoints" / "step-00000003" / "optimizer.pt").exists()
    assert not (tmp_path / "part" / "manifest.json").exists()
    # a different configuration must not resume these checkpoints
    with pytest.raises(FileExistsError, match="checkpoints of a different run"):
        train(base, recs, None, tmp_path / "part", **{**opts, "seed": 1})
    resumed = train(base, recs, None, tmp_path / "part", **opts)
    assert resumed.completed and resumed.manifest["steps"] == full.manifest["steps"] == 8
    assert resumed.manifest["resumed_from"] == [3]
    assert max_diff(load_adapter(tmp_path / "full"), load_adapter(tmp_path / "part")) == 0.0
    assert [c["loss"] for c in resumed.manifest["loss_curve"]] == [c["loss"] for c in full.manifest["loss_curve"]]


def test_turning_on_gradient_checkpointing_resumes_the_run(tiny_llama, tmp_path):
    """Gradient checkpointing only saves memory (the same weights, bit for bit): a run stopped (or out of
    memory) and rerun with it resumes, where it was refused as 'checkpoints of a different run'. A run
    recorded before, whose identity names the option, is still the same run."""
    from specprobe.finetune.run_identity import identity_hash

    base, recs = str(tiny_llama[0]), make_records()
    opts = dict(max_steps=6, batch_size=2, save_every=100, dropout=0.1, progress=False)
    full = train(base, recs, None, tmp_path / "full", **opts)

    interrupt = sigint_at(3)

    with pytest.raises(TrainingInterrupted):
        train(base, recs, None, tmp_path / "part", on_step=interrupt, **opts)
    resumed = train(base, recs, None, tmp_path / "part", gradient_checkpointing=True, **opts)
    assert resumed.manifest["resumed_from"] == [3] and resumed.manifest["options"]["gradient_checkpointing"]
    assert max_diff(load_adapter(tmp_path / "full"), load_adapter(tmp_path / "part")) == 0.0
    assert resumed.manifest["loss_curve"] == full.manifest["loss_curve"]
    # a manifest written when the identity named the option (and hashed it) is adopted, not refused
    path = tmp_path / "full" / "manifest.json"
    m = json.loads(path.read_text())
    m["identity"]["options"]["gradient_checkpointing"] = False
    m["identity_hash"] = identity_hash(m["identity"])
    path.write_text(json.dumps(m))
    assert train(base, recs, None, tmp_path / "full", gradient_checkpointing=True, **opts).manifest == m
    with pytest.raises(FileExistsError, match=r"different finished run \(options.seed: 0 there vs 1 now\)"):
        train(base, recs, None, tmp_path / "full", **{**opts, "seed": 1})


def fp16_on_cpu(monkeypatch) -> list:
    """Train with precision fp16 on the CPU as on a GPU: fp16 base weights, fp16 autocast and accelerate's
    GradScaler (accelerate makes none on a CPU: one is put in its place). Returns the trainers started."""
    import torch

    from specprobe.finetune import training

    started, start = [], training._Trainer.start

    def start_with_a_scaler(self):
        start(self)
        self.accelerator.scaler = torch.amp.GradScaler("cpu")  # as on CUDA: 65536 to start, halved on overflow
        self.accelerator.native_amp = True
        started.append(self)

    monkeypatch.setattr(training, "resolve_precision", lambda precision, cuda: "fp16")
    monkeypatch.setattr(training._Trainer, "start", start_with_a_scaler)
    return started


def test_fp16_resume_keeps_the_loss_scale(tiny_llama, tmp_path, monkeypatch):
    """fp16 (a GPU without bf16): the GradScaler's scale was not in the checkpoint, so a resumed run
    started again at 65536, overflowed and skipped an optimizer step the uninterrupted run took."""
    started = fp16_on_cpu(monkeypatch)
    base, recs = str(tiny_llama[0]), make_records()
    opts = dict(max_steps=6, batch_size=2, save_every=100, dropout=0.1, progress=False)
    full = train(base, recs, None, tmp_path / "full", **opts)
    scale = started[-1].accelerator.scaler.get_scale()
    assert scale < 65536  # it backed off at least once, or the test shows nothing

    interrupt = sigint_at(3)

    with pytest.raises(TrainingInterrupted):
        train(base, recs, None, tmp_path / "part", on_step=interrupt, **opts)
    assert (tmp_path / "part" / "checkpoints" / "step-00000003" / "scaler.pt").exists()
    resumed = train(base, recs, None, tmp_path / "part", **opts)
    assert resumed.manifest["resumed_from"] == [3] and started[-1].accelerator.scaler.get_scale() == scale
    assert max_diff(load_adapter(tmp_path / "full"), load_adapter(tmp_path / "part")) == 0.0
    assert resumed.manifest["loss_curve"] == full.manifest["loss_curve"]


def test_fp16_skipped_steps_do_not_advance_the_schedule(tiny_llama, tmp_path, monkeypatch):
    """fp16: the GradScaler skips a step whose gradients overflow (65536 to start overflows at once), but
    the schedule advanced anyway: 6 scheduler steps for 5 updates, so every update after the skip took the
    next step's (lower) learning rate. Now the schedule follows the updates: a skipped step's learning rate
    is the next one's too."""
    started = fp16_on_cpu(monkeypatch)
    run = train(
        str(tiny_llama[0]), make_records(), None, tmp_path / "a",
        max_steps=6, batch_size=2, scheduler="linear", warmup_ratio=0.0, progress=False,
    )  # fmt: skip
    trainer = started[-1]
    updates = {int(s["step"]) for s in trainer.optimizer.optimizer.state.values()}
    assert len(updates) == 1 and (n_updates := updates.pop()) < 6  # a step was skipped, or the test shows nothing
    assert trainer.scheduler.last_epoch == n_updates
    lrs = [c["lr"] for c in run.manifest["loss_curve"]]
    assert len(set(lrs)) == n_updates and lrs[0] == lrs[1] == 2e-4  # the first step overflowed


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "specprobe.app.cli", "finetune", *args]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_and_rerun_ends_like_an_uninterrupted_run(tiny_llama, tmp_path):
    base = str(tiny_llama[0])
    data = write_qa(tmp_path / "qa.json", 24)
    args = [
        "--base",
        base,
        "--data",
        str(data),
        "--max-steps",
        "40",
        "--batch-size",
        "2",
        "--save-every",
        "3",
        "--no-progress",
    ]
    full = tmp_path / "full"
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(*args, "--out", str(killed)), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckdir = killed / "checkpoints"
    deadline = time.time() + 50
    while time.time() < deadline and proc.poll() is None:
        if ckdir.exists() and any(p.name.startswith("step-") for p in ckdir.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the run finished before it could be killed"
    steps = sorted(int(p.name.split("-")[1]) for p in ckdir.iterdir() if p.name.startswith("step-"))
    assert steps and steps[-1] < 40
    subprocess.run(_cli(*args, "--out", str(killed)), env=_env(), cwd=REPO, check=True, capture_output=True)
    subprocess.run(_cli(*args, "--out", str(full)), env=_env(), cwd=REPO, check=True, capture_output=True)
    a = json.loads((killed / "manifest.json").read_text())
    b = json.loads((full / "manifest.json").read_text())
    assert a["steps"] == b["steps"] == 40 and a["resumed_from"] == [steps[-1]]
    assert max_diff(load_adapter(full), load_adapter(killed)) == 0.0


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_match_one_process(tiny_llama, tmp_path):
    """2 CPU processes x batch 1 (accelerate launch, DDP over gloo) == 1 process x batch 2."""
    base = str(tiny_llama[0])
    data = write_qa(tmp_path / "qa.json")
    common = [
        "--base",
        base,
        "--data",
        str(data),
        "--specialty",
        "Cardiology",
        "--max-steps",
        "4",
        "--dropout",
        "0",
        "--no-progress",
        "--save-every",
        "2",
    ]
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "specprobe.app.cli",
        "finetune",
    ]
    res = subprocess.run(
        launcher + common + ["--batch-size", "1", "--out", str(tmp_path / "ddp")],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert m["world_size"] == 2 and "MULTI_CPU" in m["distributed_type"] and m["examples_per_step"] == 2
    single = train(
        base, data, "Cardiology", tmp_path / "single", max_steps=4, batch_size=2, dropout=0.0, progress=False
    )
    assert max_diff(load_adapter(tmp_path / "ddp"), load_adapter(tmp_path / "single")) < 1e-6
    for x, y in zip(m["loss_curve"], single.manifest["loss_curve"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)


def test_bf16_recipe_runs_on_cpu(tiny_llama, tmp_path):
    """The GPU recipe (bf16 base weights, autocast, float32 adapter weights) runs end to end on a CPU.
    fp16 stays GPU-only, with a clear error."""
    import math

    import torch

    from specprobe.finetune.evaluation import evaluate

    base, _ = tiny_llama
    data = write_qa(tmp_path / "qa.json")
    run = train(str(base), data, "Cardiology", tmp_path / "bf16", **FAST, precision="bf16")
    m = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert run.completed and m["options"]["precision"] == "bf16" and m["steps"] == 6
    assert all(math.isfinite(p["loss"]) for p in m["loss_curve"])
    weights = load_adapter(tmp_path / "bf16")
    assert {w.dtype for w in weights.values()} == {torch.float32}  # peft keeps trainable LoRA weights in fp32
    assert any(k.endswith("lora_B.weight") and w.abs().max() > 0 for k, w in weights.items())  # it trained
    res = evaluate(str(base), data, tmp_path / "bf16", dtype="bfloat16", progress=False)
    assert res.metadata["dtype"] == "bfloat16" and len(res.to_pandas()) == 2 * 16
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        train(str(base), data, "Cardiology", tmp_path / "fp16", **FAST, precision="fp16")


def _fake_hub_cache(cache: Path, base: Path, repo: str = "specprobe-test/tiny", weights: bool = True) -> str:
    """A Hugging Face hub cache holding `base` as `repo` at one commit (refs/main), as a download leaves it."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for f in base.iterdir():
        if f.is_file() and (weights or f.suffix != ".safetensors"):
            shutil.copy(f, snap / f.name)
    return commit


def test_hub_base_identity_is_the_commit_known_before_the_weights_download(tiny_llama, tmp_path, monkeypatch):
    """A hub base's identity is its commit, not its weights hash: the hash is unknown until the weights are
    downloaded, so a first run and its resume (weights now cached) had different identities and the
    resume was refused as a different run."""
    from huggingface_hub import constants

    from specprobe.core.models import weights_fingerprint as base_fingerprint
    from specprobe.finetune.run_identity import base_identity

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    commit = _fake_hub_cache(tmp_path / "hub", tiny_llama[0], weights=False)  # config fetched, weights not yet
    before = base_identity("specprobe-test/tiny")
    assert base_fingerprint("specprobe-test/tiny") is None
    _fake_hub_cache(tmp_path / "hub", tiny_llama[0])  # the weights arrive
    assert base_fingerprint("specprobe-test/tiny") is not None  # what the identity held: it changed here
    assert base_identity("specprobe-test/tiny") == before == {"base_weights_sha256": None, "base_commit": commit}
    assert base_identity(str(tiny_llama[0])) == {"base_weights_sha256": base_fingerprint(str(tiny_llama[0]))}


def test_training_at_a_hub_revision_tokenizes_with_that_revisions_tokenizer(tmp_path, monkeypatch):
    """`revision` reached the weights and the config, but the tokenizer came from the default branch: at a
    revision with another vocabulary, the token ids did not fit the model's embedding."""
    import shutil

    from huggingface_hub import constants

    from specprobe.testing.tiny_models import build_tiny_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _fake_hub_cache(tmp_path / "hub", build_tiny_model("llama", tmp_path / "main", vocab_size=900))
    other = build_tiny_model("llama", tmp_path / "v2", vocab_size=300)
    root = tmp_path / "hub" / "models--specprobe-test--tiny"
    (root / "refs" / "v2").write_text("2" * 40)
    shutil.copytree(other, root / "snapshots" / ("2" * 40))
    data = write_qa(tmp_path / "qa.json")
    run = train("specprobe-test/tiny", data, "Cardiology", tmp_path / "out", revision="v2", **{**FAST, "max_steps": 2})
    assert run.manifest["base_commit"] == "2" * 40
    pinned = train(
        "specprobe-test/tiny@" + "2" * 40, data, "Cardiology", tmp_path / "pinned", **{**FAST, "max_steps": 2}
    )
    assert pinned.manifest["base_commit"] == "2" * 40 and pinned.manifest["base"] == "specprobe-test/tiny"


@pytest.mark.slow
def test_training_a_hub_id_records_commit_and_weights_and_reruns_as_the_same_run(tiny_llama, tmp_path):
    from specprobe.core.models import weights_fingerprint as base_fingerprint

    commit = _fake_hub_cache(tmp_path / "hub", tiny_llama[0])
    data = write_qa(tmp_path / "qa.json")
    args = ["--base", "specprobe-test/tiny", "--data", str(data), "--specialty", "Cardiology"]
    args += ["--max-steps", "2", "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "out")]
    env = {**_env(), "HF_HUB_CACHE": str(tmp_path / "hub")}
    subprocess.run(_cli(*args), env=env, cwd=REPO, check=True, capture_output=True)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["identity"]["base_commit"] == m["base_commit"] == commit
    assert m["identity"]["base_weights_sha256"] is None
    assert m["base_weights_sha256"] == base_fingerprint(str(tiny_llama[0]))  # read from the cache once loaded
    again = subprocess.run(_cli(*args), env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["identity_hash"] == m["identity_hash"]
