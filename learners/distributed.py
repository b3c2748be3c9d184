"""Data-parallel learners in one torch.distributed process group (gloo on CPU, NCCL on GPU).

Every rank holds the whole batch (cheap: token ids and rewards) but runs the model only on its own
prompt groups, whole groups, so group-relative advantages stay exact. Loss normalisers come from
the whole minibatch, so the gradients summed over ranks equal one learner's on the same batch.
"""
from __future__ import annotations

import operator
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    def own(self, group_ids: torch.Tensor) -> torch.Tensor:
        """Indices of this rank's samples: the groups, in sorted order, split into `world`
        contiguous near-equal runs."""
        if self.world == 1:
            return torch.arange(len(group_ids))
        groups = torch.unique(group_ids)
        mine = groups.tensor_split(self.world)[self.rank]
        return torch.nonzero(torch.isin(group_ids, mine)).flatten()


def free_address() -> str:
    """host:port where rank 0 can listen (the port is free now; the group binds it next)."""
    host = socket.gethostbyname(socket.gethostname())
    with socket.socket() as s:
        s.bind(("", 0))
        return f"{host}:{s.getsockname()[1]}"


def join(rank: int, world: int, address: str, backend: str) -> Shard:
    dist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world)
    return Shard(rank, world)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks in one flat buffer (one collective, not one per
    tensor); a missing gradient counts as zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a small tensor (a new tensor; the input is left as it is)."""
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def gather(local: dict) -> list[dict]:
    """Every rank's small `local` dict, in rank order (one collective)."""
    every: list[dict] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(every, local)
    return every


def combine(every: list[dict[str, float]], how: Callable[[float, float], float] = operator.add) -> dict[str, float]:
    """Per-key `how` (sum by default, or max) over the ranks' dicts (a rank without samples may miss keys)."""
    out: dict[str, float] = {}
    for d in every:
        for k, v in d.items():
            out[k] = how(out[k], v) if k in out else v
    return out
