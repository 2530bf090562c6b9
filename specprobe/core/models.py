"""`ModelPair`: the only place that loads models. One base model plus an adapter (or a second full
model), one tokenizer, a device and a dtype; it yields "base" and "tuned" views.

With a PEFT adapter the base weights are loaded once: "base" is the same module with the adapter
disabled, so there is no second copy in memory. Models are accepted as hub ids, local directories
or loaded objects, as in TransformerLens and nnsight.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from specprobe.core.adapter_fit import AdapterMismatchError, check_adapter_fits
from specprobe.core.architecture import HFModel, SplitModel, check_split, split_model, unwrap_peft
from specprobe.core.encoding import require_fast
from specprobe.core.lora_fold import check_fold_mode, foldable_layers, folded_lora, should_fold
from specprobe.utils.io import sha256_file

log = logging.getLogger(__name__)

ModelLike = Any  # str | os.PathLike | PreTrainedModel | PeftModel


class ModelLoadError(ValueError):
    """A model, adapter or tokenizer could not be loaded or does not fit its partner."""


SHARD = "shard"  # device value: spread the model over every visible GPU (accelerate's device_map="auto")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device inputs go to: "auto"/None picks CUDA when present; "shard" starts on the first GPU."""
    if device in (None, "auto", SHARD):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N, mps or {SHARD}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but this torch build sees no CUDA GPU (use cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but MPS is not available here")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU (exact), bfloat16 on a GPU that supports it, unless the user says otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").exists()


def check_adapter_folder(path: str | os.PathLike, hint: str = "") -> Path:
    """`path` as an existing folder: a file given for the adapter's folder (its weights file) is named as a
    file (`NotADirectoryError`, with `hint`), a missing one as missing, never one said as the other."""
    folder = Path(path)
    if folder.is_file():
        raise NotADirectoryError(f"adapter {folder} is a file, not a folder{hint}")
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {folder}")
    return folder


def refuse_adapter_as_model(source: str | os.PathLike, what: str = "model", adapter_as: str | None = None) -> None:
    """A PEFT adapter folder given where a base model is expected: a `ModelLoadError` saying so and naming the
    model it was trained on (loading it as a model said "cannot load a tokenizer ... install sentencepiece").
    `what` names the argument (`base`, `--base`); `adapter_as`, where the adapter goes instead, if anywhere.
    A folder with a config.json too is refused as well: transformers loads it as the adapter on the model its
    adapter_config.json names, not as the model its config.json describes."""
    if not is_adapter_dir(source):
        return
    try:
        made_for = json.loads((Path(source) / "adapter_config.json").read_text(encoding="utf-8"))
        made_for = made_for.get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        made_for = None
    on = f" ({made_for})" if made_for else ""
    then = f", and the adapter as {adapter_as}" if adapter_as else ""
    if (Path(source) / "config.json").is_file():
        raise ModelLoadError(
            f"{what} {source} holds both config.json and adapter_config.json: transformers would load it as a PEFT "
            f"adapter on the model its adapter_config.json names{on}, not as this model; keep the model and the "
            f"adapter in folders of their own, then give the model as {what}{then}"
        )
    instead = "instead" if what == "model" else f"as {what}"
    raise ModelLoadError(
        f"{what} {source} is a PEFT adapter folder, not a base model: give the model it was trained on{on} "
        f"{instead}{then}"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and not name.startswith(("/", "~"))


def model_ref(source: str, revision: str | None = None) -> tuple[str, str | None]:
    """(name, revision) of a model reference. A hub id may carry its revision after "@"
    ("org/name@<commit, tag or branch>"): `specprobe run` hands its stages the hub base pinned to the
    commit it resolved at the start, so that every stage loads that commit. A local path is taken as is."""
    if "@" not in source or Path(source).exists():
        return source, revision
    name, _, pinned = source.rpartition("@")
    if not pinned or not _looks_like_hub_id(name):
        return source, revision
    if revision is not None and revision != pinned:
        raise ModelLoadError(f"model {source!r} names revision {pinned!r}, but revision={revision!r} was given")
    return name, pinned


def _check_source(name: str, what: str) -> None:
    if Path(name).exists():
        if not Path(name).is_dir():
            raise ModelLoadError(
                f"{what} {name!r} is a file; give the folder that holds the model's config.json "
                "(or the adapter's adapter_config.json)"
            )
        if not any(Path(name).glob("*.json")):
            raise ModelLoadError(f"{what} {name!r} is a directory without a config.json or adapter_config.json")
        return
    if not _looks_like_hub_id(name):
        raise ModelLoadError(f"{what} {name!r}: no such local path, and not a valid hub id")


def _not_local(source: str) -> str:
    """Said of a source that was tried on the hub: a mistyped local folder name reads as a network error."""
    return f" (there is no local folder {source!r} either)" if not Path(source).exists() else ""


def hub_commit(name: str, revision: str | None = None, *, cached_only: bool = False) -> str:
    """The commit that hub model `name` at `revision` (None: the default branch) resolves to now: on the
    hub, else (offline, or the hub unreachable) in the local cache; only in the cache with `cached_only`.
    A `ValueError` when neither knows it (the loaders could not load it either)."""
    from huggingface_hub import snapshot_download

    try:
        snap = snapshot_download(name, revision=revision, local_files_only=cached_only, allow_patterns=["config.json"])
        return Path(snap).name
    except Exception as exc:  # noqa: BLE001 - say why, whatever the hub client raised
        at = f" at revision {revision!r}" if revision else ""
        raise ValueError(
            f"base {name!r} is not a local directory, and the Hugging Face hub and cache know no such model{at}: {exc}"
        ) from exc


def weights_fingerprint(name: str, revision: str | None = None) -> str | None:
    """sha256 of the first safetensors file of a checkpoint: a local directory, or a hub id's snapshot at
    `revision` in the local Hugging Face cache (None while its weights are not downloaded). Cheap
    provenance, computed the same way by training (the adapter's manifest) and by `ModelPair` (its check)."""
    folder = Path(name)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(name, revision=revision, local_files_only=True, allow_patterns=["*.safetensors"])
            )
        except Exception:  # noqa: BLE001 - provenance only: not cached, not a hub id, or offline
            return None
    first = _first_weights_file(folder)
    return sha256_file(first) if first is not None else None


