"""What makes two training runs the same run: the base weights, the data (and the mapping it was read
with), the specialty filter, every
option that changes the trained weights and the number of processes. A rerun with the same identity
resumes or finds its finished run; a different one is refused (`run_folder.inspect_out`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from specprobe.finetune.train_options import NON_IDENTITY, TrainOptions
from specprobe.utils.io import sha256_text


def run_identity(
    *,
    base: str,
    revision: str | None,
    base_id: dict,
    data_sha256: str,
    specialty: list[str] | None,
    n_examples: int,
    opts: TrainOptions,
    precision: str,
    world_size: int,
    data_mapping: dict | None = None,
) -> dict:
    """The run identity: `base_id` is `base_identity(base, revision)`; `precision` the resolved one.
    `data_mapping`: the mapping the data file was read with, beside its sha256 (the same file read with
    another mapping is other data); recorded only when given, so runs without one keep their identity."""
    options = {k: v for k, v in asdict(opts).items() if k not in NON_IDENTITY}
    options["precision"] = precision
    return {
        "base": str(base),
        "revision": revision,
        **base_id,
        "data_sha256": data_sha256,
        **({"data_mapping": data_mapping} if data_mapping else {}),
        "specialty": specialty,
        "n_examples": n_examples,
        "options": options,
        "world_size": world_size,
    }


def identity_hash(identity: dict) -> str:
    """The hash a checkpoint and a manifest record, to know a rerun of the same run."""
    return sha256_text(json.dumps(identity, sort_keys=True, default=str))


def comparable(identity: dict) -> dict:
    """A recorded identity as `run_identity` makes it now: one written before an option was found not to
    change the weights (NON_IDENTITY: gradient_checkpointing) still names it, and is the same run without."""
    options = identity.get("options")
    if not isinstance(options, dict):
        return identity
    return {**identity, "options": {k: v for k, v in options.items() if k not in NON_IDENTITY}}


def is_this_run(recorded: dict, this_hash: str) -> bool:
    """Whether a manifest or checkpoint state (its "identity_hash" and "identity") records the run `this_hash` names."""
    if recorded.get("identity_hash") == this_hash:
        return True
    identity = recorded.get("identity")
    return isinstance(identity, dict) and identity_hash(comparable(identity)) == this_hash


def base_identity(base: str, revision: str | None = None) -> dict:
    """What identifies the base weights in a run's identity: a local checkpoint's weights hash
    (`core.models.weights_fingerprint`, as `ModelPair` checks it); for a hub id, the commit its
    configuration was read from (call after `AutoConfig.from_pretrained`). The commit is known before the weights are downloaded, unlike their
    hash, so a first run (weights not yet cached) and its resume have the same identity."""
    from specprobe.core.models import hub_commit, weights_fingerprint

    if Path(base).is_dir():
        return {"base_weights_sha256": weights_fingerprint(base)}
    try:
        commit = hub_commit(base, revision, cached_only=True)
    except ValueError:  # not cached: the model cannot load offline either, and says why
        commit = None
    return {"base_weights_sha256": None, "base_commit": commit}


def identity_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """How identity `b` (a run on disk) differs from `a` (this run), one "key: there vs now" per value."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += identity_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {vb!r} there vs {va!r} now")
    return out
