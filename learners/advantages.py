"""Advantage estimators, registered by name: `ppo` (GAE with a critic), `grpo`, `dr_grpo`, `rloo`,
`reinforce_pp`. Each takes an `AdvantageInputs` and returns (advantages [B, T], returns [B, T] or None).

Shapes: B samples (prompts × group size), T token positions; `mask` is 1.0 on response tokens.
`token_rewards[b, t]` is the reward received at token t: the task score on the sample's last
response token, plus −β·KL_t on every response token when the KL penalty lives in the reward.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

import torch

from learners.registry import Registry

estimators: Registry = Registry("algorithm")


@dataclass
class AdvantageInputs:
    token_rewards: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    group_ids: torch.Tensor  # [B]
    values: torch.Tensor | None = None  # [B, T], critic's V(s_t) (ppo only)
    gamma: float = 1.0
    lam: float = 0.95
    normalize: bool = True  # whiten ppo advantages over the batch
    eps: float = 1e-6
    total: Callable[[torch.Tensor], torch.Tensor] | None = None  # sums over data-parallel ranks (learners/distributed.py)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6,
                  total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x − mean) / std over the masked entries (unbiased std); padding stays 0. `total` sums the
    statistics over every rank's part of the batch."""
    total = total or (lambda v: v)
    n, s = total(torch.stack([mask.sum(), (x * mask).sum()]))
    n = n.clamp(min=1.0)
    mean = s / n
    var = total((((x - mean) * mask) ** 2).sum()) / (n - 1).clamp(min=1.0)
    return (x - mean) / (var.sqrt() + eps) * mask


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), vectorised over the batch.

    δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t;  A_t = δ_t + γλ·m_{t+1}·A_{t+1};  R_t = A_t + V_t.
    After a sample's last response token the episode has ended (m_{t+1} = 0), so nothing flows
    back from padding. Returns (A, R), both [B, T] and 0 off the mask."""
    B, T = token_rewards.shape
    adv = torch.zeros_like(token_rewards)
    next_adv = token_rewards.new_zeros(B)
    next_value = token_rewards.new_zeros(B)
    next_mask = token_rewards.new_zeros(B)
    for t in reversed(range(T)):
        delta = token_rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_adv = delta + gamma * lam * next_mask * next_adv
        adv[:, t] = next_adv * mask[:, t]
        next_value, next_mask = values[:, t], mask[:, t]
        next_adv = adv[:, t]
    return adv, (adv + values) * mask


@estimators.register("ppo")
def ppo_advantages(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if x.values is None:
        raise ValueError("ppo needs the critic's values")
    adv, returns = gae(x.token_rewards, x.values, x.mask, x.gamma, x.lam)
    return (masked_whiten(adv, x.mask, x.eps, x.total) if x.normalize else adv), returns


def _per_group(scores: torch.Tensor, group_ids: torch.Tensor, fn) -> torch.Tensor:
    out = torch.zeros_like(scores)
    for g in torch.unique(group_ids):
        sel = group_ids == g
        out[sel] = fn(scores[sel])
    return out


def sequence_scores(x: AdvantageInputs) -> torch.Tensor:
    """Each sample's total reward (its score, plus the KL penalty when that is in the reward). [B]"""
    return (x.token_rewards * x.mask).sum(-1)


def _broadcast(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return adv.unsqueeze(-1) * mask


@estimators.register("grpo")
def grpo_advantages(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    """Group-normalised outcome advantage (Shao et al. 2024): (r − mean_g) / (std_g + ε), unbiased std;
    a group whose rewards are all equal gets 0."""
    def norm(r):
        std = r.std(unbiased=True) if r.numel() > 1 else r.new_zeros(())
        return (r - r.mean()) / (std + x.eps)
    return _broadcast(_per_group(sequence_scores(x), x.group_ids, norm), x.mask), None


@estimators.register("dr_grpo")
def dr_grpo_advantages(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    """Dr. GRPO (Liu et al. 2025): r − mean_g, no division by the group's std."""
    return _broadcast(_per_group(sequence_scores(x), x.group_ids, lambda r: r - r.mean()), x.mask), None


@estimators.register("rloo")
def rloo_advantages(x: AdvantageInputs) -> tuple[torch.Tensor, None]:
    """Leave-one-out baseline (Ahmadian et al. 2024): r_i − mean_{j≠i} r_j."""
    def loo(r):
        n = r.numel()
        return r - (r.sum() - r) / (n - 1) if n > 1 else torch.zeros_like(r)
    return _broadcast(_per_group(sequence_scores(x), x.group_ids, loo), x.mask), None


@estimators.register("reinforce_pp")
def reinforce_pp_advantages(x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): per-token return G_t = Σ_{k≥t} γ^{k−t} r_k (the KL penalty is in
    r_k), whitened over every response token of the batch; no critic, no groups."""
    returns = discounted_returns(x.token_rewards, x.mask, x.gamma)
    return masked_whiten(returns, x.mask, x.eps, x.total), returns


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    out = torch.zeros_like(token_rewards)
    running = token_rewards.new_zeros(token_rewards.shape[0])
    for t in reversed(range(token_rewards.shape[1])):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t]
        out[:, t] = running
    return out
