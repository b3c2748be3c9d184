"""The `algorithm:` section of a run config: the RL estimator, PPO clipping, KL to the reference,
the critic and DAPO's shaping. Re-exported by cluster/config.py."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cluster.config_base import Section


class KLConfig(Section):
    estimator: Literal["k1", "k2", "k3"] | None = None
    """Per-token KL estimator to the frozen reference: k1 = log π/π_ref, k2 = ½(log π/π_ref)², k3 = Schulman's. Default: k1 in the reward (its score-function gradient is the KL's), k3 as a loss term."""
    coef: float = Field(0.01, ge=0.0)
    """β, the KL weight (the start value when `target` makes it adaptive)."""
    in_reward: bool | None = None
    """True: −β·KL_t is part of every token's reward (classic RLHF); False: β·KL is a loss term. Default: True for ppo and reinforce_pp, else False."""
    target: float | None = Field(None, gt=0.0)
    """Adaptive β (Ziegler et al. 2019): steer the per-token KL towards this value; None keeps β fixed."""
    horizon: int = Field(10000, ge=1)
    """Samples over which the adaptive controller may change β by at most ±20 %."""


class CriticConfig(Section):
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """Critic AdamW learning rate (ppo only)."""
    warmup_steps: int = Field(0, ge=0)
    """Updates that train only the critic before the policy starts moving (ppo only)."""
    value_clip: float | None = Field(0.2, gt=0.0)
    """Clip the new value to old ± this in the value loss; None turns value clipping off (ppo only)."""
    model_dir: Path | None = None
    """Initialise the critic from this directory (a saved critic); default: the policy with a fresh head (ppo only)."""
    gamma: float = Field(1.0, gt=0.0, le=1.0)
    """Discount γ for GAE (ppo) and REINFORCE++ returns."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE λ (ppo only)."""
    normalize_advantages: bool = True
    """Whiten GAE advantages over the batch (ppo only)."""


class DynamicSamplingConfig(Section):
    enabled: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts to fill the batch."""
    max_rounds: int = Field(3, ge=0, le=32)
    """Extra sampling rounds at most per step; the step trains on what it has after them."""


class OverlongConfig(Section):
    buffer: int = Field(0, ge=0)
    """DAPO soft overlong penalty: responses longer than max_new_tokens − buffer lose up to `penalty`; 0 = off."""
    penalty: float = Field(1.0, ge=0.0)
    """Penalty at the length limit."""


class AlgorithmConfig(Section):
    name: Literal["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp"] = "grpo"
    """ppo (critic + GAE), grpo, dr_grpo (no std division, constant-length normaliser), rloo, reinforce_pp."""
    clip_low: float = Field(0.2, gt=0.0, lt=1.0)
    """PPO clip range below: the ratio is clipped at 1 − clip_low."""
    clip_high: float = Field(0.2, gt=0.0, lt=10.0)
    """PPO clip range above: 1 + clip_high (DAPO clip-higher: larger than clip_low)."""
    dual_clip: float | None = Field(None, gt=1.0)
    """Dual-clip c (Ye et al. 2020): for negative advantages the loss is at most −c·A; None = off."""
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] | None = None
    """Loss aggregation; default seq_mean_token_sum_norm for dr_grpo, token_mean otherwise."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (0 = none)."""
    tis_cap: float | None = Field(None, gt=0.0)
    """Truncated importance sampling: recompute the learner's log-probs of fresh rollouts and weight each token by min(π_learner/π_vLLM, cap); None = off."""
    kl: KLConfig = KLConfig()
    critic: CriticConfig = CriticConfig()
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    overlong: OverlongConfig = OverlongConfig()

    @model_validator(mode="after")
    def _fields_fit_the_algorithm(self) -> "AlgorithmConfig":
        if self.name != "ppo":
            extra = sorted(k for k in self.critic.model_fields_set if k != "gamma")
            if extra:
                raise ValueError(f"algorithm.critic.{extra[0]} applies to ppo only; remove it or set algorithm.name: ppo")
        return self

    def aggregation(self) -> str:
        return self.loss_agg or ("seq_mean_token_sum_norm" if self.name == "dr_grpo" else "token_mean")

    def kl_in_reward(self) -> bool:
        return self.kl.in_reward if self.kl.in_reward is not None else self.name in ("ppo", "reinforce_pp")

    def kl_estimator(self) -> str:
        return self.kl.estimator or ("k1" if self.kl_in_reward() else "k3")
