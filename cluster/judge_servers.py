"""Judges a run serves itself: one JudgeServer actor per judge with `serve`, health-checked before
training starts; the judges then reach them by URL through the OpenAI client like any endpoint."""
from __future__ import annotations

import time

import ray

from actors.judge_server import JudgeServer
from cluster.placement import Placements
from rewards.judge.config import EnsembleConfig


def start_served(config: EnsembleConfig, placement: Placements | None = None) -> tuple[EnsembleConfig, dict]:
    """(the config with every served judge's base_url filled in, {judge name: server actor}). With
    resources.placement.judge_servers, the servers share one placement group (the run removes it)."""
    place = placement or Placements()
    served = [j for j in config.judges if j.serve is not None]
    options = place.group([place.spec("judge_servers", j.serve.num_cpus, j.serve.num_gpus) for j in served])
    actors = {j.name: JudgeServer.options(**o).remote(j.serve, j.model) for j, o in zip(served, options)}
    try:
        urls = dict(zip(actors, ray.get([a.ready.remote() for a in actors.values()])))
    except Exception:
        stop_served(actors)
        raise
    judges = [j.model_copy(update={"base_url": urls[j.name]}) if j.name in urls else j for j in config.judges]
    return config.model_copy(update={"judges": judges}), actors


def stop_served(actors: dict, wait_s: float = 30.0) -> None:
    """Stops each server, kills its actor and waits until the actor is gone: ray.kill only asks, and a
    call made right after it may still reach the old actor."""
    for actor in actors.values():
        try:
            ray.get(actor.stop.remote(), timeout=60)
        except Exception:  # already gone: its server died with it
            pass
        ray.kill(actor)
    deadline = time.monotonic() + wait_s
    for actor in actors.values():
        while time.monotonic() < deadline:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # RayActorError: dead, as wanted (or unreachable until the deadline)
                break
            time.sleep(0.2)