def _first_weights_file(folder: Path) -> Path | None:
    """The first safetensors file that transformers loads from `folder`: model.safetensors, else the first
    shard its index names; other files (Mistral's consolidated.safetensors) are no part of the model it loads,
    and a copy of the same weights without them must hash the same."""
    index = folder / "model.safetensors.index.json"
    try:
        named = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        shards = sorted({v for v in named if isinstance(v, str)})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        shards = []
    for name in ["model.safetensors", *shards]:
        if (folder / name).is_file():
            return folder / name
    files = sorted(folder.glob("*.safetensors"))
    return files[0] if files else None


def adapter_weights_sha256(folder: str | os.PathLike | None) -> str | None:
    """sha256 of an adapter folder's weights file (adapter_model.*), as `ModelPair` records it in
    metadata["adapter_sha256"] (None: no folder or no such file)."""
    if folder is None or not Path(folder).is_dir():
        return None
    files = sorted(Path(folder).glob("adapter_model.*"))
    return sha256_file(files[0]) if files else None


def check_adapter_base(adapter: str, manifest: dict, base_hash: str | None, name: str | None = None) -> None:
    """The base-hash check: `ModelLoadError` when the adapter's manifest (`finetune.train` writes one)
    records base weights other than `base_hash`. Silent when either fingerprint is unknown."""
    expected = manifest.get("base_weights_sha256")
    if expected and base_hash and expected != base_hash:
        label = repr(adapter) if name is None else f"{adapter!r} ({name})"
        raise ModelLoadError(
            f"adapter {label} was trained on a base with weights sha256 {expected[:12]}..., "
            f"but the base given has {base_hash[:12]}..."
        )


def _check_adapter_hash(adapter: str, manifest: dict, base_hash: str | None, force: bool) -> list[str]:
    """The base-hash check of `ModelPair.load`: with `force` a mismatch is returned, not raised (the
    same weights saved otherwise, e.g. in other shards, have another file hash: README "Loading")."""
    try:
        check_adapter_base(adapter, manifest, base_hash)
    except ModelLoadError as exc:
        if force:
            return [str(exc)]
        raise ModelLoadError(f"{exc} (pass force_adapter=True / --force-adapter to load it anyway)") from exc
    return []


