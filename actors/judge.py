"""JudgeActor: an async Ray actor holding a JudgeEnsemble (logic in rewards.judge.ensemble); the pool
that spreads work over several is cluster.judge_pool.JudgePool."""
from __future__ import annotations

import ray

from rewards.judge.ensemble import JudgeEnsemble, PairVerdict
from rewards.judge.config import EnsembleConfig
from rewards.judge.metrics import JudgeStats
from rewards.judge.reward import group_rewards, pointwise_rewards, reference_rewards
from rewards.types import RewardResult

REWARDS = {"reference": reference_rewards, "group": group_rewards, "pointwise": pointwise_rewards}


@ray.remote
class JudgeActor:
    def __init__(self, config: EnsembleConfig, share: int):
        self.label = f"judges[{', '.join(j.name for j in config.judges)}]"  # its repr, on the dashboard
        self.ens = JudgeEnsemble(config, share)

    def __repr__(self) -> str:
        return self.label

    def set_share(self, share: int) -> None:
        self.ens.set_share(share)

    async def judge_pairs(self, rows: list[tuple[str, str, str]]) -> list[PairVerdict]:
        return await self.ens.judge_pairs(rows)

    async def rewards(self, kind: str, *columns: list) -> list[RewardResult]:
        return await REWARDS[kind](self.ens, *columns)

    def stats(self) -> dict[str, JudgeStats]:
        return self.ens.stats

    def take_stats(self) -> dict[str, JudgeStats]:
        """The counts since the last take (the actor starts counting again from zero)."""
        return {name: st.take() for name, st in self.ens.stats.items()}

    def breaker_states(self) -> dict[str, str]:
        return self.ens.breaker_states()
