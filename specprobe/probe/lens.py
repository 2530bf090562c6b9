"""Logit-lens and direct-logit-attribution arithmetic on gathered residual-stream rows.

Logit lens: a layer's residual stream goes through the model's *own* final norm, with fresh
statistics for every row and layer (not the last layer's cached scale, cf. TransformerLens #1076),
then the head and a float32 log-softmax (`logprobs_at`). At the last layer this is exactly what
the model does, so the lens there equals `compare`'s log-probability.

Direct logit attribution: the final residual h = embed + sum of attention and MLP outputs. With the
final norm's scale frozen at its value for h (1/sigma for LayerNorm, 1/rms for RMSNorm; the norm's
kind, gain offset and bias are matched against its own output), the norm is linear, and token t's logit splits exactly into one term per part plus the norm's and head's
biases. Frozen scale is the standard convention (TransformerLens `apply_ln_to_stack`); it says
what each part writes along the token's direction, not what would happen without it.

`lens_frame` and `LayerView` are the lens's table and result, filled alike by the local engine
(`specprobe.probe.layers`) and the nnsight one (`specprobe.probe.remote`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from specprobe.core.architecture import SplitModel, UnsupportedArchitectureError
from specprobe.core.lora_fold import linear_weight
from specprobe.core.results import Result
from specprobe.core.scoring import logprobs_at
from specprobe.probe.hooks import tolerance
from specprobe.probe.inputs import UNASSIGNED
from specprobe.probe.prepare import OCCURRENCE_COLUMNS, Prepared
from specprobe.probe.stats import cluster_bootstrap_mean

# rows moved to the model's device and normed at once (bounds device memory for long runs)
LENS_ROWS = 4096


@torch.no_grad()
def lens_logprobs(split: SplitModel, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) read off each layer: `states` (n_layers, n, d) before the final norm -> (n_layers, n).

    Each row goes through the model's own final norm (`SplitModel.normed`: fresh statistics per row, so
    per layer; then OPT's `project_out` where there is one) and head (with the model's logit scaling
    and soft-capping); `specprobe.probe.hooks.layer_modules` checked on load that this reproduces the
    model's logits from the last layer's output."""
    ref = split.causal_lm.get_output_embeddings().weight
    n_layers, n, d = states.shape
    if n_layers == 0 or n == 0:
        return torch.zeros((n_layers, n), dtype=torch.float64)
    # all layers' rows through the head together: the (vocab x d) weight is read once per chunk of
    # rows, not once per layer and text (the norm is per row, so stacking changes nothing)
    flat, flat_targets = states.reshape(n_layers * n, d), targets.repeat(n_layers)
    out = []
    for lo in range(0, flat.shape[0], LENS_ROWS):
        normed = split.normed(flat[lo : lo + LENS_ROWS].to(device=ref.device, dtype=ref.dtype))
        out.append(logprobs_at(split, normed, flat_targets[lo : lo + LENS_ROWS].to(ref.device)))
    return torch.cat(out).reshape(n_layers, n)


def _norm_eps(norm: nn.Module) -> list[float]:
    out = [
        float(v)
        for a in ("eps", "variance_epsilon", "epsilon", "layer_norm_eps")
        if isinstance(v := getattr(norm, a, None), (int, float))
    ]
    return out or [1e-5, 1e-6]


