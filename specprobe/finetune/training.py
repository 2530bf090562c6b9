"""`train(base, data, specialty=..., out=...)`: LoRA supervised fine-tuning on one specialty's questions.

A plain, explicit torch loop driven by accelerate's `Accelerator`, so the same code runs on one CPU,
one GPU, or under `accelerate launch` (DDP; FSDP/DeepSpeed through an accelerate config).

Determinism and resumption
  * The data order is a function of (seed, epoch) only; an optimizer step k always sees the same
    examples (its "group"), whatever happened before.
  * Dropout randomness is re-seeded from (seed, step, process) at the start of every optimizer step,
    so no RNG state has to be saved and a resumed run draws exactly what an uninterrupted one draws.
  * Every `save_every` steps the adapter weights, optimizer and scheduler state and the loss curve
    are written to `out/checkpoints/.tmp-step-N` and then renamed to `out/checkpoints/step-N`: the
    rename is the commit, so a SIGKILL never leaves a half checkpoint.
  * SIGINT/SIGTERM (Ctrl-C, a cluster's pre-emption) stop training after the current step: a
    checkpoint is written, then `TrainingInterrupted` (a KeyboardInterrupt) is raised, so no caller
    takes a stopped run for a finished one. A second signal stops at once.
  * The output directory is locked for the whole call (`specprobe.utils.locks.output_lock`); a
    second run into it is refused with the holder's PID.
  * Running the same command again continues from the newest checkpoint, provided the run's identity
    (base weights, data hash, specialty filter, all result-affecting options, number of processes)
    is the same; a different run in the directory is refused unless `overwrite=True`.
  * On CPU a resumed run ends with bit-identical weights to an uninterrupted one (tested).

Loss: cross-entropy on the answer tokens only (the option continuation, plus EOS by default),
summed over the tokens of the whole optimizer step (all micro-batches, all processes) and divided by
their number, so 2 processes x batch b give the same update as 1 process x batch 2b. Every step has
the same number of examples: an epoch's last step is filled up with the first ones of that epoch's
order (`core.step_order.group_indices`), which are then trained on twice in that epoch.

fp16: a step whose gradients overflow is skipped by the GradScaler (no update), and the learning-rate
schedule does not advance on it either (it follows the updates made, as accelerate's own scheduler does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from specprobe.finetune.data import data_specialties, load_selected, specialty_counts
from specprobe.finetune.lora_targets import find_lora_targets, uses_conv1d
from specprobe.finetune.run_folder import (
    CHECKPOINTS,
    FINISHING,
    MANIFEST,
    TRAINER_STATE,
    adapter_digests,
    checkpoint_dirs,
    clear_owned,
    drop_previous,
    inspect_out,
    spelled_as_recorded,
    unmet_file_options,
)
from specprobe.finetune.run_identity import base_identity, identity_hash, is_this_run, run_identity
from specprobe.finetune.snapshots import check_save_steps, save_snapshot, snapshot_entries
from specprobe.finetune.trackers import StepTracker
from specprobe.finetune.train_examples import Example, build_examples, collate, group_indices, step_seed
from specprobe.finetune.train_options import TrainOptionError, TrainOptions, check_4bit, resolve_precision
from specprobe.finetune.train_signals import SignalGuard, TrainingInterrupted
from specprobe.terms.datasets import QARecord
from specprobe.utils.io import read_json, write_json
from specprobe.utils.provenance import library_versions, now_iso

log = logging.getLogger(__name__)


@dataclass
class TrainRun:
    """What `train` returns: the output directory and its manifest. `train` only returns finished runs
    (a stopped one raises `TrainingInterrupted`), so `completed` is always True. `reused`: `out` already
    held this run, finished, and it was returned as it was (nothing trained in this call)."""

    path: Path
    manifest: dict
    completed: bool = True
    reused: bool = False

    @property
    def adapter(self) -> Path:
        return self.path


# -- the trainer -----------------------------------------------------------------------------------------
EXTRA_VERSIONS = ("accelerate", "safetensors", "bitsandbytes")  # recorded beside `library_versions()`' own
SCALER = "scaler.pt"  # in a checkpoint of an fp16 run: the GradScaler's loss scale and growth tracker


@dataclass
class _Progress:
    """The loop state that a checkpoint saves and a resumed run restores (besides the weights)."""

    step: int = 0
    curve: list = field(default_factory=list)  # {"step", "epoch", "loss", "lr"} per optimizer step
    wall_before: float = 0.0  # training wall time of the earlier segments of a resumed run
    resumed_from: list = field(default_factory=list)  # the steps the run was resumed at


class _Trainer:
    """One `train` call as named steps, which `train` runs in this order:

    start (accelerator, precision) -> identify (data, max_length, run identity) -> [locked: the output
    lock] prepare_out (fresh, resume or done) -> load (model, LoRA, examples, optimizer) -> restore
    (a checkpoint, when resuming) -> loop (`optimizer_step`s, with a `checkpoint` every `save_every`
    steps; a signal: checkpoint, then `TrainingInterrupted`) -> finish (adapter, manifest).
    """

    def __init__(
        self,
        base: str,
        out: Path,
        opts: TrainOptions,
        *,
        progress: bool,
        revision: str | None,
        trust_remote_code: bool,
        on_step: Callable[[int, float], None] | None,
    ) -> None:
        self.base, self.out, self.opts = base, out, opts
        self.show_progress, self.revision, self.trust_remote_code = progress, revision, trust_remote_code
        self.on_step = on_step
        self.fmt = opts.prompt_format()
        self.t_start = time.time()
        self.progress = _Progress()
        self.guard: SignalGuard | None = None  # set by `train`
        self.total: int | None = None
        self.identity_hash: str | None = None

    # -- start, identity, output directory --------------------------------------------------------------
    def start(self) -> None:
        """The accelerator (one process, or `accelerate launch`: DDP, FSDP, DeepSpeed) and the precision."""
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        opts = self.opts
        cuda = torch.cuda.is_available()
        self.precision = resolve_precision(opts.precision, cuda)
        if opts.load_in_4bit:
            check_4bit(cuda)
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # accelerate keeps one process-wide state: a second train() in the same Python session with
            # another precision would be refused. A single process owns it, so start it afresh.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        self.tracker = StepTracker(opts.report_to, self.out)  # a missing tracker package fails here, first
        # cpu=True without CUDA: lets `accelerate launch`/torchrun run several CPU processes (gloo) too
        self.accelerator = Accelerator(
            gradient_accumulation_steps=opts.grad_accum,
            cpu=not cuda,
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision],
            **self.tracker.accelerator_kwargs(),
        )
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def identify(
        self,
        data: str | os.PathLike | Sequence[QARecord],
        specialty: str | Sequence[str] | None,
        mapping: dict | None = None,
    ) -> None:
        """The questions, the base fingerprint, and the run identity: everything that defines the trained
        weights, hashed (before any model is loaded, so that bad input fails fast)."""
        from accelerate.utils import broadcast_object_list

        self.chosen, self.data_meta = load_selected(data, specialty, one_answer=True, mapping=mapping)
        # as the data spells them: the manifest's specialty must name the data's ("cardiology" selects
        # "Cardiology", and the accuracy matrix then finds the adapter's own specialty)
        self.wanted = data_specialties(self.chosen, specialty)
        self.max_length = self._fit_max_length()
        fp: list[dict] = [base_identity(self.base, self.revision) if self.accelerator.is_main_process else {}]
        if self.world > 1:
            broadcast_object_list(fp)
        self.base_sha256 = fp[0]["base_weights_sha256"]  # a hub base's: read once loaded (`manifest`)
        self.identity = run_identity(
            base=self.base,
            revision=self.revision,
            base_id=fp[0],
            data_sha256=self.data_meta["sha256"],
            data_mapping=self.data_meta.get("mapping"),
            specialty=self.wanted,
            n_examples=len(self.chosen),
            opts=self.opts,
            precision=self.precision,
            world_size=self.world,
        )
        self.identity_hash = identity_hash(self.identity)

    def _fit_max_length(self) -> int:
        """`max_length` capped at the model's context (read from its config, before the weights load):
        a default that is larger is capped (logged); a larger value given explicitly is an error."""
        from transformers import AutoConfig

        from specprobe.core.models import load_tokenizer, model_context_length

        self.tokenizer = load_tokenizer(self.base, self.trust_remote_code, self.revision)
        try:
            config = AutoConfig.from_pretrained(
                self.base, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the model configuration of {self.base!r}: {exc}") from exc
        self.context_length = model_context_length(types.SimpleNamespace(config=config), self.tokenizer)
        wanted = self.opts.max_length
        if wanted <= self.context_length:
            return wanted
        if self.opts.is_explicit("max_length"):
            raise TrainOptionError(
                "max_length",
                f"{wanted} is longer than the model's context of {self.context_length} "
                f"tokens ({self.base}); use at most {self.context_length}",
            )
        if self.accelerator.is_main_process:
            log.info(
                "max_length: using the model's context of %d tokens (the default %d is longer)",
                self.context_length,
                wanted,
            )
        return self.context_length

    @contextlib.contextmanager
    def locked(self):
        """Hold the output directory's lock (`specprobe.utils.locks.output_lock`) for the body; under
        several processes the main one holds it, and all of them raise if it is taken."""
        from specprobe.utils.locks import output_lock

        with contextlib.ExitStack() as stack:
            if self.world == 1:
                stack.enter_context(output_lock(self.out))
            else:
                from accelerate.utils import broadcast_object_list

                failure = [None]
                if self.accelerator.is_main_process:
                    try:
                        stack.enter_context(output_lock(self.out))
                    except (ValueError, OSError) as exc:
                        failure = [exc]
                broadcast_object_list(failure)
                if failure[0] is not None:
                    raise failure[0]
            yield

    def interrupted(self, signum: int, *, completed: bool = False) -> TrainingInterrupted:
        """The exception for a stop by `signum`, pointing at the newest checkpoint of this run on disk."""
        if completed:
            return TrainingInterrupted(signum, self.progress.step, self.total, self.out, None, completed=True)
        step, ck = 0, None
        for cand in reversed(checkpoint_dirs(self.out) if self.out.is_dir() else []):
            try:
                state = read_json(cand / TRAINER_STATE)
            except (OSError, ValueError):
                continue
            if self.identity_hash is None or is_this_run(state, self.identity_hash):
                step, ck = int(state.get("step", 0)), cand
                if self.total is None:
                    self.total = state.get("total_steps")
                break
        return TrainingInterrupted(signum, step, self.total, self.out, ck)

    def prepare_out(self, overwrite: bool) -> tuple[str, Any]:
        """What the output directory holds (see `inspect_out`); unless "done", it is made ready to write.
        An "overwrite" keeps what is there until `clear_for_overwrite`, called once the run has loaded."""
        assert self.identity_hash is not None  # set by identify(), which runs first
        if not overwrite and self.out.is_dir():  # the same local base by another path is the same run
            self.identity = spelled_as_recorded(self.out, self.identity)
            self.identity_hash = identity_hash(self.identity)
        state, found = inspect_out(self.out, self.identity, self.identity_hash, overwrite)
        if state == "done":
            return state, found
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        return state, found

    def say_done(self, manifest: dict) -> None:
        """Log that `out` holds this run, finished: a warning when this call asked for snapshots or a tracker
        the run did not write (they change no weight, so it is the same run, returned as it is)."""
        if not self.accelerator.is_main_process:
            return
        unmet = unmet_file_options(manifest, self.opts.save_steps, self.opts.report_to)
        if not unmet:
            log.info("%s already holds this finished run; nothing to do", self.out)
            return
        log.warning(
            "%s already holds this run, finished, and returns it as it is: %s asked for now take effect only in "
            "a new run; train into a new folder, or pass overwrite=True (--overwrite) to train it again with them",
            self.out,
            " and ".join(unmet),
        )

    def clear_for_overwrite(self) -> None:
        """Clear the previous run's files (`overwrite`): only after the model, the LoRA layers and the
        examples have loaded, so that a run that cannot start (a wrong target module, a model that does
        not load) leaves the finished adapter it was to replace in place; and a finished one moves to
        `run_folder.PREVIOUS` until this run finishes, so that a run stopped on the way loses nothing."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            clear_owned(self.out)
        self.accelerator.wait_for_everyone()

    # -- load ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Tokenizer and model, the LoRA layers, the training examples, optimizer and scheduler."""
        self._plan_steps()
        model = self._load_model()
        model = self._add_lora(model)
        self._build_examples()
        self._build_optimizer(model)

    def _load_model(self):
        """The base model in the run's precision (4-bit quantized for QLoRA), ready for LoRA training."""
        import torch

        from specprobe.core.models import load_causal_lm, load_tokenizer

        opts, precision = self.opts, self.precision
        if getattr(self, "tokenizer", None) is None:
            self.tokenizer = load_tokenizer(self.base, self.trust_remote_code, self.revision)
        base_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if opts.load_in_4bit:
            model = self._load_quantized(base_dtype)
        else:
            model = load_causal_lm(
                self.base,
                device=self.accelerator.device,
                dtype=base_dtype,
                revision=self.revision,
                trust_remote_code=self.trust_remote_code,
            )
            if opts.gradient_checkpointing:
                model.gradient_checkpointing_enable()
                model.enable_input_require_grads()
        model.config.use_cache = False
        self.base_commit = getattr(model.config, "_commit_hash", None) or self.identity.get("base_commit")
        return model

    def _load_quantized(self, base_dtype):
        """QLoRA's base: NF4 weights (double quantization) on this process's GPU, computing in `base_dtype`."""
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        qcfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=base_dtype if self.precision != "fp32" else torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(
            self.base,
            quantization_config=qcfg,
            dtype=base_dtype,
            use_safetensors=True,  # as every base loads (core.models.load_causal_lm): no pickled weights
            revision=self.revision,
            device_map={"": self.accelerator.local_process_index},
            trust_remote_code=self.trust_remote_code,
        )
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.opts.gradient_checkpointing)

    def _add_lora(self, model):
        import torch
        from peft import LoraConfig, get_peft_model

        opts = self.opts
        self.targets = targets = list(opts.target_modules) if opts.target_modules else find_lora_targets(model)
        # peft annotates lora_alpha as int; it only divides by it (scaling = alpha / r), so a float is fine
        lcfg = LoraConfig(
            r=opts.rank,
            lora_alpha=opts.alpha,  # pyright: ignore[reportArgumentType]
            lora_dropout=opts.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
            fan_in_fan_out=uses_conv1d(model, targets),
        )
        torch.manual_seed(opts.seed)  # LoRA A init
        try:
            return get_peft_model(model, lcfg)
        except ValueError as exc:
            raise ValueError(f"cannot put LoRA on target modules {targets}: {exc}") from exc

    def _build_examples(self) -> None:
        opts, tok = self.opts, self.tokenizer
        self.examples, self.truncated = build_examples(tok, self.chosen, self.fmt, self.max_length, opts.append_eos)
        if self.truncated:
            log.warning(
                "%d of %d prompts were longer than max_length=%d and lost tokens from the left",
                len(self.truncated),
                len(self.examples),
                self.max_length,
            )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def _plan_steps(self) -> None:
        """The run's length (one example per selected question), and `save_steps` checked against it: before
        anything loads, and before `overwrite` removes the run it was to replace."""
        opts = self.opts
        self.group_size = opts.batch_size * self.world * opts.grad_accum
        self.steps_per_epoch = math.ceil(len(self.chosen) / self.group_size)
        self.total = opts.max_steps or opts.epochs * self.steps_per_epoch
        try:
            check_save_steps(opts.save_steps, self.total)
        except ValueError as exc:
            raise TrainOptionError("save_steps", str(exc)) from None

    def _build_optimizer(self, model) -> None:
        import torch
        from transformers import get_scheduler

        opts, total = self.opts, self.total
        assert total is not None  # set by _build_examples(), which runs first
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=opts.learning_rate, weight_decay=opts.weight_decay)
        self.scheduler = get_scheduler(
            "constant_with_warmup" if opts.scheduler == "constant" else opts.scheduler,
            optimizer,
            num_warmup_steps=int(round(opts.warmup_ratio * total)),
            num_training_steps=total,
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.sharded:
            self.accelerator.register_for_checkpointing(self.scheduler)

    # -- restore, checkpoint ----------------------------------------------------------------------------------
    def restore(self, ck: Path) -> None:
        """Adapter weights, optimizer, scheduler and the loop state from the checkpoint directory `ck`."""
        import torch
        from peft import set_peft_model_state_dict

        tstate = read_json(ck / TRAINER_STATE)
        if self.sharded:
            self.accelerator.load_state(str(ck / "accelerate"))
        else:
            from safetensors.torch import load_file

            set_peft_model_state_dict(
                self.accelerator.unwrap_model(self.model), load_file(str(ck / "adapter.safetensors"))
            )
            self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True))
            self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt", map_location="cpu", weights_only=True))
            if self.accelerator.scaler is not None and (ck / SCALER).exists():
                self.accelerator.scaler.load_state_dict(torch.load(ck / SCALER, weights_only=True))
        step = tstate["step"]
        self.progress = _Progress(
            step, tstate["loss_curve"], tstate["wall_time_s"], tstate.get("resumed_from", []) + [step]
        )
        if self.accelerator.is_main_process:
            log.info("resuming %s from step %d of %d", self.out, step, self.total)

    def checkpoint(self, at_step: int, wall: float) -> None:
        """Write `checkpoints/.tmp-step-N`, then rename it to `step-N` (the commit point); keep the newest."""
        acc = self.accelerator
        root = self.out / CHECKPOINTS
        tmp = root / f".tmp-step-{at_step:08d}"
        final = root / f"step-{at_step:08d}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if self.sharded:
            acc.save_state(str(tmp / "accelerate"))
        if acc.is_main_process:
            if not self.sharded:
                self._save_weights_and_optimizer(tmp)
            write_json(tmp / TRAINER_STATE, self._trainer_state(at_step, wall))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # the commit point
            for old in checkpoint_dirs(self.out)[: -self.opts.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.tracker.flush()  # the steps up to here are committed: the tracker may see them (exactly once)
        acc.wait_for_everyone()

    def _save_weights_and_optimizer(self, folder: Path) -> None:
        """The adapter weights, optimizer and scheduler state, as `restore` reads them (one process, or DDP)."""
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        sd = get_peft_model_state_dict(self.accelerator.unwrap_model(self.model))
        save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(folder / "adapter.safetensors"))
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
        if self.accelerator.scaler is not None:  # fp16: the loss scale it has found, or a resume skips steps
            torch.save(self.accelerator.scaler.state_dict(), folder / SCALER)

    def _trainer_state(self, at_step: int, wall: float) -> dict:
        """A checkpoint's TRAINER_STATE: its step, the run identity, and the loop state `restore` reads back."""
        pr = self.progress
        return {
            "step": at_step,
            "total_steps": self.total,
            "identity": self.identity,
            "identity_hash": self.identity_hash,
            "loss_curve": pr.curve,
            "wall_time_s": wall,
            "resumed_from": pr.resumed_from,
            "saved": now_iso(),
        }

    # -- the loop ------------------------------------------------------------------------------------------
    def wall(self) -> float:
        """Training wall time so far, over all segments of a resumed run."""
        return self.progress.wall_before + time.time() - self.t_segment

    def loop(self) -> None:
        """Optimizer steps up to the total, checkpointing every `save_every` steps. A SIGINT/SIGTERM on
        any process (see `SignalGuard`) stops it after the current step: checkpoint, then
        `TrainingInterrupted`."""
        from specprobe.utils.progress import progress

        pr, total = self.progress, self.total
        assert total is not None  # set by load()
        self._begin_segment()
        bar = progress(
            total,
            f"finetune {', '.join(self.wanted) if self.wanted else 'all'}",
            "step",
            enabled=self.show_progress and self.accelerator.is_local_main_process,
            initial=pr.step,
        )
        try:
            while pr.step < total:
                epoch, k = divmod(pr.step, self.steps_per_epoch)
                t_step = time.perf_counter()
                loss, lr = self.optimizer_step(epoch, k)
                pr.step += 1
                self._after_step(total, epoch, k, loss, lr, t_step, bar)
                self._checkpoint_or_stop(total)
        finally:
            bar.close()

    def _begin_segment(self) -> None:
        """Before the first step of this segment (a resumed run has several): train mode, the wall clock,
        the tracker, and the step 0 snapshot if asked for."""
        self.model.train()
        self.t_segment = time.time()
        self.tracker.start(self.accelerator, self.manifest_options(), resumed=bool(self.progress.resumed_from))
        if self.progress.step == 0 and 0 in (self.opts.save_steps or []):
            self.snapshot(0)

    def _after_step(self, total: int, epoch: int, k: int, loss: float, lr: float, t_step: float, bar: Any) -> None:
        """Record the step just taken (loss curve, tracker, progress bar, `on_step`) and keep a snapshot
        if `save_steps` asks for it."""
        pr = self.progress
        pr.curve.append({"step": pr.step, "epoch": epoch + (k + 1) / self.steps_per_epoch, "loss": loss, "lr": lr})
        seconds = max(time.perf_counter() - t_step, 1e-9)
        self.tracker.record(pr.step, loss, lr, self.grad_norm, self.step_tokens * self.world / seconds)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", epoch=f"{epoch + 1}/{math.ceil(total / self.steps_per_epoch)}")
        if self.on_step is not None:
            self.on_step(pr.step, loss)
        if pr.step in (self.opts.save_steps or []):
            self.snapshot(pr.step)

    def _checkpoint_or_stop(self, total: int) -> None:
        """After each step but the last (which `finish` writes): a checkpoint every `save_every` steps, and
        after a signal on any process, a checkpoint and then `TrainingInterrupted`."""
        pr, guard = self.progress, self.guard
        signum = self._stop_anywhere(guard.signum if guard is not None else 0)
        wall = self.wall()
        if signum and pr.step < total:
            self.checkpoint(pr.step, wall)
            raise self.interrupted(signum)
        if pr.step % self.opts.save_every == 0 and pr.step < total:
            self.checkpoint(pr.step, wall)

    def snapshot(self, step: int) -> None:
        """Keep the adapter as it is after `step` optimizer steps, as a PEFT folder (finetune/snapshots.py)."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model) if self.sharded else None
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_snapshot(acc.unwrap_model(self.model), self.out, step, state_dict, self.identity_hash)
        acc.wait_for_everyone()

    def _stop_anywhere(self, signum: int) -> int:
        """The signal any process was stopped by (the largest number), or 0."""
        if self.world == 1:
            return signum
        import torch

        t = torch.tensor([float(signum)], device=self.accelerator.device)
        return int(cast(torch.Tensor, self.accelerator.reduce(t, "max")).item())

    def optimizer_step(self, epoch: int, k: int) -> tuple[float, float]:
        """Step k of `epoch` over its group of examples (all micro-batches, all processes), dropout seeded
        from (seed, step, process). Returns the mean loss per target token and the learning rate used."""
        import torch

        acc, opts, world, rank = self.accelerator, self.opts, self.world, self.rank
        group = group_indices(len(self.examples), opts.seed, epoch, k, self.group_size)
        global_tokens = sum(len(self.examples[i].positions) for i in group)
        self.step_tokens = sum(len(self.examples[i].ids) for i in group) / world  # input tokens, per process
        self.grad_norm: float | None = None
        torch.manual_seed(step_seed(opts.seed, self.progress.step, rank))
        local_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        for j in range(opts.grad_accum):
            lo = (j * world + rank) * opts.batch_size
            local_sum += self._micro_step([self.examples[i] for i in group[lo : lo + opts.batch_size]], global_tokens)
        lr = cast(float, self.scheduler.get_last_lr()[0])  # a tensor only when the optimizer's lr is one
        self._advance_schedule()
        loss = (
            cast(torch.Tensor, acc.reduce(local_sum, "sum")).item() if world > 1 else local_sum.item()
        ) / global_tokens
        return loss, lr

    def _advance_schedule(self) -> None:
        """Step the learning-rate schedule only when the optimizer stepped: an fp16 step that the GradScaler
        skipped (inf/nan gradients) updated nothing, so the schedule must not move ahead of the updates."""
        if not getattr(self.optimizer, "step_was_skipped", False):
            self.scheduler.step()

    def _micro_step(self, batch: Sequence[Example], global_tokens: int):
        """Forward and backward of one micro-batch (the optimizer steps on the group's last one); the
        summed token loss, detached, as float64."""
        import torch

        acc, opts = self.accelerator, self.opts
        ids, mask, labels = collate(batch, self.pad_id)
        ids, mask, labels = ids.to(acc.device), mask.to(acc.device), labels.to(acc.device)
        with acc.accumulate(self.model):
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            shift = labels[:, 1:]
            sel = shift != -100
            rows = logits[:, :-1][sel].float()
            tok_loss = torch.nn.functional.cross_entropy(rows, shift[sel], reduction="sum")
            acc.backward(tok_loss * (self.world * opts.grad_accum / global_tokens))
            if acc.sync_gradients and opts.max_grad_norm:
                norm = acc.clip_grad_norm_(self.params, opts.max_grad_norm)
                self.grad_norm = float(norm) if norm is not None and self.tracker.active else None
            elif acc.sync_gradients and self.tracker.active:  # reading the norm changes nothing
                acc.unscale_gradients()  # fp16: the true gradients (the scaler's step does not unscale twice)
                grads = [p.grad for p in self.params if p.grad is not None]
                self.grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else None
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return tok_loss.detach().double()

    # -- finish ----------------------------------------------------------------------------------------------
    def manifest_options(self) -> dict:
        """The run's options as recorded (the manifest's "options"; a tracker's configuration)."""
        return {
            **asdict(self.opts),
            "precision": self.precision,
            "target_modules": self.targets,
            "max_length": self.max_length,
        }

    def manifest(self, wall: float) -> dict:
        """Everything about the finished run (manifest.json; `tokenizer` is added when it is written)."""
        from specprobe.core.models import weights_fingerprint

        opts, pr = self.opts, self.progress
        return {
            "specprobe_finetune": 1,
            "identity_hash": self.identity_hash,
            "identity": self.identity,
            "base": str(self.base),
            "revision": self.revision,
            "base_commit": self.base_commit,
            "base_weights_sha256": self.base_sha256 or weights_fingerprint(str(self.base), self.revision),
            "data": self.data_meta,
            "filter": {
                "specialty": self.wanted if self.wanted else "all",
                "n_examples": len(self.chosen),
                "specialty_counts": dict(specialty_counts(self.chosen)),
                "truncated_prompts": len(self.truncated),
                "truncated_questions": self.truncated,  # what of each question was cut (seen/unseen reads it)
            },
            "specialty": self.wanted,
            "options": self.manifest_options(),
            "context_length": self.context_length,
            "prompt": self.fmt.to_dict(),
            "seed": opts.seed,
            "world_size": self.world,
            "distributed_type": str(self.accelerator.distributed_type),
            "steps": pr.step,
            "steps_per_epoch": self.steps_per_epoch,
            "examples_per_step": self.group_size,
            "n_target_tokens": sum(len(e.positions) for e in self.examples),
            "loss_curve": pr.curve,
            "final_loss": pr.curve[-1]["loss"] if pr.curve else None,
            "wall_time_s": wall,
            "total_time_s": pr.wall_before + time.time() - self.t_start,
            "resumed_from": pr.resumed_from,
            "versions": library_versions(EXTRA_VERSIONS),
            "created": now_iso(),
        }

    def finish(self, wall: float) -> TrainRun:
        """Write the final adapter, then the manifest (written last: its presence means "finished"),
        then drop the checkpoints."""
        acc, out = self.accelerator, self.out
        state_dict = acc.get_state_dict(self.model) if self.sharded else None
        manifest = self.manifest(wall)
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = out / ".final-tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            acc.unwrap_model(self.model).save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
            manifest["tokenizer"] = getattr(self.tokenizer, "name_or_path", None)
            manifest["snapshots"] = snapshot_entries(out, self.opts.save_steps, self.identity_hash)
            # a run killed from here to the manifest leaves adapter files but no manifest: the marker
            # lets the rerun know them for its own (and train again) when no checkpoint is left
            write_json(out / FINISHING, {"identity_hash": self.identity_hash})
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            tmp.rmdir()
            manifest["adapter_files"] = adapter_digests(out)  # a rerun adopts the run only with these files
            write_json(out / MANIFEST, json.loads(json.dumps(manifest, default=str)))
            self.tracker.flush()  # after the manifest: a rerun of a finished run logs nothing again
            (out / FINISHING).unlink()
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            drop_previous(out)  # the run an --overwrite replaced, kept until now
            log.info(
                "wrote %s (%d steps, final loss %.4f, %.1f s)",
                out,
                self.progress.step,
                manifest["final_loss"] or math.nan,
                wall,
            )
        acc.wait_for_everyone()
        return TrainRun(out, manifest, True)


# -- the entry point -------------------------------------------------------------------------------------
def train(
    base: str,
    data: str | os.PathLike | Sequence[QARecord],
    specialty: str | Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
    trust_remote_code: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    mapping: dict | None = None,
    **options: Any,
) -> TrainRun:
    """Fine-tune a LoRA adapter on the questions of `specialty` (a name, a list, or None/"all").

    `base`: a hub id (optionally "org/name@<revision>") or local model directory. `data`: a QA file (S-MedQA JSON) or `QARecord`s.
    `mapping`: how to read a QA file the loader cannot read alone (`load_qa`); recorded in the manifest's
    "data" and in the run identity, so a rerun with another mapping is another run.
    `out`: the adapter directory (PEFT format plus manifest.json). `options`: see `TrainOptions`
    (checked first; `max_length` is capped at the model's context, and a larger explicit value is an error).
    Re-running the same call resumes from the last checkpoint; a finished run is returned as is.
    `on_step(step, loss)` is called after every optimizer step (on every process).

    Only a finished run is returned. SIGINT/SIGTERM stop training after the current step and a
    checkpoint, then raise `TrainingInterrupted` (a KeyboardInterrupt; see there). `out` is locked for
    the whole call (`specprobe.utils.locks.output_lock`): a second run into it gets `OutputLockedError`.
    """
    if out is None:
        raise ValueError("out= (the adapter output directory) is required")
    from specprobe.core.models import model_ref, refuse_adapter_as_model

    base, revision = model_ref(str(base), revision)  # "org/name@<revision>" pins a hub base
    refuse_adapter_as_model(base, "base")  # before anything loads or `out` is made
    opts = TrainOptions.from_kwargs(options)
    trainer = _Trainer(
        base,
        Path(out),
        opts,
        progress=progress,
        revision=revision,
        trust_remote_code=trust_remote_code,
        on_step=on_step,
    )
    with SignalGuard(trainer.interrupted) as guard:
        trainer.guard = guard
        trainer.start()
        trainer.identify(data, specialty, mapping)
        with trainer.locked():
            state, found = trainer.prepare_out(overwrite)
            if state == "done":
                trainer.say_done(found)
                return TrainRun(trainer.out, found, True, reused=True)
            trainer.load()
            if state == "overwrite":
                trainer.clear_for_overwrite()
            if state == "resume":
                trainer.restore(found)
            guard.deferring = True  # from here a signal stops after the current step, with a checkpoint
            try:
                trainer.loop()
                run = trainer.finish(trainer.wall())
            finally:
                trainer.tracker.end()  # steps not yet handed over are dropped: a rerun logs them
            guard.deferring = False
        if guard.signum:  # it came while the final adapter was written: that was finished first
            raise trainer.interrupted(guard.signum, completed=True)
    return run
