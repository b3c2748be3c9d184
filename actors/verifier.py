"""Verifier actor: runs up to `slots` sandboxed programs at once; logic in rewards.verify."""
from __future__ import annotations

import asyncio
import os

import ray

from rewards.math.answer import MathChecker
from rewards.code.sandbox import Sandbox
from rewards.types import RewardResult
from rewards.verify import VerifySettings, verify_row


@ray.remote
class Verifier:
    def __init__(self, settings: VerifySettings, slots: int, isolation: str, uid_base: int, pids_cgroup: bool = False):
        self.settings = settings
        self.sandbox = Sandbox(isolation, slots=slots, uid_base=uid_base, pids_cgroup=pids_cgroup)
        self.checker = MathChecker(timeout_s=settings.math_timeout_s)
        self.rows_done = 0

    async def verify(self, rows: list[dict]) -> list[dict]:
        """Rows run concurrently (bounded by the sandbox's slots); results in input order."""
        out = await asyncio.gather(*(asyncio.to_thread(verify_row, r, self.sandbox, self.checker, self.settings)
                                     for r in rows))
        self.rows_done += len(rows)
        return list(out)

    async def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        return await asyncio.to_thread(self.checker.score, responses, answers)

    async def info(self) -> dict:
        return {"mode": self.sandbox.mode, "pid": os.getpid(), "rows_done": self.rows_done,
                "node": ray.get_runtime_context().get_node_id()}