def unfaithful_adapter(config: Any, base: HFModel) -> str | None:
    """Why the base and tuned views could not show a PEFT adapter on `base` as peft runs it, or None.

    The views run the wrapped model's own backbone and head (not `PeftModel.forward`), and the base
    view is that same module with the adapter disabled, so refused are: prompt learning (virtual
    tokens added in `PeftModel.forward`), activated LoRA (its offsets are found there too), and what
    changes the base model itself when loaded, which disabling the adapter does not undo: trained
    base biases (`bias="all"` on a base that has biases, `"lora_only"` on adapted layers that have
    them) and `layer_replication`.
    """
    skipped = "which specprobe's scoring does not run"
    if getattr(config, "is_prompt_learning", False):
        kind = getattr(getattr(config, "peft_type", None), "value", None) or type(config).__name__
        return f"{kind} adds virtual tokens in PeftModel.forward, {skipped}"
    if getattr(config, "alora_invocation_tokens", None):
        return f"activated LoRA (alora_invocation_tokens) is switched on in PeftModel.forward, {skipped}"
    not_base = (
        "so the base view would not be the base; merge the adapter (merge_and_unload), save the merged "
        "model and pass that directory as the tuned model"
    )
    bias = getattr(config, "bias", "none")
    lm = unwrap_peft(base)
    if bias == "lora_only":
        trained = _targeted_biases(config, lm)
    elif bias not in (None, "none"):
        trained = [n for n, _ in lm.named_parameters() if n.endswith("bias")]
    else:
        trained = []
    if trained:
        return f"bias={bias!r} loads trained biases into the base model's own layers ({trained[0]}, ...), {not_base}"
    if getattr(config, "layer_replication", None):
        return f"layer_replication changes the base model's layer stack, {not_base}"
    return None


