"""A resizable pool of Verifier actors; spreads rows across them and never loses a row."""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from actors.verifier import Verifier
from rewards.sandbox import UID_BASE, UIDS_PER_SLOT
from rewards.types import RewardResult
from rewards.verify import VerifySettings

log = logging.getLogger("threefold.verifier_pool")
ACTOR_LOST = (RayActorError, WorkerCrashedError)


class VerifierPool:
    """`size` actors × `slots` sandboxes each. Each actor gets its own uid range, so concurrent
    sandboxes on one node never share a uid."""

    def __init__(self, size: int, slots: int, settings: VerifySettings = VerifySettings(),
                 isolation: str = "auto", num_cpus: float = 0.25, max_retries: int = 2, pids_cgroup: bool = False):
        self.settings, self.slots, self.isolation, self.pids_cgroup = settings, slots, isolation, pids_cgroup
        self.num_cpus, self.max_retries = num_cpus, max_retries
        self._uid_blocks = itertools.count()
        self.actors: list = []
        self.resize(size)

    def _spawn(self):
        uid_base = UID_BASE + self.slots * UIDS_PER_SLOT * next(self._uid_blocks)
        return Verifier.options(num_cpus=self.num_cpus, max_concurrency=max(8, 2 * self.slots)).remote(
            self.settings, self.slots, self.isolation, uid_base, self.pids_cgroup)

    def resize(self, size: int) -> None:
        """Grow or shrink between steps; in-flight work on removed actors is not affected."""
        if size < 1:
            raise ValueError("a verifier pool needs at least one actor")
        while len(self.actors) < size:
            self.actors.append(self._spawn())
        for actor in self.actors[size:]:
            ray.kill(actor)
        self.actors = self.actors[:size]
        ray.get([a.info.remote() for a in self.actors])  # fail here, not mid-step, if an actor cannot start

    def _replace(self, actor) -> None:
        if actor in self.actors:
            self.actors[self.actors.index(actor)] = self._spawn()

    def verify(self, rows: list[dict], chunk: int = 4, on_done: Callable[[int], None] | None = None) -> list[dict]:
        """Verdicts in input order. A chunk whose actor dies is retried on another actor
        (at most `max_retries` times); after that its rows get status sandbox_error."""
        chunks = [list(range(i, min(i + chunk, len(rows)))) for i in range(0, len(rows), chunk)]
        results: list[dict | None] = [None] * len(rows)
        pending = {}
        queue = [(c, 0) for c in chunks]
        turn = itertools.count()
        while queue or pending:
            while queue and len(pending) < len(self.actors) * max(2, self.slots // chunk + 1):
                idx, tries = queue.pop(0)
                actor = self.actors[next(turn) % len(self.actors)]
                pending[actor.verify.remote([rows[i] for i in idx])] = (idx, tries, actor)
            done, _ = ray.wait(list(pending), num_returns=1)
            idx, tries, actor = pending.pop(done[0])
            try:
                for i, res in zip(idx, ray.get(done[0])):
                    results[i] = res
                if on_done:
                    on_done(len(idx))
            except ACTOR_LOST + (RayTaskError,) as e:
                log.warning("verifier actor failed on %d rows (try %d): %s", len(idx), tries + 1, type(e).__name__)
                self._replace(actor)
                if tries + 1 <= self.max_retries:
                    queue.append((idx, tries + 1))
                else:
                    for i in idx:
                        results[i] = _lost(rows[i], e)
                    if on_done:
                        on_done(len(idx))
        return results  # type: ignore[return-value]

    def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        """Math rewards for a rollout batch, split evenly across the actors."""
        n = len(self.actors)
        parts = [(responses[i::n], answers[i::n]) for i in range(n)]
        got = ray.get([a.score.remote(r, a_) for a, (r, a_) in zip(self.actors, parts) if r])
        out: list[RewardResult] = [None] * len(responses)  # type: ignore[list-item]
        for i, part in enumerate(got):
            out[i::n] = part
        return out


def _lost(row, err) -> dict:
    return {"id": row.get("id") if isinstance(row, dict) else None, "reward": 0.0, "passed": 0, "total": 0,
            "status": "sandbox_error", "cases": [], "elapsed_s": 0.0, "error": f"verifier lost: {type(err).__name__}"}
