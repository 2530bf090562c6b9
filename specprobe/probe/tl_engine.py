"""The layer views through TransformerLens hook points (`engine="transformer_lens"`).

Same inputs (the `Prepared` items of `compare`), same read-out arithmetic, different capture: the
residual streams and component outputs come from a `TransformerBridge` over the pair's own weights
(`specprobe.probe.tl_bridge`) instead of torch hooks on the Hugging Face modules.

- Logit lens: `run_with_cache` per batch (right padding, no mask, as the scoring core), then
  `ActivationCache.accumulated_resid` (block k's output is entry k + 1), read through the model's
  own final norm with fresh statistics and its head (`specprobe.probe.lens.lens_logprobs`); TL's
  `apply_ln=True` is not used because it reuses the last layer's norm scale for earlier layers.
- Patching: the donor's `hook_attn_out` / `hook_mlp_out` / `hook_resid_post` from `run_with_cache`,
  written into the receiver with `run_with_hooks`, one batch row per patch site.
- Direct logit attribution: `blocks.0.hook_resid_pre` (the embedding) and every block's
  `hook_attn_out` and `hook_mlp_out`, through `specprobe.probe.lens.direct_logit_attribution`.

It agrees with the default engine within float error (tests/test_tl_engine.py) and is slower: the
bridge computes full-vocabulary logits and fires every hook point it wraps. It runs in one process
(no data-parallel share of the batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from specprobe.core.architecture import SplitModel
from specprobe.core.items import ScoreItem
from specprobe.core.scoring import logprobs_at, plan_device_batches
from specprobe.probe.hooks import replace_rows, site_rows
from specprobe.probe.lens import direct_logit_attribution, lens_logprobs
from specprobe.probe.tl_bridge import BridgedPair

#: TL hook point of each patch site / component, by layer
HOOK_OF = {"attn": "blocks.{}.hook_attn_out", "mlp": "blocks.{}.hook_mlp_out", "layer": "blocks.{}.hook_resid_post"}
EMBED_HOOK = "blocks.0.hook_resid_pre"


def _padded(items: Sequence[ScoreItem], device: torch.device) -> torch.Tensor:
    """Right-padded ids of the items, each cut after its last scored token."""
    width = max(item.needed_length for item in items)
    ids = torch.zeros((len(items), width), dtype=torch.long)
    for r, item in enumerate(items):
        ids[r, : item.needed_length] = torch.tensor(item.ids[: item.needed_length])
    return ids.to(device)


def _scored(items: Sequence[ScoreItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Batch rows, source columns (p - 1), target ids and the number of positions of each item."""
    rows = [r for r, item in enumerate(items) for _ in item.positions]
    cols = [p - 1 for item in items for p in item.positions]
    targets = [item.ids[p] for item in items for p in item.positions]
    return torch.tensor(rows), torch.tensor(cols), torch.tensor(targets), [len(item.positions) for item in items]


@torch.no_grad()
def lens_items(
    bridged: BridgedPair,
    variant: str,
    items: Sequence[ScoreItem],
    chosen: list[int],
    batch_size: int | None,
    progress: bool,
) -> list[np.ndarray]:
    """Per item, the (n_chosen, n_positions) lens log-probabilities under `variant`, as
    `specprobe.probe.layers._lens_items` gives them, from TL's accumulated residual stream."""
    from specprobe.utils.progress import track

    out: list[np.ndarray] = [np.zeros(0)] * len(items)
    device = bridged.pair.device
    batches = plan_device_batches(items, device, batch_size)
    with bridged.view(variant) as (split, bridge):
        n = bridge.cfg.n_layers
        names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
        for batch in track(batches, len(batches), f"lens {variant} (TransformerLens)", "batch", enabled=progress):
            group = [items[i] for i in batch]
            _, cache = bridge.run_with_cache(_padded(group, device), names_filter=names, return_type=None)
            acc = cache.accumulated_resid(apply_ln=False)  # (n + 1, batch, pos, d)
            rows, cols, targets, counts = _scored(group)
            states = acc[[k + 1 for k in chosen]][:, rows.to(acc.device), cols.to(acc.device)].float().cpu()
            lens = lens_logprobs(split, states, targets).numpy()
            for i, part in zip(batch, np.split(lens, np.cumsum(counts)[:-1], axis=1)):
                out[i] = part
    return out


