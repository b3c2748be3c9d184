"""FSDP2 for a learner group (`resources.learner_sharding: fsdp2`): the policy's decoder layers are
sharded with `fully_shard` over the group's ranks, so their weights, gradients and AdamW moments
are split; embeddings, final norm and head stay whole on every rank (their gradients are summed
like a replicated group's), as does the frozen reference. Gradients are summed over ranks, not averaged (`sum_not_mean`), as in the
replicated group, so both train the weights one learner would.

A whole, frozen copy of the policy (the trainer's `model`) is refreshed from the shards after
every optimizer step: export, parity probes, log-probs for truncated importance sampling and
checkpoints of the weights read it without a collective.

Collectives need every rank: each rank runs as many forward/backward passes as the busiest rank
(`padded`), the gradient norm is taken over every shard, and the training state gathers and splits
the sharded AdamW moments.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor


def shard_layers(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with every decoder layer sharded (FSDP2); the original is left whole."""
    from torch.distributed.fsdp import fully_shard

    train = copy.deepcopy(model)
    for layer in train.base_model.layers:
        fully_shard(layer)
    return train


@torch.no_grad()
def sum_not_mean(params: list[torch.nn.Parameter]) -> None:
    """FSDP2 averages a sharded gradient over the ranks (a divide factor of 1 needs PREMUL_SUM, which
    gloo lacks); the group's convention is the sum, so scale the shards back up."""
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None and is_sharded(p.grad):
            p.grad.to_local().mul_(world)


def device() -> torch.device:
    """Where this rank's collectives run: its GPU with NCCL, else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def is_sharded(p: torch.Tensor) -> bool:
    return isinstance(p, DTensor)


def has_shards(model: torch.nn.Module) -> bool:
    return any(is_sharded(p) for p in model.parameters())


def padded(parts: list) -> list:
    """`parts` with None appended up to the largest count over the ranks (one collective)."""
    n = torch.tensor([len(parts)], device=device())
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    return parts + [None] * (int(n) - len(parts))


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_ over sharded and whole parameters together: the norm of the
    whole gradient (each shard counted once, each whole gradient once), then the same scaling."""
    grads = [p.grad for p in params if p.grad is not None]
    local = sum((g.to_local().double().pow(2).sum() for g in grads if is_sharded(g)), torch.zeros((), dtype=torch.float64, device=device()))
    dist.all_reduce(local)
    whole = sum((g.double().pow(2).sum() for g in grads if not is_sharded(g)), torch.zeros((), dtype=torch.float64, device=local.device))
    norm = float((local + whole).sqrt())
    coef = min(1.0, max_norm / (norm + 1e-6))
    if coef < 1.0:
        with torch.no_grad():
            for g in grads:
                (g.to_local() if is_sharded(g) else g).mul_(coef)
    return norm


@torch.no_grad()
def refresh_whole(whole: torch.nn.Module, train: torch.nn.Module) -> None:
    """Copy the trained weights into the whole copy (each sharded tensor is all-gathered once)."""
    mine = dict(train.named_parameters())
    for name, p in whole.named_parameters():
        src = mine[name]
        p.copy_(src.full_tensor() if is_sharded(src) else src)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict with every sharded moment gathered whole (a collective: call on
    every rank, in the same order)."""
    state = optimizer.state_dict()
    out = {"param_groups": state["param_groups"], "state": {}}
    for idx in sorted(state["state"]):
        out["state"][idx] = {k: v.full_tensor() if is_sharded(v) else v for k, v in state["state"][idx].items()}
    return out


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a `full_optimizer_state` dict: each moment of a sharded parameter becomes this rank's shard."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fixed = {"param_groups": state["param_groups"], "state": {}}
    for idx, per in state["state"].items():
        p = params[idx]
        fixed["state"][idx] = {k: distribute_tensor(v, p.device_mesh, p.placements, src_data_rank=None)
                               if is_sharded(p) and torch.is_tensor(v) and v.shape == p.shape else v
                               for k, v in per.items()}
    optimizer.load_state_dict(fixed)


@torch.no_grad()
def load_whole(train: torch.nn.Module, whole: torch.nn.Module) -> None:
    """Set the trained copy's weights from the whole copy (after a checkpoint restore)."""
    src = dict(whole.named_parameters())
    for name, p in train.named_parameters():
        if is_sharded(p):
            p.copy_(distribute_tensor(src[name], p.device_mesh, p.placements, src_data_rank=None))
        else:
            p.copy_(src[name])