def _targeted_biases(config: Any, lm: HFModel) -> list[str]:
    """The modules of `lm` that `config` targets and that have a bias: what `bias="lora_only"` trains
    (peft trains the biases of the adapted layers only, so targets without biases leave the base intact)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return [
        name
        for name, module in lm.named_modules()
        if isinstance(getattr(module, "bias", None), torch.Tensor) and check_target_module_exists(config, name)
    ]


#: files a saved tokenizer is read from: an adapter folder holding one keeps its loading error (it was given as tuned)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer(source: str, trust_remote_code: bool = False, revision: str | None = None):
    """The fast tokenizer of a hub id (at `revision`) or local directory; a `ModelLoadError` saying why not."""
    from transformers import AutoTokenizer

    _check_source(source, "model")  # a folder that is no model is said so, not as a tokenizer backend problem
    try:
        tok = AutoTokenizer.from_pretrained(
            source, use_fast=True, trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError) as exc:
        if not any((Path(source) / name).exists() for name in _TOKENIZER_FILES):
            refuse_adapter_as_model(source)  # an adapter folder without a tokenizer: say what it is
        raise ModelLoadError(f"cannot load a tokenizer from {source!r}{_not_local(source)}: {exc}") from exc
    require_fast(tok)
    return tok


def load_causal_lm(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    revision: str | None = None,
    shard: bool = False,
) -> HFModel:
    """A Hugging Face causal LM from a hub id or local directory, safetensors only. `shard`: layers
    spread over all visible GPUs by accelerate (`device_map="auto"`), for models larger than one GPU."""
    from transformers import AutoModelForCausalLM

    _check_source(source, "model")
    refuse_adapter_as_model(source)
    placement = {"device_map": "auto"} if shard else {}
    try:
        model: HFModel = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            revision=revision,
            **placement,
        )
    except (OSError, ValueError, SafetensorError) as exc:
        damaged = " (a weights file is truncated or damaged: download or copy it again)" * isinstance(
            exc, SafetensorError
        )
        raise ModelLoadError(f"cannot load model {source!r}{damaged}{_not_local(source)}: {exc}") from exc
    return (model if shard else model.to(device)).eval()


def same_vocabulary(tok_a, tok_b) -> bool:
    return tok_a.get_vocab() == tok_b.get_vocab()


@dataclass
class ModelPair:
    """Base and (optionally) tuned views of one loaded model, with the tokenizer and provenance."""

    base_model: HFModel  # a PeftModel in adapter mode, else the base causal LM
    tokenizer: Any
    tuned_model: HFModel | None = None  # a second full model, or None
    adapter_mode: bool = False
    metadata: dict = field(default_factory=dict)
    fold_mode: str = "auto"  # how the tuned view runs LoRA layers: see core/lora_fold.py
    adapter_name: str | None = None  # the PEFT adapter this pair's tuned view activates (None: the model's own)
    trust_remote_code: bool = False  # as loaded; `with_adapter` reads an adapter folder's tokenizer with it

    @property
    def variants(self) -> tuple[str, ...]:
        return ("base", "tuned") if (self.adapter_mode or self.tuned_model is not None) else ("base",)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (the first GPU when sharded)."""
        return unwrap_peft(self.base_model).get_input_embeddings().weight.device

    @contextlib.contextmanager
    def view(self, variant: str) -> Iterator[SplitModel]:
        """The model in state `variant` ("base" or "tuned"), taken apart for the scoring core."""
        if variant not in self.variants:
            raise ValueError(f"unknown variant {variant!r}; this pair has {self.variants}")
        if variant == "tuned" and not self.adapter_mode:
            yield split_model(self.tuned_model)
        elif variant == "base" and self.adapter_mode:
            with self.base_model.disable_adapter():
                yield split_model(self.base_model)
        elif variant == "tuned":  # adapter mode
            if self.adapter_name is not None and self.adapter_name not in self.base_model.active_adapters:
                self.base_model.set_adapter(
                    self.adapter_name, inference_mode=True
                )  # pairs from with_adapter share one module
            with (
                folded_lora(self.base_model)
                if should_fold(self.base_model, self.fold_mode)
                else contextlib.nullcontext()
            ):
                yield split_model(self.base_model)
        else:
            yield split_model(self.base_model)

    @property
    def lora_forward(self) -> str | None:
        """How the tuned view runs its LoRA layers: "folded", "unmerged", or None without an adapter."""
        if not self.adapter_mode:
            return None
        return (
            "folded"
            if should_fold(self.base_model, self.fold_mode) and foldable_layers(self.base_model)
            else "unmerged"
        )

    def with_adapter(self, adapter: str | os.PathLike, force: bool = False) -> ModelPair:
        """The same loaded base with another PEFT adapter directory as the tuned view.

        The adapter is loaded next to the ones already there (LoRA weights only; the base weights
        are not loaded again), with the same base-hash and fit checks as `load`. Pairs made this way
        share one module; each activates its own adapter when its tuned view is entered.
        """
        if not self.adapter_mode:
            raise ValueError("with_adapter needs a pair loaded with a PEFT adapter (ModelPair.load(base, adapter_dir))")
        if not is_adapter_dir(adapter):
            raise ModelLoadError(f"{str(adapter)!r} is not a PEFT adapter directory (no adapter_config.json)")
        keep = ("device", "dtype", "base", "base_weights_sha256", "tokenizer", "devices")
        meta = {k: v for k, v in self.metadata.items() if k in keep}
        check_folder_tokenizer(self.tokenizer, adapter, self.trust_remote_code)
        model, name = self._attach_adapter(self.base_model, str(adapter), meta, force=force)
        pair = ModelPair(model, self.tokenizer, None, True, meta, self.fold_mode, name, self.trust_remote_code)
        meta["lora_forward"] = pair.lora_forward
        return pair

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        base: ModelLike | None,
        tuned: ModelLike | None = None,
        *,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        check: bool = True,
        fold_mode: str = "auto",
        force_adapter: bool = False,
    ) -> ModelPair:
        """Load base and tuned from hub ids, local directories (full models or PEFT adapters) or objects.

        `fold_mode`: "auto" runs a float32 LoRA adapter folded into the weights (as fast as the base,
        equal to peft's merged model), 16-bit ones unmerged as peft does; "fold" or "unmerged" force it.
        `force_adapter`: load an adapter whose recorded architecture or shapes differ from the base's.
        `revision`: the base's hub revision (branch, tag or commit), for its weights and its tokenizer, also
        given as "org/name@<revision>" (`model_ref`); a tuned hub id loads its own, "@<revision>" or default.
        """
        if isinstance(base, str):
            base, revision = model_ref(base, revision)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        shard = device == SHARD
        meta: dict[str, Any] = {
            "device": f"{SHARD} from {dev}" if shard else str(dev),
            "dtype": str(dt).replace("torch.", ""),
        }
        load_kw = dict(device=dev, dtype=dt, trust_remote_code=trust_remote_code, revision=revision, shard=shard)
        check_fold_mode(fold_mode)  # before any work
        base, tuned, tokenizer, tuned_tok = _engine_inputs(base, tuned, tokenizer, meta)
        base_obj, base_name = _load_base(base, tuned, meta, load_kw)
        base_obj, tuned_obj, adapter_mode = _load_tuned(base, base_obj, tuned, meta, load_kw, force_adapter)
        if adapter_mode:
            check_adapter_layers_enabled(base_obj)
        tokenizer = _pair_tokenizer(tokenizer, base, base_name, base_obj, tuned, trust_remote_code, revision, tuned_tok)
        meta["tokenizer"] = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        check_tokenizer_fits(tokenizer, base_obj)
        _record_placement(meta, base_obj, tuned_obj, shard)
        pair = cls(base_obj, tokenizer, tuned_obj, adapter_mode, meta, fold_mode, trust_remote_code=trust_remote_code)
        if adapter_mode:
            active = list(pair.base_model.active_adapters)
            pair.adapter_name = active[0] if len(active) == 1 else None  # re-activated by view() if changed
            meta["lora_forward"] = pair.lora_forward
        for m in [pair.base_model] + ([pair.tuned_model] if pair.tuned_model is not None else []):
            m.eval()  # LoRA dropout and any other dropout off
        if pair.tuned_model is not None:
            pair._check_compatible()
        if check:
            pair.self_check()
        return pair

    @staticmethod
    def _attach_adapter(base_obj: HFModel, adapter: str, meta: dict, force: bool = False) -> tuple[HFModel, str]:
        """Put the adapter directory on `base_obj` (beside existing adapters on a PeftModel); (model, adapter name)."""
        from peft import PeftConfig, PeftModel

        cfg = _read_adapter_json(Path(adapter) / "adapter_config.json", required=True)
        _check_lora_config(Path(adapter) / "adapter_config.json", cfg)
        if Path(adapter).is_dir() and not any(Path(adapter).glob("adapter_model.*")):
            # peft would look for the weights on the Hugging Face hub under the folder's name
            raise ModelLoadError(
                f"adapter folder {adapter!r} has an adapter_config.json but no adapter_model.safetensors"
            )
        manifest = _read_adapter_json(Path(adapter) / "manifest.json", required=False)
        meta["tuned"] = adapter
        meta["adapter_base_model"] = cfg.get("base_model_name_or_path")
        meta["adapter_sha256"] = adapter_weights_sha256(adapter)
        hash_forced = _check_adapter_hash(adapter, manifest, meta.get("base_weights_sha256"), force)
        try:
            why = unfaithful_adapter(PeftConfig.from_peft_type(**cfg), base_obj)
        except (TypeError, ValueError, KeyError):
            why = None  # a config peft cannot read: its loader below says why
        if why:  # before loading: some of these would change the (shared) base weights
            raise ModelLoadError(f"adapter {adapter!r} is not supported: {why}")
        try:
            forced = hash_forced + check_adapter_fits(adapter, cfg, manifest, base_obj, force=force)
        except AdapterMismatchError as exc:
            raise ModelLoadError(str(exc)) from exc
        if forced:
            meta["adapter_mismatch_forced"] = forced
            log.warning("loading adapter %s despite: %s", adapter, "; ".join(forced))
        try:
            if isinstance(base_obj, PeftModel):  # another adapter on an already adapted model
                name = "adapter-" + (meta["adapter_sha256"] or adapter)[:16]
                if name not in base_obj.peft_config:
                    base_obj.load_adapter(adapter, adapter_name=name, is_trainable=False)
                base_obj.set_adapter(name, inference_mode=True)
                return base_obj.eval(), name
            model = PeftModel.from_pretrained(base_obj, adapter, is_trainable=False)
        except SafetensorError as exc:
            raise ModelLoadError(
                f"adapter {adapter!r}: its weights file is truncated or damaged (copy it again): {exc}"
            ) from exc
        except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as exc:
            raise ModelLoadError(
                f"adapter {adapter!r} does not fit the base model {meta.get('base')!r} "
                f"(adapter was made for {cfg.get('base_model_name_or_path')!r}): {str(exc)[:300]}"
            ) from exc
        return model.eval(), "default"

    def _check_compatible(self) -> None:
        a = unwrap_peft(self.base_model).get_output_embeddings().weight.shape
        b = unwrap_peft(self.tuned_model).get_output_embeddings().weight.shape
        if a[0] != b[0]:
            raise ModelLoadError(f"base and tuned have different output vocabularies ({a[0]} vs {b[0]})")
        if a != b:
            raise ModelLoadError(f"base and tuned have different hidden sizes ({a[1]} vs {b[1]}): not one model")

    def self_check(self) -> None:
        """Backbone+head must reproduce each view's own logits on a short input (catches unknown heads)."""
        ids = self.tokenizer("The patient reported chest pain.", return_tensors="pt")["input_ids"].to(self.device)
        for variant in self.variants:
            with self.view(variant) as split:
                check_split(split, ids)


