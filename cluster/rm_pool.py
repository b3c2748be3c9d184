"""A resizable pool of RewardModelScorer actors: scores rollouts in batches, never loses a sample."""
from __future__ import annotations

from actors.rm_scorer import RewardModelScorer
from cluster.actor_pool import ActorPool
from cluster.placement import Placements
from rewards.types import ERROR, RewardResult


class RewardModelPool(ActorPool):
    """`size` scorers, each holding the reward model in `model_dir`, with `num_cpus` Ray CPUs (and
    `num_gpus` GPUs on a cluster). A batch is cut into chunks of `batch_size` samples spread over them."""

    def __init__(self, model_dir: str, size: int = 1, batch_size: int = 64, num_cpus: float = 0.25,
                 num_gpus: float = 0.0, threads: int = 1, max_retries: int = 2, placement: Placements | None = None):
        self.model_dir, self.batch_size, self.threads = model_dir, batch_size, threads
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        where = (placement or Placements()).role("reward_models", num_cpus, num_gpus)
        super().__init__("reward-model", self._spawn, size, where, max_retries)

    def _spawn(self, options: dict):
        return RewardModelScorer.options(**options).remote(
            self.model_dir, self.batch_size, self.threads)

    def score(self, prompts: list[str], responses: list[str]) -> list[RewardResult]:
        """One result per sample, in input order; a chunk whose scorer died is rescored on a fresh one."""
        n = len(prompts)
        chunk = max(1, min(self.batch_size, -(-n // len(self.actors))))
        chunks = [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
        lost = lambda idx, e: [RewardResult(0.0, ERROR, {"error": f"scorer lost: {type(e).__name__}"})  # noqa: E731
                               for _ in idx]
        got = self.run(lambda actor, idx: actor.score.remote([prompts[i] for i in idx], [responses[i] for i in idx]),
                       chunks, lost, in_flight=1)
        return [got[i] for i in range(n)]
