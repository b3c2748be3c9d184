"""A trainer's whole training state as bytes and back: what a lossless resume needs (weights,
optimizers, schedules, KL coefficient, policy version, RNG states), not just the final weights."""
from __future__ import annotations

import io
import random

import torch

from learners import sharding

FORMAT = 1


def training_state(trainer) -> dict:
    t = trainer
    state = {
        "format": FORMAT,
        "version": t.version,
        "model": t.model.state_dict(),
        "optimizer": sharding.full_optimizer_state(t.optimizer) if t.sharded else t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "kl_beta": t.kl.beta,
        "minibatch_rng": t.generator.get_state(),  # the learner's minibatch order
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }
    if torch.device(t.device).type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state()
    if t.critic is not None:
        state.update(critic=t.critic.state_dict(), critic_optimizer=t.critic_optimizer.state_dict(),
                     critic_scheduler=t.critic_scheduler.state_dict())
    return state


def to_bytes(trainer) -> bytes:
    buf = io.BytesIO()
    torch.save(training_state(trainer), buf)
    return buf.getvalue()


def restore(trainer, data: bytes) -> int:
    """Load a state written by `to_bytes` into a trainer built from the same settings; returns its version."""
    state = torch.load(io.BytesIO(data), weights_only=False, map_location=trainer.device)
    if state.get("format") != FORMAT:
        raise ValueError(f"training state format {state.get('format')!r}; this version reads {FORMAT}")
    t = trainer
    if (t.critic is None) != ("critic" not in state):
        raise ValueError("the training state and the run disagree about a critic (algorithm changed?)")
    t.model.load_state_dict(state["model"])
    if t.sharded:  # the same whole state on every rank: each keeps its shards
        sharding.load_whole(t.train_model, t.model)
        sharding.load_full_optimizer_state(t.optimizer, state["optimizer"])
    else:
        t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    if t.critic is not None:
        t.critic.load_state_dict(state["critic"])
        t.critic_optimizer.load_state_dict(state["critic_optimizer"])
        t.critic_scheduler.load_state_dict(state["critic_scheduler"])
    t.kl.beta = state["kl_beta"]
    t.generator.set_state(state["minibatch_rng"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())  # map_location may have moved it
    random.setstate(state["python_rng"])
    if "cuda_rng" in state and torch.device(t.device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"].cpu())
    t.version = state["version"]
    return t.version