def context_length(pair: ModelPair) -> int:
    """The longest input the pair's model takes; see `model_context_length`."""
    return model_context_length(pair.base_model, pair.tokenizer)


def model_context_length(model: Any, tokenizer: Any) -> int:
    """The longest input a model takes (its position table), capped by the tokenizer's limit.

    The one definition shared by local scoring, evaluation and the remote (nnsight) path."""
    cfg = unwrap_peft(model).config
    names = ("max_position_embeddings", "n_positions", "seq_length")
    limits = [getattr(cfg, a) for a in names if isinstance(getattr(cfg, a, None), int)]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 10**7:
        limits.append(tok_limit)
    return min(limits) if limits else 2048


def _engine_inputs(base: Any, tuned: Any, tokenizer: Any, meta: dict) -> tuple[Any, Any, Any, Any]:
    """TransformerLens / nnsight objects as base or tuned: the model inside (see `core.engines`), their
    tokenizer unless one is given (the tuned object's only where the base is no path, whose own tokenizer
    the pair loads), the tuned object's own tokenizer (checked against the pair's by `_pair_tokenizer`), and
    `meta["engines"]` saying which object came in (and for TransformerLens whether weight processing
    changed the weights)."""
    from specprobe.core.engines import engine_metadata, unwrap_engine

    engines: dict[str, Any] = {}
    out = []
    tuned_tok = None
    for role, obj in (("base", base), ("tuned", tuned)):
        info = None if obj is None or isinstance(obj, (str, os.PathLike)) else engine_metadata(obj)
        if info is None:
            out.append(obj)
            continue
        model, tok, desc = unwrap_engine(obj)
        info["description"] = desc
        engines[role] = info
        out.append(model)
        if role == "tuned":
            tuned_tok = tok
        if tokenizer is None and tok is not None and (role == "base" or not isinstance(base, (str, os.PathLike))):
            tokenizer = tok
    if engines:
        meta["engines"] = engines
    return out[0], out[1], tokenizer, tuned_tok


