"""Attribution of the base -> tuned change: activation patching and direct logit attribution.

Activation patching ("denoise"): run the base model with one component's output (a layer's
attention output, MLP output, or the whole layer's output) replaced by the tuned model's output on
the same input, and report the fraction of the term's delta logp that the patch recovers:
(logp_patched - logp_base) / (logp_tuned - logp_base). "noise" is the reverse: the tuned model with
the base model's component, and the fraction of the delta that the patch removes:
(logp_tuned - logp_patched) / (logp_tuned - logp_base). The site `component="all"` patches every
attention and MLP output at once: with an adapter that leaves the embeddings and head alone (LoRA on
attention/MLP weights) it recovers the whole delta, which the tests check.

Cost: one capture pass per text and model (hooks record every component's output), then the
patched runs, batched: the text is repeated once per patch site and each batch row patches its own
site, so a text costs ceil(sites / site_batch) passes per direction, not one pass per site (with
positions="scored", that per occurrence: each patches only its own positions).
Inputs are cut after the last scored token, as everywhere in the scoring core.

Direct logit attribution: each component's contribution to the term token's logit (summed over
the term's tokens), base and tuned, through the final norm with its scale frozen at the value for
the model's own final residual (see `specprobe.probe.lens`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch

from specprobe.core.results import Result
from specprobe.core.scoring import ScoreItem, score_items
from specprobe.probe.hooks import (
    COMPONENTS,
    capture_input,
    capture_outputs,
    layer_modules,
    pair_depth,
    replace_outputs,
    replace_rows,
    resolve_layers,
    site_rows,
)
from specprobe.probe.inputs import DEFAULT_TEMPLATE, UNASSIGNED
from specprobe.probe.lens import direct_logit_attribution
from specprobe.probe.occurrences import MatchOptions
from specprobe.probe.options import ProbeOptions
from specprobe.probe.prepare import OCCURRENCE_COLUMNS, Prepared, load_pair, options_meta, prepare
from specprobe.probe.stats import cluster_bootstrap_mean
from specprobe.probe.tl_bridge import TL_ENGINE, bridged_pair, check_engine, engine_description

DIRECTIONS = ("denoise", "noise")
ALL = "all"


def _capture(split, mods, item: ScoreItem, layer_ids: Sequence[int], with_embed: bool = False):
    """One forward pass of `item`: its log-probs and every chosen component's full output (1, T, d)."""
    store: dict = {}
    named = {}
    for layer in range(len(mods)):
        for c in ("attn", "mlp", "layer"):
            named[(c, layer)] = mods[layer].get(c)
    with capture_outputs(named, store):
        if with_embed:
            with capture_input(mods[0].layer, store, "embed"):
                scored = score_items(split, [item], batch_size=1, max_batch_tokens=None)
        else:
            scored = score_items(split, [item], batch_size=1, max_batch_tokens=None)
    return scored[0].logps, store


def _sites(layer_ids: Sequence[int], components: Sequence[str]) -> list[tuple[int, str]]:
    return [(layer, c) for layer in layer_ids for c in components] + [(-1, ALL)]


def _patched_logps(
    split, mods, item: ScoreItem, sites: list[tuple[int, str]], donor: dict, cols: list[int], site_batch: int
) -> list[np.ndarray]:
    """Log-probs of `item` under `split` with each site's output replaced by the donor's at the positions
    `cols`, one row per site."""
    out: list[np.ndarray] = []
    for lo in range(0, len(sites), site_batch):
        chunk = sites[lo : lo + site_batch]
        patches = {}
        for key, rows in site_rows(chunk, len(mods)).items():
            module = mods[key[1]].get(key[0])
            src = donor[key][0]

            def fn(t, rows=rows, src=src, n=len(chunk)):
                if t.shape[0] != n:
                    raise RuntimeError(f"patching expected a batch of {n} copies of one text, got {t.shape[0]} rows")
                return replace_rows(t, rows, cols, src)

            patches[module] = fn
        with replace_outputs(patches):
            # identical items form one batch in their own order (plan_batches sorts stably by length)
            scored = score_items(split, [item] * len(chunk), batch_size=len(chunk), max_batch_tokens=None)
        out.extend(s.logps for s in scored)
    return out