def _logps(split: SplitModel, final: torch.Tensor, item: ScoreItem) -> np.ndarray:
    """log p of the item's scored tokens from the last block's output (T, d): final norm, head, log-softmax."""
    cols = torch.tensor([p - 1 for p in item.positions], device=final.device)
    targets = torch.tensor([item.ids[p] for p in item.positions])
    return logprobs_at(split, split.normed(final[cols]), targets).numpy()


class TLRunner:
    """Patching and attribution passes through a bridge: the TL counterpart of the hook runner in
    `specprobe.probe.patching` (same store keys: ("attn" | "mlp" | "layer", layer) and "embed")."""

    def __init__(self, bridged: BridgedPair):
        self.bridged = bridged
        self.n_layers = bridged.n_layers

    def _capture(self, split: SplitModel, bridge: Any, item: ScoreItem) -> tuple[np.ndarray, dict]:
        names: dict[str, Any] = {HOOK_OF[c].format(k): (c, k) for k in range(self.n_layers) for c in HOOK_OF}
        names[EMBED_HOOK] = "embed"
        ids = _padded([item], self.bridged.pair.device)
        _, cache = bridge.run_with_cache(ids, names_filter=list(names), return_type=None)
        store = {key: cache[name].detach().clone() for name, key in names.items()}
        return _logps(split, store[("layer", self.n_layers - 1)][0], item), store

    @torch.no_grad()
    def capture(self, variant: str, item: ScoreItem) -> tuple[np.ndarray, dict]:
        """The item's log-probs and every component's output (1, T, d) under `variant`."""
        with self.bridged.view(variant) as (split, bridge):
            return self._capture(split, bridge, item)

    @torch.no_grad()
    def patched(
        self, variant: str, item: ScoreItem, sites: list[tuple[int, str]], donor: dict, cols: list[int], site_batch: int
    ) -> list[np.ndarray]:
        """Log-probs of `item` under `variant` with each site's output replaced by the donor's at the positions
        `cols`, one row per site."""
        ids = _padded([item], self.bridged.pair.device)
        out: list[np.ndarray] = []
        with self.bridged.view(variant) as (split, bridge):
            for lo in range(0, len(sites), site_batch):
                chunk = sites[lo : lo + site_batch]
                hooks: list[tuple[str, Any]] = [
                    (HOOK_OF[c].format(k), partial(_patch_hook, rows=rows, cols=cols, src=donor[(c, k)][0]))
                    for (c, k), rows in site_rows(chunk, self.n_layers).items()
                ]
                final: dict[str, torch.Tensor] = {}
                hooks.append((HOOK_OF["layer"].format(self.n_layers - 1), partial(_keep, store=final)))
                bridge.run_with_hooks(ids.expand(len(chunk), -1), fwd_hooks=hooks, return_type=None)
                out.extend(_logps(split, final["h"][r], item) for r in range(len(chunk)))
        return out

    @torch.no_grad()
    def attribute(
        self, variant: str, item: ScoreItem, parts: list[tuple[int, str]], cols: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each part's direct contribution to the target logits (and the bias constant) under `variant`."""
        with self.bridged.view(variant) as (split, bridge):
            logps, store = self._capture(split, bridge, item)
            outs = [store["embed"] if c == "embed" else store[(c, k)] for k, c in parts]
            stack = torch.stack([o[0, cols.to(o.device)] for o in outs])
            return direct_logit_attribution(split, stack, targets, logps=logps)


def _patch_hook(t: torch.Tensor, hook: Any, rows: list[int], cols: list[int], src: torch.Tensor) -> torch.Tensor:
    return replace_rows(t, rows, cols, src)


def _keep(t: torch.Tensor, hook: Any, store: dict) -> None:
    store["h"] = t.detach().clone()
