"""RL math as pure tensor functions, registered by name.

Shapes: B = number of samples (prompts × group size), T = response tokens.
`mask` is 1.0 on real response tokens and 0.0 on padding.
"""
from __future__ import annotations

import torch

from learners.registry import Registry

advantage_estimators: Registry = Registry("advantage estimator")
kl_estimators: Registry = Registry("KL estimator")


@advantage_estimators.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised outcome advantage (Shao et al. 2024): A_i = (r_i - mean_g) / (std_g + eps).

    rewards: [B]; group_ids: [B] (samples of one prompt share an id). Returns [B].
    std is the unbiased sample std of the group; a group with equal rewards gets 0.
    """
    adv = torch.zeros_like(rewards)
    for g in torch.unique(group_ids):
        sel = group_ids == g
        r = rewards[sel]
        std = r.std(unbiased=True) if r.numel() > 1 else torch.zeros((), dtype=r.dtype)
        adv[sel] = (r - r.mean()) / (std + eps)
    return adv


@advantage_estimators.register("rloo")
def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Leave-one-out baseline (Ahmadian et al. 2024): A_i = r_i - mean_{j≠i} r_j. [B] → [B]."""
    adv = torch.zeros_like(rewards)
    for g in torch.unique(group_ids):
        sel = group_ids == g
        r = rewards[sel]
        n = r.numel()
        adv[sel] = (r - (r.sum() - r) / (n - 1)) if n > 1 else torch.zeros_like(r)
    return adv


@kl_estimators.register("k1")
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log π/π_ref per token; unbiased, can be negative. [B, T] → [B, T]."""
    return logp - ref_logp


@kl_estimators.register("k3")
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = exp(ref - logp) - (ref - logp) - 1 per token; unbiased, always >= 0."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over all real tokens of the batch (token-level aggregation)."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017), averaged over tokens.

    logp, old_logp, mask: [B, T]; advantages: [B] (one per sample, broadcast over tokens).
    L = -mean_t min(ρ_t A, clip(ρ_t, 1-ε, 1+ε) A) with ρ_t = exp(logp - old_logp).
    """
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped < unclipped).float(), mask)
    return loss, {"clip_frac": clip_frac.detach(), "ratio_mean": masked_mean(ratio, mask).detach()}
