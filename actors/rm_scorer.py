"""RewardModelScorer actor: holds one reward model; logic in rewards.rm.scorer."""
from __future__ import annotations

import os

import ray

from rewards.rm.scorer import RMScorer
from rewards.types import RewardResult


@ray.remote
class RewardModelScorer:
    def __init__(self, model_dir: str, batch_size: int, threads: int = 1):
        self.label = f"rm-scorer[{os.path.basename(os.path.normpath(model_dir))}]"  # its repr, on the dashboard
        import torch

        torch.set_num_threads(threads)
        self.scorer = RMScorer(model_dir, batch_size)
        self.rows_done = 0

    def __repr__(self) -> str:
        return self.label

    def score(self, prompts: list[str], responses: list[str]) -> list[RewardResult]:
        out = self.scorer.score(prompts, responses)
        self.rows_done += len(out)
        return out

    def info(self) -> dict:
        return {"pid": os.getpid(), "rows_done": self.rows_done, "node": ray.get_runtime_context().get_node_id()}
