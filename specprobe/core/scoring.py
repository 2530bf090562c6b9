"""The one forward path: per-token log-probabilities at requested positions, batched and lean.

Used by `compare`, multiple-choice evaluation and the layer views. Items are sorted by length and
batched with right padding (no position-id pitfalls), each input is cut after its last scored
token, hidden states are gathered at the scored positions *before* the unembedding, and the
log-softmax runs over those rows only, in chunks: no batch x length x vocabulary tensor exists.

No attention mask is passed by default: with right padding in a causal model, real tokens never
attend to the padding after them and keep positions 0..n-1, so their outputs are those of the
unpadded text; without a mask, SDPA takes its causal kernel instead of materialising a
batch x heads x length x length mask and score matrix. Only the (unread) padded rows differ.

Data-parallel (`distribute=True` under an initialised process group, see `specprobe.core.distributed`):
every rank plans the same batches, runs its share of them and gets every rank's results back, so
the result is bit-identical to one process's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from specprobe.core.architecture import SplitModel
from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_TOKENS
from specprobe.core.checkpoint import BatchStore, ScoreCheckpoint, resume_tolerance
from specprobe.core.distributed import all_gather_indexed, balanced_shares, is_main, world
from specprobe.core.items import ScoreItem
from specprobe.core.rows import build_rows, row_position_ids, segment_mask
from specprobe.utils.progress import progress as show_progress

log = logging.getLogger(__name__)

# Rows x vocabulary float32 logits materialised at once by the unembedding: 16 MiB on a CPU, where
# larger chunks fall out of cache and cost both time and resident memory; 128 MiB on a GPU, where
# fewer, larger head matmuls re-read the (vocabulary x d_model) weight fewer times.
HEAD_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}


@dataclass
class ScoredItem:
    """Log-probabilities of an item's scored tokens, and optionally each layer's residual stream there."""

    logps: np.ndarray  # (n_positions,) float64
    # (n_layers, n_positions, d_model) on CPU, before the final norm; or what `reduce_layers` made of them
    layer_states: torch.Tensor | None = None


def plan_batches(items: Sequence, batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    """Indices of items (anything with `needed_length`) grouped into batches, longest first (as
    lm-eval's Collator), within a token budget."""
    order = sorted(range(len(items)), key=lambda i: -items[i].needed_length)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = items[current[0]].needed_length if current else items[i].needed_length
        full = len(current) >= batch_size or (
            max_batch_tokens is not None and current and longest * (len(current) + 1) > max_batch_tokens
        )
        if full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def batch_token_budget(device: torch.device, max_batch_tokens: int | None | str = "auto") -> int | None:
    """The token budget a batch gets on `device`: the given one, or DEFAULT_BATCH_TOKENS for "auto"."""
    if max_batch_tokens == "auto":
        return DEFAULT_BATCH_TOKENS.get(device.type, DEFAULT_BATCH_TOKENS["cuda"])
    return max_batch_tokens  # type: ignore[return-value]


def batch_rows(device: torch.device, batch_size: int | None = None) -> int:
    """The most rows a batch holds on `device`: the given number, or DEFAULT_BATCH_ROWS for None."""
    if batch_size is None:
        return DEFAULT_BATCH_ROWS.get(device.type, DEFAULT_BATCH_ROWS["cuda"])
    return batch_size


def plan_device_batches(
    items: Sequence, device: torch.device, batch_size: int | None = None, max_batch_tokens: int | None | str = "auto"
) -> list[list[int]]:
    """`plan_batches` with `device`'s defaults for the rows (`batch_rows`) and tokens (`batch_token_budget`)
    of a batch: the batches `score_items` runs, for callers that plan or count them (layers, the TL engine)."""
    return plan_batches(items, batch_rows(device, batch_size), batch_token_budget(device, max_batch_tokens))


def model_device(split: SplitModel) -> torch.device:
    return split.backbone.get_input_embeddings().weight.device


@torch.no_grad()
def logprobs_at(split: SplitModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of `hidden` (n, d): head + float32 log-softmax, chunked over rows."""
    if hidden.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    weight = split.causal_lm.get_output_embeddings().weight
    budget = HEAD_CHUNK_ELEMENTS.get(weight.device.type, HEAD_CHUNK_ELEMENTS["cpu"])
    rows = max(1, budget // weight.shape[0])
    out = []
    for lo in range(0, hidden.shape[0], rows):
        logits = split.head(hidden[lo : lo + rows]).float()  # on the head's device (may differ when sharded)
        picked = logits.gather(1, targets[lo : lo + rows, None].to(logits.device)).squeeze(1)
        total = torch.logsumexp(logits, dim=-1)
        _check_finite(split, total, picked)
        out.append((picked - total).double().cpu())
    return torch.cat(out)


class NonFiniteLogitsError(RuntimeError):
    """The model produced NaN or infinite logits: a broken run (16-bit overflow, bad weights), not a score."""


def _check_finite(split: SplitModel, total: torch.Tensor, picked: torch.Tensor) -> None:
    """Refuse NaN/inf logits (a NaN or +inf anywhere in a row makes its logsumexp non-finite), which
    later stages would otherwise drop as unscorable rows: a silent loss, not a result. A target logit of
    -inf (probability 0 under a finite row) stays a log-probability of -inf."""
    if bool(torch.isfinite(total).all()) and not bool(torch.isnan(picked).any()):
        return
    weight = split.causal_lm.get_output_embeddings().weight
    bad = int((~torch.isfinite(total) | torch.isnan(picked)).sum())
    raise NonFiniteLogitsError(
        f"{type(split.causal_lm).__name__} produced NaN or infinite logits at {bad} scored position(s) "
        f"(weights {str(weight.dtype).replace('torch.', '')} on {weight.device}); in float16 this is "
        "usually overflow: use --dtype bfloat16 or float32"
    )


@torch.no_grad()
def _check_options(batch_size: int | None, capture_layers: bool, reduce_layers: Callable | None) -> None:
    """Reject option combinations `score_items` cannot honour."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if reduce_layers is not None and not capture_layers:
        raise ValueError("reduce_layers needs capture_layers=True")


def _rank_share(all_rows: Sequence, batches: list[list[int]], rank: int, size: int) -> list[int]:
    """Indices of this rank's batches: whole batches, balanced across `size` ranks by padded tokens."""
    # padded tokens of each batch: its rows x its longest row (the first: plan_batches goes longest first)
    costs = [len(b) * all_rows[b[0]].needed_length for b in batches]
    return balanced_shares(costs, size)[rank]


def _head_dtype(split: SplitModel) -> str:
    return str(split.causal_lm.get_output_embeddings().weight.dtype).replace("torch.", "")


def _reusable_batches(
    store: BatchStore, mine: Sequence[int], run: Callable[[int], dict[int, ScoredItem]], dtype: str
) -> dict[int, dict[int, ScoredItem] | None]:
    """The stored batches of `mine` a resumed run may use: {index: None (to load)}, once the first and the
    last of them, scored again by `run`, agree with their stored log-probabilities (they map to those fresh
    results). When one does not (the model or its files changed since), this rank's stored batches are
    discarded and only the fresh ones are kept (and stored again)."""
    stored = sorted(store.finished() & set(mine))
    if not stored:
        return {}
    checks = sorted({stored[0], stored[-1]})
    fresh = {j: run(j) for j in checks}
    tolerance = resume_tolerance(dtype)
    if not all(store.agrees(j, _parts(fresh[j]), tolerance) for j in checks):
        store.discard(stored, "scored again, stored batches give other log-probabilities (the model changed?)")
        for j in checks:
            store.save(j, _parts(fresh[j]))
        return dict(fresh)
    log.info("resuming from %s: %d of %d batches were scored before", store.folder, len(stored), len(mine))
    return {**dict.fromkeys(stored), **fresh}


def _parts(results: dict[int, ScoredItem]) -> dict[str, dict[int, np.ndarray]]:
    """A batch's results as a `BatchStore` keeps them: log-probabilities, and reduced layer rows if any."""
    parts = {"logps": {i: s.logps for i, s in results.items()}}
    if any(s.layer_states is not None for s in results.values()):
        parts["states"] = {i: s.layer_states.numpy() for i, s in results.items() if s.layer_states is not None}
    return parts


def _load_batch(store: BatchStore | None, j: int) -> dict[int, ScoredItem] | None:
    """Stored batch `j` as results; None when it cannot be read (it is scored again)."""
    if store is None:
        return None
    try:
        parts = store.load(j)
    except (OSError, ValueError, KeyError):
        return None
    states = parts.get("states", {})
    return {
        i: ScoredItem(logps, torch.from_numpy(states[i]) if i in states else None)
        for i, logps in parts["logps"].items()
    }


class _Capture:
    """Each decoder layer's output at the batch's scored positions only (`positions`: row and column indices,
    set before each forward pass): a whole layer output per layer would hold layers x batch tokens x d_model
    until the batch is scored (21 GB for an 80-layer, 8k-wide model at the GPU's 16,384-token budget)."""

    def __init__(self) -> None:
        self.positions: tuple[torch.Tensor, torch.Tensor] | None = None
        self.states: list[torch.Tensor] = []

    def keep(self, _module, _inputs, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        assert self.positions is not None, "positions are set before each forward pass"
        rows, cols = (t.to(hidden.device) for t in self.positions)  # per layer: `device="shard"` spreads them
        self.states.append(hidden[rows, cols])

    def hooks(self, split: SplitModel) -> list:
        """Forward hooks on every decoder layer; the caller removes them."""
        if split.layers is None:
            raise ValueError(f"{type(split.causal_lm).__name__}: cannot find the decoder layers to capture")
        return [layer.register_forward_hook(self.keep) for layer in split.layers]


def _batch_inputs(rows: Sequence, attention_mask: bool, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Right-padded input ids of one batch's rows and the backbone's mask / position keyword arguments."""
    width = max(row.needed_length for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row.ids)] = torch.tensor(row.ids)
    if any(row.segments is not None for row in rows):
        kwargs = {
            "attention_mask": segment_mask(rows, width).to(device),
            "position_ids": row_position_ids(rows, width).to(device),
        }
    elif attention_mask:
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            mask[r, : len(row.ids)] = 1
        kwargs = {"attention_mask": mask.to(device)}
    else:
        kwargs = {}
    return ids.to(device), kwargs


def _score_batch(
    split: SplitModel,
    rows: Sequence,
    device: torch.device,
    attention_mask: bool,
    capture: _Capture | None,
    reduce_layers: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
) -> dict[int, ScoredItem]:
    """One forward pass over a batch of rows: each item's scored-token log-probs (and layer states)."""
    ids, kwargs = _batch_inputs(rows, attention_mask, device)
    scored = [(r,) + s for r, row in enumerate(rows) for s in row.scored]  # (row, item, slot, source, target)
    r_idx = torch.tensor([s[0] for s in scored], device=device)
    c_idx = torch.tensor([s[3] for s in scored], device=device)
    if capture is not None:
        capture.positions = (r_idx, c_idx)
    out = split.backbone(input_ids=ids, use_cache=False, **kwargs)
    hidden = out.last_hidden_state
    r_idx, c_idx = r_idx.to(hidden.device), c_idx.to(hidden.device)
    targets = torch.tensor([s[4] for s in scored], device=hidden.device)
    logps = logprobs_at(split, hidden[r_idx, c_idx], targets).numpy()
    layer_states = None
    if capture is not None:
        layer_states = torch.stack([h.float().cpu() for h in capture.states])
        capture.states.clear()
        if reduce_layers is not None:
            layer_states = reduce_layers(layer_states, targets.cpu())
    where: dict[int, list[int]] = {}
    for n, s in enumerate(scored):
        where.setdefault(s[1], []).append(n)  # slots come in order within an item
    results: dict[int, ScoredItem] = {}
    for i, picks in where.items():
        states = layer_states[:, picks] if layer_states is not None else None
        results[i] = ScoredItem(logps[picks].copy(), states)
    return results


@torch.no_grad()
def score_items(
    split: SplitModel,
    items: Sequence[ScoreItem],
    *,
    batch_size: int | None = None,
    max_batch_tokens: int | None | str = "auto",
    capture_layers: bool = False,
    attention_mask: bool = False,
    share_prefixes: bool = False,
    progress: bool = False,
    desc: str = "scoring",
    reduce_layers: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    distribute: bool = False,
    checkpoint: ScoreCheckpoint | None = None,
) -> list[ScoredItem]:
    """Score every item with one forward pass per batch; results come back in the items' order.

    A batch holds at most `batch_size` rows (None: by device, see DEFAULT_BATCH_ROWS) and `max_batch_tokens`
    padded tokens ("auto": by
    device, see DEFAULT_BATCH_TOKENS; None: no token limit); a row longer than the budget goes alone.
    `share_prefixes`: items with the same unscored context (the options of one question) share one
    row with a segment mask (see `specprobe.core.rows`): the context is encoded once.
    `capture_layers`: keep each decoder layer's output at the scored positions (`layer_states`).
    `reduce_layers(states, targets)`: called per batch with those states (n_layers, n, d_model) and
    the scored tokens' ids (n,), both on the CPU; its (k, n) result is kept instead (the logit lens:
    nothing holds every layer's residual stream for every item).
    `distribute`: under an initialised torch.distributed process group, each rank runs a share of
    the batches (whole batches, balanced by padded tokens) and every rank returns the whole result,
    bit-identical to one process's. A collective: every rank must call it with the same items and
    arguments. Leave it off for callers whose hooks must see every forward pass (patching).
    `checkpoint`: keep each finished batch there, and take those a killed run of the same items, models and
    options finished (see `specprobe.core.checkpoint`): log-probabilities and, with `reduce_layers`, the reduced
    rows; never whole layer states (`capture_layers` without `reduce_layers` is refused).
    """
    _check_options(batch_size, capture_layers, reduce_layers)
    if checkpoint is not None and capture_layers and reduce_layers is None:
        raise ValueError("a checkpoint keeps log-probabilities and reduced layer rows, not whole layer states")
    device = model_device(split)
    results: dict[int, ScoredItem] = {}
    all_rows = build_rows(items, share_prefixes)
    batches = plan_device_batches(all_rows, device, batch_size, max_batch_tokens)
    mine = list(range(len(batches)))
    rank, size = world() if distribute else (0, 1)
    if size > 1:
        mine = _rank_share(all_rows, batches, rank, size)
        desc = f"{desc} (rank 0 of {size})"
    n_mine = sum(len(all_rows[b].items) for j in mine for b in batches[j])
    store = None
    if checkpoint is not None:
        store = checkpoint.for_run(
            items, batches, share_prefixes=share_prefixes, attention_mask=attention_mask, layers=capture_layers
        )
    capture = _Capture() if capture_layers else None
    hooks = capture.hooks(split) if capture is not None else []
    try:
        bar = show_progress(n_mine, desc, "seq", enabled=progress and is_main())

        def run(j: int) -> dict[int, ScoredItem]:
            return _score_batch(
                split, [all_rows[b] for b in batches[j]], device, attention_mask, capture, reduce_layers
            )

        reusable = _reusable_batches(store, mine, run, _head_dtype(split)) if store is not None else {}
        for j in mine:
            part = reusable[j] if j in reusable else None
            if part is None and j in reusable:
                part = _load_batch(store, j)
            if part is None:
                part = run(j)
                if store is not None:
                    store.save(j, _parts(part))
            results.update(part)
            bar.update(sum(len(all_rows[b].items) for b in batches[j]))
        bar.close()
    finally:
        for h in hooks:
            h.remove()
    if size > 1:
        return all_gather_indexed(results, len(items))
    return [results[i] for i in range(len(items))]
