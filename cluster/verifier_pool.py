"""A resizable pool of Verifier actors; spreads rows across them and never loses a row."""
from __future__ import annotations

import itertools
from collections.abc import Callable


from actors.verifier import Verifier
from cluster.actor_pool import ActorPool
from cluster.placement import Placements
from rewards.code.sandbox import UID_BASE, UIDS_PER_SLOT
from rewards.types import ERROR, RewardResult
from rewards.verify import VerifySettings


class VerifierPool(ActorPool):
    """`size` actors × `slots` sandboxes each. Each actor gets its own uid range, so concurrent
    sandboxes on one node never share a uid."""

    def __init__(self, size: int, slots: int, settings: VerifySettings = VerifySettings(),
                 isolation: str = "auto", num_cpus: float = 0.25, max_retries: int = 2, pids_cgroup: bool = False,
                 placement: Placements | None = None):
        self.settings, self.slots, self.isolation, self.pids_cgroup = settings, slots, isolation, pids_cgroup
        self.num_cpus = num_cpus
        self._uid_blocks = itertools.count()
        where = (placement or Placements()).role("verifiers", num_cpus)
        super().__init__("verifier", self._spawn, size, where, max_retries)

    def _spawn(self, options: dict):
        uid_base = UID_BASE + self.slots * UIDS_PER_SLOT * next(self._uid_blocks)
        return Verifier.options(**options, max_concurrency=max(8, 2 * self.slots)).remote(
            self.settings, self.slots, self.isolation, uid_base, self.pids_cgroup)

    def verify(self, rows: list[dict], chunk: int = 4, on_done: Callable[[int], None] | None = None) -> list[dict]:
        """Verdicts in input order. A chunk whose actor dies is retried on another actor
        (at most `max_retries` times); after that its rows get status sandbox_error."""
        chunks = [list(range(i, min(i + chunk, len(rows)))) for i in range(0, len(rows), chunk)]
        got = self.run(lambda actor, idx: actor.verify.remote([rows[i] for i in idx]), chunks,
                       lambda idx, e: [_lost(rows[i], e) for i in idx], max(2, self.slots // chunk + 1), on_done)
        return [got[i] for i in range(len(rows))]

    def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        """Math rewards for a rollout batch: one chunk per actor (each checks its chunk in one child
        process); a chunk whose actor died is redone on a fresh one."""
        chunk = max(1, -(-len(responses) // len(self.actors)))
        chunks = [list(range(i, min(i + chunk, len(responses)))) for i in range(0, len(responses), chunk)]
        lost = lambda idx, e: [RewardResult(0.0, ERROR, {"error": f"verifier lost: {type(e).__name__}"})  # noqa: E731
                               for _ in idx]
        got = self.run(lambda actor, idx: actor.score.remote([responses[i] for i in idx], [answers[i] for i in idx]),
                       chunks, lost, in_flight=1)
        return [got[i] for i in range(len(responses))]


def _lost(row, err) -> dict:
    return {"id": row.get("id") if isinstance(row, dict) else None, "reward": 0.0, "passed": 0, "total": 0,
            "status": "sandbox_error", "cases": [], "elapsed_s": 0.0, "error": f"verifier lost: {type(err).__name__}"}