@torch.no_grad()
def _norm_parts(norm: nn.Module, h: torch.Tensor) -> tuple[bool, torch.Tensor | None, torch.Tensor | None, float]:
    """(centers, gain, bias, eps) of a final norm y = gain * (x - [mean x]) / sqrt(mean(.^2) + eps) + bias,
    read off the module's parameters and matched against its output on the rows `h`: LayerNorm, RMSNorm,
    Gemma's (1 + weight) RMSNorm, Cohere's bias-free LayerNorm, OLMo's parameter-free LayerNorm."""
    name = type(norm).__name__
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    weight = weight if isinstance(weight, torch.Tensor) else None
    bias = bias if isinstance(bias, torch.Tensor) else None
    out = norm(h.to(weight.dtype if weight is not None else h.dtype))
    ref = out.double()
    x64 = h.double().to(ref.device)
    gains: list[torch.Tensor | None] = [weight.double(), 1.0 + weight.double()] if weight is not None else [None]
    centers = (False, True) if "rms" in name.lower() else (True, False)
    best, best_err = None, float("inf")
    for center in centers:
        x = x64 - x64.mean(-1, keepdim=True) if center else x64
        for eps in _norm_eps(norm):
            y = x * (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
            for g in gains:
                z = y * g.to(ref.device) if g is not None else y
                if bias is not None:
                    z = z + bias.double().to(ref.device)
                err = (z - ref).abs().max().item() if len(ref) else 0.0
                if err < best_err:
                    best, best_err = (center, g, bias, eps), err
    # the norm ran in its own dtype: a 16-bit norm's output is off by its rounding
    if best is None or not best_err <= (tolerance(out) if len(ref) else 1e-4):
        raise UnsupportedArchitectureError(
            f"final norm {name}: direct logit attribution knows LayerNorm- and RMSNorm-like norms (gain, optional "
            f"bias, optional +1 gain offset); this one does not match them (off by {best_err:.3g})"
        )
    return best


@torch.no_grad()
def _linear(module: nn.Module, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`linear_weight` of a module the attribution must read as a matrix, or why it cannot."""
    try:
        weight, bias = linear_weight(module)
    except ValueError as exc:
        raise UnsupportedArchitectureError(f"direct logit attribution needs {what} as a linear map: {exc}") from None
    return weight.detach(), None if bias is None else bias.detach()  # trainable copies carry requires_grad


@torch.no_grad()
def direct_logit_attribution(
    split: SplitModel,
    parts: torch.Tensor,
    targets: torch.Tensor,
    check_atol: float = 1e-3,
    logps: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contributions of `parts` (k, n, d), which sum to the final residual rows, to each row's target logit.

    Returns (contributions (k, n), bias (n,)) in float64: the norm's bias and the head's bias on the
    target. Their sum equals the model's logit for the target (checked), including its logit scaling
    (Cohere, Granite); with soft-capping (Gemma 2) the logit before the cap. `logps` (n,): the targets'
    log-probs from the model's own forward pass; given, the parts' sum must reproduce them (checked:
    parts that miss a residual write, or another model's, do not).
    """
    head = split.causal_lm.get_output_embeddings()
    head_w, head_bias = _linear(head, "the head")  # the tuned head where an adapter changes it
    w = head_w.double()[targets.to(head_w.device)]  # (n, d_out)
    x = parts.double().to(w.device)
    h = x.sum(0)
    const = torch.zeros(h.shape[0], dtype=torch.float64, device=w.device)
    proj = split.final_proj
    if proj is not None:  # a linear map after the norm (OPT's project_out) folds into the unembedding
        pw, pb = _linear(proj, "the projection after the final norm")
        if isinstance(pb, torch.Tensor):
            const = const + (pb.double().to(w.device) * w).sum(-1)
        w = w @ pw.double().to(w.device)  # (n, d)
    if split.final_norm is not None:
        center, gain, bias, eps = _norm_parts(split.final_norm, h)
        if center:
            x = x - x.mean(-1, keepdim=True)
            hc = h - h.mean(-1, keepdim=True)
        else:
            hc = h
        scale = (hc.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        g = gain.double().to(w.device) if gain is not None else torch.ones_like(h[0])
        contrib = ((x * scale) * g * w).sum(-1)  # (k, n)
        if bias is not None:
            const = const + (bias.double().to(w.device) * w).sum(-1)
    else:
        contrib = (x * w).sum(-1)
    if isinstance(head_bias, torch.Tensor):
        const = const + head_bias.double()[targets.to(head_bias.device)].to(w.device)
    contrib, const = contrib * split.logit_scale, const * split.logit_scale
    # the parts must add up to the model's own logit: catches components that are not residual writes
    normed = split.normed(h.to(head_w.dtype))
    raw = split.raw_logits(normed).gather(1, targets.to(normed.device)[:, None]).squeeze(1)
    logit = raw.double()
    err = (contrib.sum(0) + const - logit.to(w.device)).abs().max().item() if len(logit) else 0.0
    limit = max(check_atol * max(1.0, logit.abs().max().item()), tolerance(raw)) if len(logit) else check_atol
    if not err <= limit:  # a 16-bit model's own logit is off by its rounding
        raise UnsupportedArchitectureError(
            f"{type(split.causal_lm).__name__}: direct logit attribution does not add up to the logit "
            f"(off by {err:.3g}); this architecture's layers do not write to the residual stream as assumed"
        )
    if logps is not None:
        _check_parts_give_the_output(split, normed, targets, logps)
    return contrib.cpu(), const.cpu()


def _check_parts_give_the_output(split: SplitModel, normed: torch.Tensor, targets: torch.Tensor, logps: Any) -> None:
    """The targets' log-probs read from the sum of the parts equal the model's own (`logps`), within the
    model's rounding: the parts are the whole final residual stream, not a part of it."""
    own = torch.as_tensor(np.asarray(logps, dtype=np.float64))
    if not len(own):
        return
    err = (logprobs_at(split, normed, targets) - own).abs().max().item()
    limit = 1e-3 if normed.dtype in (torch.float32, torch.float64) else 0.1  # 16-bit: summed in another order
    if not err <= limit:
        raise UnsupportedArchitectureError(
            f"{type(split.causal_lm).__name__}: the attributed parts do not add up to the model's final residual "
            f"stream (target log-probs off by {err:.3g}); a residual write is missing from them"
        )


class LayerView(Result):
    """Logit lens: one row per occurrence x layer x model ("base"/"tuned").

    `logp` is the term's log-probability (summed over its tokens) when that layer's residual stream
    is read through the final norm and unembedding; at the last layer it is compare()'s logp.
    """

    kind: ClassVar[str] = "layers"
    tuple_columns: ClassVar[tuple[str, ...]] = ("specialties",)
    columns: ClassVar[list[str]] = OCCURRENCE_COLUMNS + ["layer", "model", "logp", "logp_per_token", "token_logp"]

    @property
    def n_layers(self) -> int:
        return int(self.metadata.get("n_layers", 0))

    def wide(self) -> pd.DataFrame:
        """One row per occurrence x layer with logp_base, logp_tuned and delta columns."""
        df = self.to_pandas()
        keys = ["text_id", "term", "start", "is_control", "layer"]
        cols = ["logp", "logp_per_token"]
        base = df[df["model"] == "base"].drop(columns=["model", "token_logp"])
        tuned = cast(pd.DataFrame, df[df["model"] == "tuned"][keys + cols])
        out = base.merge(tuned, on=keys, how="outer", suffixes=("_base", "_tuned"), validate="one_to_one")
        out["delta"] = out["logp_tuned"] - out["logp_base"]
        out["delta_per_token"] = out["logp_per_token_tuned"] - out["logp_per_token_base"]
        return out.reset_index(drop=True)

    def by_specialty(self, metric: str = "logp_per_token", *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per specialty (controls pooled as "control"), layer and model ("base", "tuned", "delta"):
        mean with a 95% bootstrap CI that resamples texts."""
        if metric not in ("logp", "logp_per_token"):
            raise ValueError(f"metric must be 'logp' or 'logp_per_token', got {metric!r}")
        w = self.wide()
        w = cast(pd.DataFrame, w[np.isfinite(w[f"{metric}_base"].astype(float))])
        w["specialty"] = [
            ("control",) if c else (tuple(s) or (UNASSIGNED,)) for s, c in zip(w["specialties"], w["is_control"])
        ]
        w = w.explode("specialty")
        delta_col = "delta" if metric == "logp" else "delta_per_token"
        rows = []
        for key, g in w.groupby(["specialty", "layer"], sort=True):
            spec, layer = cast(tuple, key)
            for model, col in (("base", f"{metric}_base"), ("tuned", f"{metric}_tuned"), ("delta", delta_col)):
                est = cluster_bootstrap_mean(g[col], g["text_id"], n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        "specialty": spec,
                        "layer": int(layer),
                        "model": model,
                        "n": est.n,
                        "n_texts": est.n_clusters,
                        "mean": est.mean,
                        "ci_low": est.ci_low,
                        "ci_high": est.ci_high,
                    }
                )
        return pd.DataFrame(rows, columns=["specialty", "layer", "model", "n", "n_texts", "mean", "ci_low", "ci_high"])

    def summary(self, metric: str = "logp_per_token") -> str:
        t = self.by_specialty(metric, n_boot=500)
        if t.empty:
            return "no scored occurrences"
        piv = t.pivot_table(index=["specialty", "layer"], columns="model", values="mean").reset_index()
        return piv.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def lens_frame(prep: Prepared, chosen: list[int], lens: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """Rows occurrence x layer x model from per-item (n_layers, n_positions) lens log-probabilities."""
    rows = []
    for oi, occ in enumerate(prep.occs):
        base_row = prep.occurrence_row(oi)
        item_i, slots = prep.where[oi]
        for variant in ("base", "tuned"):
            for k, layer in enumerate(chosen):
                if item_i >= 0:
                    tok = lens[variant][item_i][k, slots]
                    lp = float(tok.sum())
                    per = lp / occ.n_tokens
                    toks = [float(x) for x in tok]
                else:
                    lp = per = math.nan
                    toks = []
                rows.append(
                    {
                        **base_row,
                        "layer": layer,
                        "model": variant,
                        "logp": lp,
                        "logp_per_token": per,
                        "token_logp": toks,
                    }
                )
    return pd.DataFrame(rows, columns=LayerView.columns)
