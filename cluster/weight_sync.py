"""Weight sync strategies behind one interface; each sync can be checked by log-prob parity."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import ray

from cluster.actor_pool import ACTOR_LOST


class ParityError(RuntimeError):
    """A generator's log-probs on the probe differ from the learner's: its weights are wrong."""


class WeightSync(ABC):
    def __init__(self, learner, generators: list, probe_ids: list[int], tol: float,
                 dtype: str | None = None, reload: str = "inplace"):
        self.learner = learner
        self.dtype = dtype  # rollout.sync_dtype: None moves the learner's own precision
        self.reload = reload  # rollout.sync_reload
        self.nbytes = ray.get(learner.export_nbytes.remote(dtype))  # what each generator receives per sync
        self.generators = generators
        self.probe_ids = probe_ids
        self.tol = tol
        self.pending: list[tuple[int, list]] = []  # (version, the generators' load calls)
        self.seconds = 0.0
        self.heal = None  # heal(i): generator i died; replace it (it gets the current weights) and return it

    @abstractmethod
    def start(self, version: int) -> None:
        """Queue the learner's current weights, tagged `version`, on every generator (returns at once:
        a generator loads them after the calls already queued on it)."""

    def finish(self) -> None:
        """Wait until every queued load is done; `seconds` is how long this waited."""
        t0 = time.perf_counter()
        while self.pending:
            version, refs = self.pending.pop(0)
            versions = []
            for i, ref in enumerate(refs):
                try:
                    versions.append(ray.get(ref))
                except ACTOR_LOST:
                    if self.heal is None:
                        raise
                    self.heal(i)  # its replacement loaded the newest weights
                    versions.append(version)
            if any(v != version for v in versions):
                raise ParityError(f"generators report versions {versions}, expected {version}")
        self.seconds = time.perf_counter() - t0

    def push(self, version: int) -> None:
        """Make every generator hold the learner's current weights, tagged `version`, now."""
        self.start(version)
        self.finish()

    def check_parity(self, only: int | None = None) -> float:
        """Max |Δ log-prob| over generators (or generator `only`) and probe tokens; raises ParityError
        above `tol`."""
        expected = ray.get(self.learner.probe_logprobs.remote(self.probe_ids))
        ranks = range(len(self.generators)) if only is None else [only]
        got_all = self._probe(ranks)
        worst = 0.0
        for rank, got in zip(ranks, got_all):
            diff = max(abs(a - b) for a, b in zip(expected, got))
            worst = max(worst, diff)
            if diff > self.tol or len(got) != len(expected):
                raise ParityError(
                    f"generator {rank} disagrees with the learner on the probe sequence: "
                    f"max |Δ log-prob| = {diff:.2e} > tolerance {self.tol:.0e}; weights did not load correctly"
                )
        return worst


    def _probe(self, ranks) -> list:
        out, refs = [], [self.generators[rank].probe_logprobs.remote(self.probe_ids) for rank in ranks]
        for rank, ref in zip(ranks, refs):
            try:
                out.append(ray.get(ref))
            except ACTOR_LOST:
                if self.heal is None:
                    raise
                self.heal(rank)  # checks its replacement's parity itself
                out.append(ray.get(self.generators[rank].probe_logprobs.remote(self.probe_ids)))
        return out

    def load_one(self, rank: int, version: int) -> None:
        """Generator `rank` (a replacement) gets the learner's current weights now."""
        blob = self.learner.export.remote(self.dtype)
        ray.get(self.generators[rank].load_weights.remote(blob, version, self.reload))


class ObjectStoreSync(WeightSync):
    """The learner exports its weights once into the object store (a few flat buffers, see
    learners/weight_pack.py); each generator makes one call that loads them in place."""

    def start(self, version: int) -> None:
        self.seconds = 0.0
        blob = self.learner.export.remote(self.dtype)  # runs after the learner's queued update
        self.pending.append((version, [g.load_weights.remote(blob, version, self.reload) for g in self.generators]))


STRATEGIES = {"object_store": ObjectStoreSync}