class HookRunner:
    """Capture, patched and attribution passes with torch hooks on the pair's Hugging Face modules (the
    default engine); `specprobe.probe.tl_engine.TLRunner` does the same through TransformerLens."""

    def __init__(self, pair: Any):
        self.pair = pair

    def capture(self, variant: str, item: ScoreItem) -> tuple[np.ndarray, dict]:
        """The item's log-probs and every component's output (1, T, d) under `variant`."""
        with self.pair.view(variant) as split:
            mods = layer_modules(split)
            return _capture(split, mods, item, range(len(mods)))

    def patched(
        self, variant: str, item: ScoreItem, sites: list[tuple[int, str]], donor: dict, cols: list[int], site_batch: int
    ) -> list[np.ndarray]:
        with self.pair.view(variant) as split:
            return _patched_logps(split, layer_modules(split), item, sites, donor, cols, site_batch)

    def attribute(
        self, variant: str, item: ScoreItem, parts: list[tuple[int, str]], cols: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each part's direct contribution to the target logits (and the bias constant) under `variant`."""
        with self.pair.view(variant) as split:
            mods = layer_modules(split)
            logps, store = _capture(split, mods, item, range(len(mods)), with_embed=True)
            # what each part adds to the residual stream (Granite scales the outputs by residual_multiplier)
            outs = [store["embed"] if c == "embed" else store[(c, layer)] * mods[layer].scale for layer, c in parts]
            # each output where its layer ran (several GPUs when sharded), gathered on one device
            stack = torch.stack([o[0, cols.to(o.device)].to(store["embed"].device) for o in outs])
            return direct_logit_attribution(split, stack, targets, logps=logps)


def runner(pair: Any, engine: str, given: tuple[Any, ...]) -> Any:
    """The runner of `engine` ("hooks" or "transformer_lens") over the pair; `given`: the caller's model objects."""
    check_engine(engine)
    if engine == TL_ENGINE:
        from specprobe.probe.tl_engine import TLRunner

        return TLRunner(bridged_pair(pair, given))
    return HookRunner(pair)


class Patching(Result):
    """One row per occurrence x direction x patch site (layer, component)."""

    kind: ClassVar[str] = "patching"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = OCCURRENCE_COLUMNS + [
        "direction",
        "layer",
        "component",
        "logp_base",
        "logp_tuned",
        "logp_patched",
        "delta",
        "recovered",
    ]

    def by_site(
        self, *, by_specialty: bool = False, min_abs_delta: float = 0.0, n_boot: int = 2000, seed: int = 0
    ) -> pd.DataFrame:
        """Per direction and site (and specialty): pooled recovery sum(patched effect) / sum(delta), and the
        mean per-occurrence fraction with a 95% bootstrap CI over texts. Occurrences with
        |delta| <= min_abs_delta are left out (their fractions are noise). Clinical terms only, unless
        `by_specialty`, where control words are a row "control" of their own (never pooled with terms)."""
        df = self.to_pandas()
        df = df[np.isfinite(df["delta"].astype(float)) & (df["delta"].abs() > min_abs_delta)]
        keys = ["direction", "layer", "component"]
        if not by_specialty:
            df = cast(pd.DataFrame, df[~df["is_control"].astype(bool)])
        else:
            df = df.assign(
                specialty=[
                    ("control",) if c else (tuple(s) or (UNASSIGNED,))
                    for s, c in zip(df["specialties"], df["is_control"])
                ]
            ).explode("specialty")
            keys = ["specialty"] + keys
        rows = []
        for key, g in df.groupby(keys, sort=True):
            est = cluster_bootstrap_mean(g["recovered"], g["text_id"], n_boot=n_boot, seed=seed)
            delta = cast(pd.Series, g["delta"])
            effect = (g["recovered"] * delta).sum()
            rows.append(
                {
                    **dict(zip(keys, cast(tuple, key))),
                    "n": est.n,
                    "n_texts": est.n_clusters,
                    "pooled_recovered": float(effect / delta.sum()) if delta.sum() else math.nan,
                    "mean_recovered": est.mean,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                }
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        t = self.by_site(n_boot=200)
        if t.empty:
            return "no scored occurrences"
        return t.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def patch(
    base: Any,
    tuned: Any = None,
    terms: Any = None,
    texts: Any = None,
    *,
    layer_ids: Sequence[int] | int | None = None,
    components: Sequence[str] = COMPONENTS,
    directions: Sequence[str] = DIRECTIONS,
    positions: str = "all",
    site_batch: int = 16,
    controls: str | Sequence[str] | None = None,
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    options: ProbeOptions | None = None,
    engine: str = "hooks",
) -> Patching:
    """Activation patching of each layer's attention output, MLP output and layer output between base
    and tuned, for every occurrence compare() scores. `positions`: "all" patches every position of
    the input (up to the last scored token), "scored" only the positions that predict the occurrence's
    own tokens (not other occurrences' in the same text: a patched pass per occurrence).
    `options`: a `ProbeOptions` in place of the keyword arguments from `controls` to `seed` (note:
    without control words here by default, while a `ProbeOptions` defaults to controls="auto").
    `engine`: "hooks" (torch hooks on the Hugging Face modules, the default and fastest) or
    "transformer_lens" (TL hook points, `specprobe.probe.tl_engine`; the `tl` extra).
    Over 60 lines only because the public keyword signature and its `ProbeOptions.resolve` call take one
    line per argument; the work is in `_check_patch_args`, `_sites` and `_patch_item`."""
    opts = ProbeOptions.resolve(
        options,
        patch,
        controls=controls,
        n_controls=n_controls,
        template=template,
        match=match,
        add_bos=add_bos,
        max_length=max_length,
        long_texts=long_texts,
        device=device,
        dtype=dtype,
        tokenizer=tokenizer,
        progress=progress,
        seed=seed,
    )
    from specprobe.utils.progress import track

    _check_patch_args(components, directions, positions, site_batch)
    check_engine(engine)
    pair = load_pair(base, tuned, opts.tokenizer, opts.device, opts.dtype)
    n_layers = pair_depth(pair)
    chosen = resolve_layers(layer_ids, n_layers)
    run = runner(pair, engine, (base, tuned))
    prep = prepare(pair, terms, texts, opts)
    sites = _sites(chosen, list(components))
    t0 = time.perf_counter()
    passes = 0
    rows = []
    for item_i, ois in track(
        sorted(prep.by_item().items()), len(prep.by_item()), "patching", "item", enabled=opts.progress
    ):
        item_rows, item_passes = _patch_item(run, prep, item_i, ois, sites, directions, positions, site_batch)
        rows += item_rows
        passes += item_passes
    meta = dict(pair.metadata)
    meta.update(options_meta(prep))
    meta.update(
        {
            "n_layers": n_layers,
            "layers": chosen,
            "components": list(components),
            "directions": list(directions),
            "positions": positions,
            "site_batch": site_batch,
            "engine": engine_description(engine),
            "cost": {
                "forward_passes": passes,
                "items": len(prep.by_item()),
                "sites": len(sites),
                "seconds": round(time.perf_counter() - t0, 4),
            },
        }
    )
    return Patching(pd.DataFrame(rows, columns=Patching.columns), meta)


def _check_patch_args(components: Sequence[str], directions: Sequence[str], positions: str, site_batch: int) -> None:
    bad = [c for c in components if c not in COMPONENTS]
    if bad:
        raise ValueError(f"components must be among {COMPONENTS}, got {bad}")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"directions must be among {DIRECTIONS}, got {bad}")
    if positions not in ("all", "scored"):
        raise ValueError(f"positions must be 'all' or 'scored', got {positions!r}")
    if site_batch < 1:
        raise ValueError(f"site_batch must be >= 1, got {site_batch}")


def _patch_item(
    run: Any,
    prep: Prepared,
    item_i: int,
    ois: list[int],
    sites: list[tuple[int, str]],
    directions: Sequence[str],
    positions: str,
    site_batch: int,
) -> tuple[list[dict], int]:
    """One item's rows (occurrence x direction x site) and the forward passes they took."""
    item = prep.items[item_i]
    passes = 0
    logps, stores = {}, {}
    for variant in ("base", "tuned"):
        logps[variant], stores[variant] = run.capture(variant, item)
        passes += 1
    groups = _patch_groups(prep, item, ois, positions)
    rows = []
    for direction in directions:
        receiver, donor = ("base", "tuned") if direction == "denoise" else ("tuned", "base")
        patched: dict[int, list[np.ndarray]] = {}
        for cols, group in groups:
            out = run.patched(receiver, item, sites, stores[donor], cols, site_batch)
            patched.update((oi, out) for oi in group)
            passes += math.ceil(len(sites) / site_batch)
        for oi in ois:
            slots = prep.where[oi][1]
            lb, lt = float(logps["base"][slots].sum()), float(logps["tuned"][slots].sum())
            delta = lt - lb
            for (layer, comp), lp in zip(sites, patched[oi]):
                lpp = float(lp[slots].sum())
                effect = (lpp - lb) if direction == "denoise" else (lt - lpp)
                rows.append(
                    {
                        **prep.occurrence_row(oi),
                        "direction": direction,
                        "layer": layer,
                        "component": comp,
                        "logp_base": lb,
                        "logp_tuned": lt,
                        "logp_patched": lpp,
                        "delta": delta,
                        "recovered": effect / delta if delta != 0 else math.nan,
                    }
                )
    return rows, passes


def _patch_groups(prep: Prepared, item: ScoreItem, ois: list[int], positions: str) -> list[tuple[list[int], list[int]]]:
    """The patched passes an item needs: (positions patched, occurrences read off them).

    "all": one set, every position of the input. "scored": each occurrence's own positions (those that
    predict its tokens), one set per distinct span: an item holds every occurrence of its text (other
    terms, control words), and patching their positions too would change this occurrence's result
    through attention, so it would depend on which other terms were asked for."""
    if positions == "all":
        return [(list(range(item.needed_length)), list(ois))]
    groups: dict[tuple[int, ...], list[int]] = {}
    for oi in ois:
        cols = tuple(sorted({item.positions[s] - 1 for s in prep.where[oi][1]}))
        groups.setdefault(cols, []).append(oi)
    return [(list(cols), group) for cols, group in groups.items()]


class LogitAttribution(Result):
    """Direct logit attribution: one row per occurrence x model x part (embed, each layer's attention
    and MLP, and the constant from the norm's and head's biases), summed over the term's tokens."""

    kind: ClassVar[str] = "logit_attribution"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = OCCURRENCE_COLUMNS + ["model", "layer", "component", "contribution"]

    def delta(self) -> pd.DataFrame:
        """Per occurrence and part: contribution_base, contribution_tuned and their difference."""
        df = self.to_pandas()
        keys = ["text_id", "term", "start", "is_control", "layer", "component"]
        b = df[df["model"] == "base"].drop(columns=["model"])
        t = cast(pd.DataFrame, df[df["model"] == "tuned"][keys + ["contribution"]])
        out = b.merge(t, on=keys, suffixes=("_base", "_tuned"), validate="one_to_one")
        out["delta"] = out["contribution_tuned"] - out["contribution_base"]
        return out

    def by_specialty(self, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per specialty and part: mean change (tuned - base) of the contribution, 95% CI over texts."""
        d = self.delta()
        d["specialty"] = [
            ("control",) if c else (tuple(s) or (UNASSIGNED,)) for s, c in zip(d["specialties"], d["is_control"])
        ]
        d = d.explode("specialty")
        rows = []
        for key, g in d.groupby(["specialty", "layer", "component"], sort=True):
            spec, layer, comp = cast(tuple, key)
            est = cluster_bootstrap_mean(g["delta"], g["text_id"], n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "specialty": spec,
                    "layer": layer,
                    "component": comp,
                    "n": est.n,
                    "n_texts": est.n_clusters,
                    "mean_base": g["contribution_base"].mean(),
                    "mean_tuned": g["contribution_tuned"].mean(),
                    "mean_delta": est.mean,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                }
            )
        return pd.DataFrame(rows)


def logit_attribution(
    base: Any,
    tuned: Any = None,
    terms: Any = None,
    texts: Any = None,
    *,
    controls: str | Sequence[str] | None = None,
    n_controls: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    match: MatchOptions = MatchOptions(),
    add_bos: bool | None = None,
    max_length: int | None = None,
    long_texts: str = "window",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    seed: int = 0,
    options: ProbeOptions | None = None,
    engine: str = "hooks",
) -> LogitAttribution:
    """Each component's direct contribution to the term tokens' logits, base and tuned (frozen final-norm
    scale; the parts plus the bias constant add up to the model's logit, checked per text). `options`:
    a `ProbeOptions` in place of the keyword arguments from `controls` to `seed` (note: without control
    words here by default, while a `ProbeOptions` defaults to controls="auto"). `engine`: as `patch`. Over 60 lines only
    because the public keyword signature and its `ProbeOptions.resolve` call take one line per argument;
    the per-text work is in `_attribute_item`."""
    opts = ProbeOptions.resolve(
        options,
        logit_attribution,
        controls=controls,
        n_controls=n_controls,
        template=template,
        match=match,
        add_bos=add_bos,
        max_length=max_length,
        long_texts=long_texts,
        device=device,
        dtype=dtype,
        tokenizer=tokenizer,
        progress=progress,
        seed=seed,
    )
    from specprobe.utils.progress import track

    check_engine(engine)
    pair = load_pair(base, tuned, opts.tokenizer, opts.device, opts.dtype)
    _warn_processed_weights(pair)
    n_layers = pair_depth(pair)
    run = runner(pair, engine, (base, tuned))
    prep = prepare(pair, terms, texts, opts)
    parts = [(-1, "embed")] + [(layer, c) for layer in range(n_layers) for c in ("attn", "mlp")]
    rows = []
    t0 = time.perf_counter()
    for item_i, ois in track(
        sorted(prep.by_item().items()), len(prep.by_item()), "attribution", "item", enabled=opts.progress
    ):
        rows += _attribute_item(run, prep, item_i, ois, parts)
    meta = dict(pair.metadata)
    meta.update(options_meta(prep))
    meta.update(
        {
            "n_layers": n_layers,
            "final_norm_scale": "frozen at the value for the model's own final residual",
            "engine": engine_description(engine),
            "cost": {"forward_passes": 2 * len(prep.by_item()), "seconds": round(time.perf_counter() - t0, 4)},
        }
    )
    return LogitAttribution(pd.DataFrame(rows, columns=LogitAttribution.columns), meta)


def _warn_processed_weights(pair: Any) -> None:
    """Warn when TransformerLens weight processing rewrote a model's weights: center_unembed shifts each
    position's logits (log-probs keep), so every part's contribution differs from the Hugging Face model's."""
    roles = [r for r, info in pair.metadata.get("engines", {}).items() if info.get("weights_processed")]
    if roles:
        warnings.warn(
            "logit_attribution: TransformerLens weight processing (fold_ln / center_writing_weights / "
            f"center_unembed) rewrote the weights of the {' and '.join(roles)} model: contributions are to the "
            "processed logits, not the Hugging Face model's; pass unprocessed models to compare with other runs",
            UserWarning,
            stacklevel=3,
        )


def _attribute_item(run: Any, prep: Prepared, item_i: int, ois: list[int], parts: list[tuple[int, str]]) -> list[dict]:
    """One item's rows: per occurrence, model and part, its contribution summed over the term's tokens."""
    item = prep.items[item_i]
    cols = torch.tensor([p - 1 for p in item.positions])
    targets = torch.tensor([item.ids[p] for p in item.positions])
    rows = []
    for variant in ("base", "tuned"):
        contrib, const = run.attribute(variant, item, parts, cols, targets)
        for oi in ois:
            slots = prep.where[oi][1]
            occ = prep.occurrence_row(oi)
            for k, (layer, c) in enumerate(parts):
                rows.append(
                    {
                        **occ,
                        "model": variant,
                        "layer": layer,
                        "component": c,
                        "contribution": float(contrib[k, slots].sum()),
                    }
                )
            rows.append(
                {**occ, "model": variant, "layer": -1, "component": "bias", "contribution": float(const[slots].sum())}
            )
    return rows