def _load_base(base: ModelLike | None, tuned: ModelLike | None, meta: dict, load_kw: dict) -> tuple[Any, str | None]:
    """The base model object and its name (None when the base comes with a PeftModel `tuned`)."""
    from peft import PeftModel

    if base is None and not isinstance(tuned, PeftModel):
        raise ModelLoadError("base model is required (a hub id, a local directory or a loaded model)")
    if isinstance(base, (str, os.PathLike)):
        base_name = str(base)
        refuse_adapter_as_model(base_name, "base", "`tuned` (`adapter` in evaluate)")
        meta["base"] = base_name
        if load_kw.get("revision"):
            meta["base_revision"] = load_kw["revision"]
        model = load_causal_lm(base_name, **load_kw)
        meta["base_weights_sha256"] = weights_fingerprint(base_name, load_kw.get("revision"))  # a hub id's: now cached
        return model, base_name
    if base is not None:
        check_weights_loaded(base, "base")
        base_name = getattr(getattr(unwrap_peft(base), "config", None), "_name_or_path", type(base).__name__)
        meta["base"] = f"<object {type(base).__name__}: {base_name}>"
        return base.eval(), base_name
    return None, None


def _load_tuned(
    base: ModelLike | None, base_obj: Any, tuned: ModelLike | None, meta: dict, load_kw: dict, force_adapter: bool
) -> tuple[Any, Any, bool]:
    """(base object, tuned full model or None, adapter mode): an adapter goes onto the base object."""
    from peft import PeftModel

    if tuned is None:
        return base_obj, None, False
    if isinstance(tuned, PeftModel):
        check_weights_loaded(tuned, "tuned")
        if base_obj is tuned:
            raise ModelLoadError(
                "base and tuned are the same PeftModel: pass base=None (or the model it was made from); the base "
                "view is that PeftModel with its adapter disabled"
            )
        if base_obj is not None and base_obj is not tuned.get_base_model() and not isinstance(base, (str, os.PathLike)):
            raise ModelLoadError("tuned is a PeftModel on a different base object than `base`; pass its own base")
        for name, config in tuned.peft_config.items():
            why = unfaithful_adapter(config, tuned)
            if why:
                raise ModelLoadError(f"PeftModel adapter {name!r} is not supported: {why}")
        meta["tuned"] = f"<object PeftModel, adapters {list(tuned.peft_config)}>"
        return tuned.eval(), None, True
    if isinstance(tuned, (str, os.PathLike)) and is_adapter_dir(tuned):
        _warn_unused_weights(tuned)
        model, _ = ModelPair._attach_adapter(base_obj, str(tuned), meta, force=force_adapter)
        return model, None, True
    if isinstance(tuned, (str, os.PathLike)):
        meta["tuned"] = str(tuned)
        name, revision = model_ref(str(tuned))  # `load_kw`'s revision is the base's
        model = load_causal_lm(name, **{**load_kw, "revision": revision})
        meta["tuned_weights_sha256"] = weights_fingerprint(name, revision)
        return base_obj, model, False
    check_weights_loaded(tuned, "tuned")
    meta["tuned"] = f"<object {type(tuned).__name__}>"
    return base_obj, tuned.eval(), False


