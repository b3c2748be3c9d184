"""Weight sync strategies behind one interface; each sync can be checked by log-prob parity."""
from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod

import ray

from cluster.actor_pool import ACTOR_LOST


class ParityError(RuntimeError):
    """A generator's log-probs on the probe differ from the learner's: its weights are wrong."""


class WeightSync(ABC):
    def __init__(self, learner, generators: list, probe_ids: list[int], tol: float,
                 dtype: str | None = None, reload: str = "inplace", max_staleness: int = 0):
        self.learner = learner
        self.dtype = dtype  # rollout.sync_dtype: None moves the learner's own precision
        self.reload = reload  # rollout.sync_reload
        self.max_staleness = max_staleness  # loads a generator may have queued: up to max_staleness + 1
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


class BroadcastSync(WeightSync):
    """The learner and every engine worker of the generators form a process group of their own
    (learners/weight_transport.py; gloo, or NCCL when the learner's weights are on a GPU); each sync
    the learner snapshots its weights and broadcasts the buckets in the background, and each generator
    makes one call that receives and loads them. Only their layout goes through Ray."""

    GROUP_TIMEOUT_S = 300.0  # a rank that stops answering fails the sync after this long

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.formed = 0  # groups formed so far (again after a generator was replaced)
        self.run_id = uuid.uuid4().hex[:8]

    def form(self) -> None:
        workers = ray.get([g.engine_workers.remote() for g in self.generators])
        address = ray.get(self.learner.address.remote())
        backend = ray.get(self.learner.weights_backend.remote())
        world, name = 1 + sum(workers), f"{self.run_id}/{self.formed}"
        refs, base = [self.learner.open_weight_group.remote(address, world, backend, name, self.GROUP_TIMEOUT_S)], 1
        for g, n in zip(self.generators, workers):
            refs.append(g.join_weight_group.remote(address, base, world, backend, name, self.GROUP_TIMEOUT_S))
            base += n
        ray.get(refs)
        self.formed += 1
        self.members = self._members()

    def _members(self) -> list:
        return [g._actor_id for g in self.generators] + [self.learner._actor_id]

    def start(self, version: int) -> None:
        self.seconds = 0.0
        if not self.formed or self.members != self._members():  # first sync, or a replaced generator or learner
            self.form()
        plan = self.learner.broadcast_weights.remote(self.dtype)  # after the learner's queued update
        self.pending.append((version, [g.receive_weights.remote(plan, version, self.reload) for g in self.generators]))


class CudaIpcSync(WeightSync):
    """For engines on the learner's GPU: the learner snapshots its weights on the GPU and hands out CUDA
    IPC handles (a few hundred bytes through Ray); each generator copies straight from that memory.
    A generator has at most max_staleness + 1 loads queued, so the learner keeps a ring of
    max_staleness + 2 snapshots (learners/weight_transport.py::IpcExporter)."""

    def start(self, version: int) -> None:
        self.seconds = 0.0
        exported = self.learner.ipc_weights.remote(self.dtype, self.max_staleness + 2)  # after the learner's queued update
        self.pending.append((version, [g.load_ipc.remote(exported, version, self.reload) for g in self.generators]))


STRATEGIES = {"object_store": ObjectStoreSync, "broadcast": BroadcastSync, "cuda_ipc": CudaIpcSync}
