"""Verifier actor: runs up to `slots` sandboxed programs at once; logic in rewards.verify."""
from __future__ import annotations

import ray

from rewards.types import RewardResult
from rewards.verify import VerifierCore, VerifySettings


@ray.remote
class Verifier:
    def __init__(self, settings: VerifySettings, slots: int, isolation: str, uid_base: int, pids_cgroup: bool = False):
        self.label = f"verifier[uids {uid_base}+]"  # its repr: what the dashboard and log lines show
        self.core = VerifierCore(settings, slots, isolation, uid_base, pids_cgroup)

    def __repr__(self) -> str:
        return self.label

    async def verify(self, rows: list[dict]) -> list[dict]:
        """Rows run concurrently (bounded by the sandbox's slots); results in input order."""
        return await self.core.verify(rows)

    async def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        return await self.core.score(responses, answers)

    async def info(self) -> dict:
        return {**self.core.info(), "node": ray.get_runtime_context().get_node_id()}
