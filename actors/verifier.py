"""MathVerifier actor: scores responses against reference answers (logic in rewards.math_answer)."""
from __future__ import annotations

import ray

from rewards.math_answer import MathChecker
from rewards.types import RewardResult


@ray.remote
class MathVerifier:
    def __init__(self, timeout_s: float):
        self.checker = MathChecker(timeout_s=timeout_s)

    def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        return self.checker.score(responses, answers)