def _warn_unused_weights(adapter: str | os.PathLike) -> None:
    """Say so when an adapter folder also holds full model weights: the adapter is what loads (as in
    transformers and peft), so those weights, perhaps another model's, are not what is scored."""
    unused = sorted(p.name for p in Path(adapter).glob("*.safetensors") if not p.name.startswith("adapter_model"))
    if unused:
        log.warning(
            "tuned %s holds a PEFT adapter (adapter_config.json) and full model weights (%s): the adapter is "
            "loaded on the base and those weights are not used; to compare that full model, give it a folder "
            "without adapter_config.json",
            adapter,
            ", ".join(unused),
        )


def _record_placement(meta: dict, base_obj: Any, tuned_obj: Any, shard: bool) -> None:
    """The device and dtype the models run in, read off them: model objects are used as given (neither
    moved nor cast), so `device=`/`dtype=` describe only what `ModelPair` loads itself."""
    if shard:  # where the layers went
        meta["devices"] = sorted({str(p.device) for p in base_obj.parameters()})
    weights = [unwrap_peft(m).get_input_embeddings().weight for m in (base_obj, tuned_obj) if m is not None]
    dtypes = [str(w.dtype).replace("torch.", "") for w in weights]
    meta["dtype"] = dtypes[0] if len(set(dtypes)) == 1 else f"base {dtypes[0]}, tuned {dtypes[1]}"
    if len(set(dtypes)) > 1:
        log.warning(
            "base and tuned run in different dtypes (%s): every tuned - base delta includes their rounding "
            "difference; cast one model to the other's dtype to compare the weights alone",
            meta["dtype"],
        )
    devices = [str(w.device) for w in weights]
    if not shard and any(w.device.type != torch.device(meta["device"]).type for w in weights):
        meta["device"] = devices[0] if len(set(devices)) == 1 else f"base {devices[0]}, tuned {devices[1]}"


def _tuner_layers(model: Any) -> list[Any]:
    """The PEFT adapter layers (LoRA and the other tuners) inside a torch module."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def check_adapter_layers_enabled(model: Any) -> None:
    """A `ModelLoadError` when any adapter layer of a PeftModel is switched off (peft's
    `disable_adapter_layers()`, or inside `with model.disable_adapter():`): its tuned view would be the base."""
    if any(m.disable_adapters for m in _tuner_layers(model)):
        raise ModelLoadError(
            "the PeftModel's adapter layers are disabled (disable_adapter_layers(), or inside `with "
            "model.disable_adapter():`): its tuned view would be the base model; call enable_adapter_layers() "
            "on it first (or score it after the with block)"
        )


def shares_adapted_model(base: Any, tuned: Any) -> bool:
    """Whether `base` is `tuned`'s own PEFT-adapted model: the same PeftModel, or the model it was made from,
    which `PeftModel.from_pretrained` changed in place (its adapter layers run when `base` runs)."""
    return (
        base is not None
        and tuned is not None
        and unwrap_peft(base) is unwrap_peft(tuned)
        and bool(_tuner_layers(unwrap_peft(tuned)))
    )


def check_weights_loaded(model: Any, role: str) -> None:
    """A `ModelLoadError` for a model object whose weights are on the 'meta' device (built under
    `torch.device("meta")` / `init_empty_weights`, or not loaded yet): it crashed with "Tensor.item() cannot
    be called on meta tensors". Models that accelerate offloads (an `hf_device_map`) load theirs when run."""
    lm = unwrap_peft(model)
    if getattr(lm, "hf_device_map", None):
        return
    meta = next((name for name, p in model.named_parameters() if p.device.type == "meta"), None)
    if meta is not None:
        raise ModelLoadError(
            f"{role} {type(model).__name__}: its weights are on the 'meta' device ({meta}, ...), not loaded; "
            "load them first (from_pretrained, load_state_dict(..., assign=True), or nnsight's dispatch())"
        )


