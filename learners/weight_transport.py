"""Weight transports that bypass Ray's object store (rollout.sync_transport):

- broadcast: the learner (rank 0) and every engine worker of the generators form one process group
  of their own (gloo on CPU, NCCL on GPU), separate from any group they already belong to; each
  sync broadcasts the export buckets (learners/weight_pack.py) from rank 0.
- cuda_ipc: for an engine on the learner's GPU, the learner hands out CUDA IPC handles of its
  export buckets and the engine copies straight from the learner's memory.

Either way a receiver gets the buckets' layout (names, shapes, dtypes, offsets: a few hundred bytes
through Ray) and the bytes by the transport, then loads them as it loads object-store buckets.
The learner sends from a snapshot of its weights, so it may train on while the bytes travel.
"""
from __future__ import annotations

import datetime
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.distributed as dist

from learners.weight_pack import Bucket


@dataclass(frozen=True)
class Layout:
    """A bucket without its bytes."""

    nbytes: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    offsets: list[int]

    def filled(self, data: torch.Tensor) -> Bucket:
        if data.numel() != self.nbytes or data.dtype != torch.uint8:
            raise ValueError(f"a bucket of {self.nbytes} bytes got {data.numel()} {data.dtype} elements")
        return Bucket(data, self.names, self.shapes, self.dtypes, self.offsets)


def layouts(buckets: list[Bucket]) -> list[Layout]:
    return [Layout(b.nbytes, b.names, b.shapes, b.dtypes, b.offsets) for b in buckets]


def as_tensor(data) -> torch.Tensor:
    """A bucket's bytes as a uint8 tensor (no copy)."""
    return data if isinstance(data, torch.Tensor) else torch.from_numpy(data)


class Snapshots:
    """A ring of byte buffers the weights are copied into before they travel: the learner's own
    buffers change with its next update, a snapshot stays as it was until the ring comes round."""

    def __init__(self, depth: int):
        self.depth = depth
        self.ring: deque[list[torch.Tensor]] = deque()

    def take(self, buckets: list[Bucket]) -> list[torch.Tensor]:
        src = [as_tensor(b.data) for b in buckets]
        reuse = self.ring.popleft() if len(self.ring) == self.depth else None
        if reuse is None or [t.numel() for t in reuse] != [s.numel() for s in src]:
            reuse = [torch.empty_like(s) for s in src]
        with torch.no_grad():
            for dst, s in zip(reuse, src):
                dst.copy_(s)
        if reuse and reuse[0].is_cuda:
            torch.cuda.current_stream().synchronize()  # finished before another stream or process reads them
        self.ring.append(reuse)
        return reuse


# ---------------------------------------------------------------- broadcast


class WeightGroup:
    """A process group of its own: rank 0 sends, every other rank receives."""

    def __init__(self, address: str, rank: int, world: int, backend: str, name: str, timeout_s: float = 600.0):
        host, port = address.rsplit(":", 1)
        timeout = datetime.timedelta(seconds=timeout_s)
        # rank 0 serves the rendezvous store; the group's constructor waits until every rank joined
        self.store = dist.TCPStore(host, int(port), world, is_master=rank == 0, timeout=timeout,
                                   wait_for_workers=False)
        prefixed = dist.PrefixStore(f"threefold-weights/{name}", self.store)
        if backend == "nccl":
            self.group = dist.ProcessGroupNCCL(prefixed, rank, world)
        elif backend == "gloo":
            self.group = dist.ProcessGroupGloo(prefixed, rank, world, timeout)
        else:
            raise ValueError(f"weight group backend must be gloo or nccl, got {backend!r}")
        self.rank, self.world, self.backend, self.name = rank, world, backend, name

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        for t in tensors:  # one collective per bucket: a few, whatever the number of weights
            self.group.broadcast([t], opts).wait()


class Sender:
    """The learner's side: each `send` snapshots the buckets and broadcasts them on a background
    thread, in order; at most two sends are in flight (a third waits for the first), and an
    earlier send's failure is raised by the next call."""

    def __init__(self, group: WeightGroup):
        self.group = group
        self.snapshots = Snapshots(depth=2)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-broadcast")
        self.inflight: deque[Future] = deque()

    def send(self, buckets: list[Bucket]) -> list[Layout]:
        self._settle(keep=1)
        data = self.snapshots.take(buckets)
        self.inflight.append(self.pool.submit(self.group.broadcast, data))
        return layouts(buckets)

    def wait(self) -> None:
        """Until every send so far has gone out."""
        self._settle(keep=0)

    def _settle(self, keep: int) -> None:
        while self.inflight and (len(self.inflight) > keep or self.inflight[0].done()):
            self.inflight.popleft().result()


class Receiver:
    """An engine worker's side: receive buffers that stay allocated from one sync to the next."""

    def __init__(self, group: WeightGroup, device: torch.device | str = "cpu"):
        self.group, self.device = group, torch.device(device)
        self.buffers: list[torch.Tensor] = []

    def receive(self, plan: list[Layout]) -> list[Bucket]:
        if [b.numel() for b in self.buffers] != [p.nbytes for p in plan]:
            self.buffers = [torch.empty(p.nbytes, dtype=torch.uint8, device=self.device) for p in plan]
        self.group.broadcast(self.buffers)
        return [p.filled(b) for p, b in zip(plan, self.buffers)]


# ---------------------------------------------------------------- CUDA IPC


class IpcExporter:
    """The learner's side of cuda_ipc: each export snapshots the buckets on its GPU and returns IPC
    handles to the snapshot. A generator loads version v only after its calls queued before, and the
    driver has at most max_staleness + 1 loads outstanding per generator, so a ring of `depth` =
    max_staleness + 2 snapshots is never overwritten while a load may still read it."""

    def __init__(self, depth: int):
        self.snapshots = Snapshots(depth)

    def export(self, buckets: list[Bucket]) -> tuple[list[Layout], list[tuple]]:
        from torch.multiprocessing.reductions import reduce_tensor

        if not buckets or not torch.is_tensor(buckets[0].data) or not buckets[0].data.is_cuda:
            raise RuntimeError("rollout.sync_transport: cuda_ipc needs the learner's weights on a GPU "
                               "(resources.learner_gpus > 0); use broadcast or object_store")
        data = self.snapshots.take(buckets)
        return layouts(buckets), [reduce_tensor(t) for t in data]


def open_ipc(plan: list[Layout], handles: list[tuple]) -> list[Bucket]:
    """The exporter's snapshot as buckets on this process's GPU, without a copy. The handles name the
    exporter's device index; an engine that sees the same GPU under another index (its own
    CUDA_VISIBLE_DEVICES) opens it on its current device."""
    out = []
    for layout, (rebuild, args) in zip(plan, handles):
        args = list(args)
        args[6] = torch.cuda.current_device()  # storage_device of rebuild_cuda_tensor
        out.append(layout.filled(rebuild(*args)))
    return out
