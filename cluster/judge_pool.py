"""JudgePool: spreads judging over JudgeActors (actors.judge). Sized from the judges config
(`pool.size`), resizable between steps, and independent of the verifier pool.

Each actor gets max_concurrency // size of every judge's limit, so the pool as a whole keeps
each endpoint within its configured requests in flight (at least one per actor).
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

import ray
from ray.exceptions import RayActorError

from actors.judge import REWARDS, JudgeActor
from cluster.placement import Placements
from rewards.judge.ensemble import PairVerdict, summarise
from rewards.judge.config import EnsembleConfig
from rewards.judge.metrics import JudgeStats
from rewards.judge.vote import ABSTAIN, Vote
from rewards.types import ERROR, RewardResult

log = logging.getLogger("threefold.judge_pool")


def _shards(n_items: int, n_actors: int) -> list[range]:
    """Contiguous, near-equal, non-empty index ranges."""
    k = min(n_items, n_actors)
    bounds = [round(i * n_items / k) for i in range(k + 1)] if k else [0]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


class JudgePool:
    """`size` JudgeActors (default: config.pool.size), each with `config.pool.num_cpus` Ray CPUs."""

    def __init__(self, config: EnsembleConfig, size: int | None = None, placement: Placements | None = None):
        self.config = config
        self.place = (placement or Placements()).role("judges", config.pool.num_cpus)
        self.actors: list = []
        self._pending: dict[str, JudgeStats] = {}  # counts of actors removed since the last step_stats
        self._taken: dict[str, JudgeStats] = {}  # counts already handed out by step_stats
        self._lock = threading.Lock()  # shards of one step are scored from several threads
        self._successor: dict = {}  # dead actor → the one that took its place
        self.resize(size or config.pool.size)

    @property
    def size(self) -> int:
        return len(self.actors)

    def _spawn(self, options: dict, share: int):
        return JudgeActor.options(**options).remote(self.config, share)

    def resize(self, size: int) -> None:
        """Grow or shrink between steps; a removed actor's metrics are kept in the pool's totals."""
        if size < 1:
            raise ValueError(f"a judge pool needs at least one actor, got size={size}")
        for actor in self.actors[size:]:
            self._retire(actor)
        self.actors = self.actors[:size]
        self.actors += self.place.add(size - len(self.actors), lambda o: self._spawn(o, size))
        ray.get([a.set_share.remote(size) for a in self.actors])

    def _retire(self, actor) -> None:
        try:
            self._pending = _merge(self._pending, ray.get(actor.stats.remote()))
        except RayActorError:
            pass  # its counts died with it
        ray.kill(actor)
        self.place.drop(actor)

    def _call(self, method: str, lead: tuple, columns: Sequence[list], shards: list[list[int]]) -> list:
        """Run `method(*lead, *shard columns)` on each shard (one per actor); results in input order.
        A shard whose actor died is retried once on a fresh actor; then its items get `None`."""
        out: list = [None] * sum(len(s) for s in shards)
        calls = []
        for actor, idx in zip(self.actors, shards):
            args = (*lead, *[[col[i] for i in idx] for col in columns])
            calls.append((getattr(actor, method).remote(*args), actor, idx, args))
        for ref, actor, idx, args in calls:
            got = self._get_or_retry(ref, actor, method, args)
            for i, item in zip(idx, got or [None] * len(idx)):
                out[i] = item
        return out

    def _get_or_retry(self, ref, actor, method: str, args: tuple) -> list | None:
        try:
            return ray.get(ref)
        except RayActorError as e:
            log.warning("judge actor lost (%s); retrying its share on a new actor", type(e).__name__)
            fresh = self._fresh(actor)
            try:
                return ray.get(getattr(fresh, method).remote(*args))
            except RayActorError:
                return None

    def _fresh(self, actor):
        """The live actor in a dead one's slot: a new one, or the one another thread (scoring another
        shard of the same step) already put there."""
        with self._lock:
            if actor in self.actors:
                fresh = self.place.replace(actor, lambda o: self._spawn(o, self.size))
                self.actors[self.actors.index(actor)] = fresh
                self._successor[actor] = fresh
            return self._successor[actor]

    def judge_pairs(self, rows: Sequence[tuple[str, str, str]]) -> list[PairVerdict]:
        """Ensemble verdicts for (prompt, response_a, response_b) rows, in input order."""
        shards = [list(r) for r in _shards(len(rows), self.size)]
        got = self._call("judge_pairs", (), [list(rows)], shards)
        lost = PairVerdict(ABSTAIN, None, (Vote("pool", 0.0, ABSTAIN, reason="judge actor lost"),))
        return [v if v is not None else lost for v in got]

    def rewards(self, kind: str, prompts: Sequence, responses: Sequence,
                third: Sequence | None = None) -> list[RewardResult]:
        """kind "reference" (third = reference responses), "group" (third = group ids; a group stays
        on one actor) or "pointwise" (no third column). See rewards.judge_reward."""
        if kind not in REWARDS:
            raise ValueError(f"unknown judge reward kind {kind!r}; use one of: {', '.join(REWARDS)}")
        columns = [list(prompts), list(responses)] + ([list(third)] if kind != "pointwise" else [])
        if kind == "group":
            groups: dict = {}
            for i, g in enumerate(third):
                groups.setdefault(g, []).append(i)
            members = list(groups.values())
            shards = [sum((members[j] for j in r), []) for r in _shards(len(members), self.size)]
        else:
            shards = [list(r) for r in _shards(len(prompts), self.size)]
        got = self._call("rewards", (kind,), columns, shards) if len(prompts) else []
        lost = RewardResult(0.0, ERROR, {"error": "judge actor lost"})
        return [r if r is not None else lost for r in got]

    def stats(self) -> dict[str, JudgeStats]:
        """Raw per-judge counts since the pool started, over the live actors and the ones removed by resize."""
        merged = _merge(self._taken, self._pending)
        for s in ray.get([a.stats.remote() for a in self.actors]):
            merged = _merge(merged, s)
        return merged

    def step_stats(self) -> dict[str, JudgeStats]:
        """Raw per-judge counts since the previous call (one training step's worth)."""
        got, self._pending = self._pending, {}
        for s in ray.get([a.take_stats.remote() for a in self.actors]):
            got = _merge(got, s)
        self._taken = _merge(self._taken, got)
        return got

    def metrics(self) -> dict[str, dict]:
        return summarise(self.config, self.stats())

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        self.place.close()


def _merge(a: dict[str, JudgeStats], b: dict[str, JudgeStats]) -> dict[str, JudgeStats]:
    return {k: a.get(k, JudgeStats()).merge(b.get(k, JudgeStats())) for k in {*a, *b}}