def _pair_tokenizer(
    tokenizer: Any,
    base: ModelLike | None,
    base_name: str | None,
    base_obj: Any,
    tuned: ModelLike | None,
    trust_remote_code: bool,
    revision: str | None = None,
    tuned_tok: Any = None,
) -> Any:
    """The tokenizer given (object or path), else the base's (at the base's `revision`, as its weights); the
    tuned model's own tokenizer (`tuned_tok`, an engine object's; a tuned model or adapter directory's) must
    share its vocabulary."""
    model = base_name if isinstance(base, (str, os.PathLike)) else base_obj
    tokenizer = model_tokenizer(model, tokenizer, trust_remote_code, revision)
    require_fast(tokenizer)
    if isinstance(tuned, (str, os.PathLike)):
        check_folder_tokenizer(tokenizer, tuned, trust_remote_code)
    else:
        check_same_tokenizer(tokenizer, tuned_tok, f"a {type(tuned).__name__} object")
    return tokenizer


def model_tokenizer(
    model: Any, tokenizer: Any = None, trust_remote_code: bool = False, revision: str | None = None
) -> Any:
    """The tokenizer given (an object as is; a hub id or folder loaded), else `model`'s own: a hub id's or
    folder's (at `revision`), or a loaded model's from its config's name_or_path (`ModelLoadError` when it
    has none). Shared by `ModelPair.load` and the nnsight lens (`probe.remote`)."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(str(tokenizer), trust_remote_code)
    if tokenizer is not None:
        return tokenizer
    if isinstance(model, (str, os.PathLike)):
        return load_tokenizer(str(model), trust_remote_code, revision)
    inner = unwrap_peft(model)
    source = getattr(getattr(inner, "config", None), "_name_or_path", None)
    if not source:
        raise ModelLoadError(f"pass tokenizer= ({type(inner).__name__} is a loaded model without a name_or_path)")
    return load_tokenizer(source, trust_remote_code)


def check_same_tokenizer(tokenizer: Any, tuned_tok: Any, tuned: str) -> None:
    """A `ModelLoadError` when the tuned model's own tokenizer (`tuned_tok`; None: it has none) has another
    vocabulary than the pair's: the tuned model learned on that one (e.g. added tokens), so scoring it with
    the pair's tokenizer would give log-probs that are not comparable. `tuned` names the tuned model."""
    if tuned_tok is not None and tuned_tok is not tokenizer and not same_vocabulary(tokenizer, tuned_tok):
        raise ModelLoadError(f"base and tuned ({tuned}) have different tokenizers; their log-probs are not comparable")


def check_folder_tokenizer(tokenizer: Any, folder: str | os.PathLike, trust_remote_code: bool = False) -> None:
    """`check_same_tokenizer` for a tuned model or adapter folder that holds a tokenizer of its own."""
    if (Path(folder) / "tokenizer.json").exists():
        check_same_tokenizer(tokenizer, load_tokenizer(str(folder), trust_remote_code), str(folder))


def check_tokenizer_fits(tokenizer: Any, model: HFModel) -> None:
    """A `ModelLoadError` when the tokenizer has ids the model's embedding has no row for (tokens added
    without `resize_token_embeddings`, or another model's tokenizer): a text with one of them crashed the
    scoring with "IndexError: index out of range in self" (on a GPU, a device-side assert)."""
    rows = unwrap_peft(model).get_input_embeddings().weight.shape[0]
    beyond = sorted((i, t) for t, i in tokenizer.get_vocab().items() if i >= rows)
    if beyond:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelLoadError(
            f"tokenizer {name!r} has {len(beyond)} token(s) with ids beyond the model's {rows} embedding rows "
            f"(e.g. {beyond[0][1]!r}, id {beyond[0][0]}): use the model's own tokenizer, or resize the model's "
            "embeddings (resize_token_embeddings) and save it"
        )


def _check_lora_config(path: Path, cfg: dict) -> None:
    """A LoRA adapter_config.json without the keys that say which modules it changes and its rank: peft
    filled in defaults and the load failed on tensor shapes, with "made for None" as the only hint."""
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        return
    missing = [k for k in ("peft_type", "r", "target_modules") if k not in cfg]
    if missing:
        raise ModelLoadError(f"{path}: lacks {', '.join(map(repr, missing))}; the adapter's config is incomplete")


def _read_adapter_json(path: Path, required: bool) -> dict:
    """An adapter's JSON file as a dict; damage is a `ModelLoadError` naming the file."""
    if not path.exists():
        if required:
            raise ModelLoadError(f"{path}: missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
