"""KL estimators, loss aggregation, the clipped policy loss and the value loss: pure tensor functions.

Shapes: B samples, T token positions; `mask` [B, T] is 1.0 on response tokens. Aggregation takes
the normalisers of the whole (mini)batch in `Norm`, so summing the losses of micro-batches gives
exactly the loss of the batch (gradient accumulation changes nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from learners.registry import Registry

kl_estimators: Registry = Registry("KL estimator")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


@kl_estimators.register("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log π − log π_ref per token: unbiased, can be negative. [B, T] → [B, T]."""
    return logp - ref_logp


@kl_estimators.register("k2")
def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """½ (log π − log π_ref)²: biased, low variance, ≥ 0; its gradient is that of KL to first order."""
    return 0.5 * (logp - ref_logp) ** 2


@kl_estimators.register("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = e^{ref − logp} − (ref − logp) − 1: unbiased, always ≥ 0."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


@dataclass(frozen=True)
class Norm:
    """Normalisers of the whole batch a loss is averaged over."""

    tokens: float  # response tokens in the batch
    seqs: float  # samples in the batch
    max_len: float  # Dr. GRPO's constant length (the generation limit)

    @staticmethod
    def of(mask: torch.Tensor, max_len: int) -> "Norm":
        return Norm(float(mask.sum().clamp(min=1.0)), float(max(mask.shape[0], 1)), float(max_len))


def aggregate(x: torch.Tensor, mask: torch.Tensor, mode: str, norm: Norm) -> torch.Tensor:
    """`token_mean`: Σ x·m / tokens. `seq_mean_token_mean`: Σ_b (Σ_t x·m / Σ_t m) / seqs.
    `seq_mean_token_sum_norm` (Dr. GRPO): Σ x·m / (seqs · max_len). [B, T] → scalar."""
    if mode == "token_mean":
        return (x * mask).sum() / norm.tokens
    if mode == "seq_mean_token_mean":
        return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / norm.seqs
    if mode == "seq_mean_token_sum_norm":
        return (x * mask).sum() / (norm.seqs * norm.max_len)
    raise KeyError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGGREGATIONS)}")


@dataclass(frozen=True)
class Clip:
    low: float = 0.2  # ρ ≥ 1 − low
    high: float = 0.2  # ρ ≤ 1 + high (DAPO clip-higher: high > low)
    dual: float | None = None  # dual-clip c > 1: for A < 0 the loss is at most −c·A


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: Clip, agg: str, norm: Norm, weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017) per token, aggregated.

    ρ = exp(logp − old_logp); l = max(−A·ρ, −A·clip(ρ, 1 − low, 1 + high)); with dual-clip
    (Ye et al. 2020) l = min(l, −c·A) where A < 0. `weights` (detached, e.g. truncated importance
    weights) multiply l per token. logp, old_logp, advantages, mask: [B, T]."""
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip.low, 1.0 + clip.high)
    loss = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(loss, dtype=torch.bool)
    if clip.dual is not None:
        cap = -advantages * clip.dual
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
    if weights is not None:
        loss = loss * weights
    with torch.no_grad():
        stats = {"clip_frac_low": _frac((clipped > unclipped) & (ratio < 1.0), mask),
                 "clip_frac_high": _frac((clipped > unclipped) & (ratio > 1.0), mask),
                 "dual_clip_frac": _frac(dual, mask), "ratio_mean": (ratio * mask).sum() / mask.sum().clamp(min=1)}
    return aggregate(loss, mask, agg, norm), stats


def _frac(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (flags.float() * mask).sum() / mask.sum().clamp(min=1.0)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None, agg: str, norm: Norm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """½·max((V − R)², (clip(V, V_old ± c) − R)²) per token (no clipping when `clip` is None)."""
    loss = (values - returns) ** 2
    clipped_frac = values.new_zeros(())
    if clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        clipped_loss = (v_clipped - returns) ** 2
        clipped_frac = _frac(clipped_loss > loss, mask).detach()
        loss = torch.maximum(loss, clipped_loss)
    return 0.5 * aggregate(loss, mask, agg, norm), {"value_clip_frac": clipped_frac}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the masked tokens: 1 is a perfect critic, ≤ 0 a useless one."""
    n = mask.sum().clamp(min=2.0)

    def var(x):
        mean = (x * mask).sum() / n
        return (((x - mean) * mask) ** 2).sum() / (n - 1)

    var_r = var(returns)
    return float(1.0 - var(returns - values) / var_r) if var_r > 0 else 0.0
