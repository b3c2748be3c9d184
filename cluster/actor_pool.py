"""A resizable set of identical actors that runs chunks of work and never loses one: a chunk whose
actor died is retried on a fresh actor (at most `max_retries` times), then handed to `lost`. Where
the actors run is up to `place` (cluster/placement.py)."""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

from cluster.placement import RoleSlots

log = logging.getLogger("threefold.pool")
REPLACE_WAIT_S = 120.0
ACTOR_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)  # ObjectLostError: its node died with the result


class ActorPool:
    def __init__(self, name: str, spawn: Callable[[dict], object], size: int, place: RoleSlots,
                 max_retries: int = 2):
        """`spawn(options)` starts one actor with the Ray options `place` gives it."""
        self.name, self.spawn, self.place, self.max_retries = name, spawn, place, max_retries
        self.actors: list = []
        self.replaced = self.queue_peak = 0
        self._lock = threading.Lock()
        self.resize(size)

    def resize(self, size: int) -> None:
        """Grow or shrink between steps; in-flight work on removed actors is not affected."""
        if size < 1:
            raise ValueError(f"a {self.name} pool needs at least one actor")
        self.actors += self.place.add(max(0, size - len(self.actors)), self.spawn)
        for actor in self.actors[size:]:
            ray.kill(actor)
            self.place.drop(actor)
        self.actors = self.actors[:size]
        ray.get([a.info.remote() for a in self.actors])  # fail here, not mid-step, if an actor cannot start

    def shutdown(self) -> None:
        """Kill the actors and remove the pool's placement groups."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        self.place.close()

    def _replace(self, actor) -> None:
        """A fresh actor in the dead one's place, once it answers: when a node dies, its placement
        group bundles move to another node first, and a replacement started too early dies again.
        Shards of one step are scored from several threads: the first to see a death replaces the actor."""
        with self._lock:
            self._replace_locked(actor)

    def _replace_locked(self, actor) -> None:
        if actor not in self.actors:
            return
        slot = self.actors.index(actor)
        for attempt in range(1, 4):
            fresh = self.place.replace(actor, self.spawn)
            self.actors[slot] = fresh
            try:
                ray.get(fresh.info.remote(), timeout=REPLACE_WAIT_S)
                break
            except ACTOR_LOST + (GetTimeoutError,) as e:
                log.warning("%s replacement %d did not start (%s); trying again", self.name, attempt, type(e).__name__)
                actor = fresh
        self.replaced += 1

    def run(self, call: Callable[[object, list[int]], object], chunks: list[list[int]],
            lost: Callable[[list[int], Exception], list], in_flight: int = 2,
            on_done: Callable[[int], None] | None = None) -> dict[int, object]:
        """{item index: result}. `call(actor, idx)` returns an ObjectRef of one result per index."""
        results: dict[int, object] = {}
        pending: dict = {}
        queue = [(c, 0) for c in chunks if c]
        turn = itertools.count()
        self.queue_peak = 0  # items that waited for a free actor, at most (the dashboard's queue depth)
        while queue or pending:
            while queue and len(pending) < len(self.actors) * in_flight:
                idx, tries = queue.pop(0)
                actor = self.actors[next(turn) % len(self.actors)]
                pending[call(actor, idx)] = (idx, tries, actor)
            self.queue_peak = max(self.queue_peak, sum(len(c) for c, _ in queue))
            done, _ = ray.wait(list(pending), num_returns=1)
            idx, tries, actor = pending.pop(done[0])
            try:
                got = ray.get(done[0])
            except ACTOR_LOST + (RayTaskError,) as e:
                log.warning("%s actor failed on %d items (try %d): %s", self.name, len(idx), tries + 1,
                            type(e).__name__)
                self._replace(actor)
                if tries + 1 <= self.max_retries:
                    queue.append((idx, tries + 1))
                    continue
                got = lost(idx, e)
            results.update(zip(idx, got))
            if on_done:
                on_done(len(idx))
        return results
