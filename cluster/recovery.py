"""Replacing dead actors mid-run without losing or repeating a sample. Reward pools retry on fresh
actors themselves (cluster/actor_pool.py, cluster/judge_pool.py); this module covers the generators
and the learner. Every recovery is logged and counted in the step's `recovery` metrics."""
from __future__ import annotations

import logging

import ray
from ray.exceptions import GetTimeoutError

from cluster.actor_pool import ACTOR_LOST, REPLACE_WAIT_S

log = logging.getLogger("threefold.recovery")
PING_S = 30.0
START_TRIES = 3


def alive(actor) -> bool:
    try:
        ray.get(actor.get_version.remote(), timeout=PING_S)
        return True
    except ACTOR_LOST + (GetTimeoutError,):
        return False


def heal_generator(ctrl, rank: int):
    """Generator `rank` died (or stopped answering): start another in its place, give it the learner's
    current weights and check its log-prob parity before anything is queued on it."""
    old = ctrl.generators[rank]
    if alive(old):  # already replaced, or it only looked dead to a caller
        return old
    try:
        ray.kill(old)
    except Exception:  # noqa: BLE001 - already gone
        pass
    opts = ctrl.gen_opts[rank] if rank < len(ctrl.gen_opts) else {"num_cpus": ctrl.cfg.resources.generator_cpus}
    for attempt in range(1, START_TRIES + 1):
        new = ctrl.start_generator(rank, opts)
        ctrl.generators[rank] = new  # the list the pipeline and the weight sync share
        try:
            # a node killed without grace is declared dead only after missed heartbeats; until then its
            # placement-group bundles stay there and a replacement sent to them dies with the node
            ray.get(new.get_version.remote(), timeout=REPLACE_WAIT_S)
            ctrl.sync.load_one(rank, ctrl.version)
            diff = ctrl.sync.check_parity(only=rank)
            break
        except ACTOR_LOST + (GetTimeoutError,) as e:
            if attempt == START_TRIES:
                raise
            log.warning("generator %d replacement %d did not start (%s); trying again", rank, attempt, type(e).__name__)
            try:
                ray.kill(new)
            except Exception:  # noqa: BLE001 - already gone
                pass
    ctrl.recovery["generator_restarts"] = ctrl.recovery.get("generator_restarts", 0) + 1
    log.warning("generator %d died; replaced and loaded with policy version %d (parity %.1e)", rank, ctrl.version, diff)
    return ctrl.generators[rank]  # not `new`: if it died during the parity probe, the probe replaced it


def greedy(ctrl, shards: list[list[str]], max_tokens: int) -> list[str]:
    """Greedy answers for each shard of prompts, on the generators side by side; a shard whose
    generator dies is answered by its replacement."""
    refs = [g.greedy.remote(s, max_tokens) for g, s in zip(ctrl.generators, shards)]
    out = []
    for rank, (ref, shard) in enumerate(zip(refs, shards)):
        try:
            out += ray.get(ref)
        except ACTOR_LOST:
            out += ray.get(heal_generator(ctrl, rank).greedy.remote(shard, max_tokens))
    return out


class LearnerLost(RuntimeError):
    """The learner died more often than checkpoint.learner_restarts allows."""


def restart_learners(ctrl, failed_step: int) -> int:
    """The learner (or one of its group, or its node) died during `failed_step`: start a new group,
    load the newest checkpoint (or go back to the start without one), give the generators its weights
    and forget what was generated after it. Returns the step the run continues after."""
    from cluster import resume as resume_mod
    from cluster.metrics import keep_records

    cfg, done = ctrl.cfg, ctrl.recovery.get("learner_restarts", 0)
    steps = ctrl.checkpoints.steps()
    if done >= cfg.checkpoint.learner_restarts:
        where = f"{ctrl.checkpoints}/{resume_mod.ck.step_name(steps[-1])}" if steps else "none yet"
        raise LearnerLost(f"the learner died during step {failed_step} after {done} restart(s) "
                          f"(checkpoint.learner_restarts={cfg.checkpoint.learner_restarts}); newest checkpoint: "
                          f"{where}; continue with --resume")
    for actor in ctrl.learners:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
    ctrl.start_learners()
    ctrl.pipeline.reset()
    ctrl.sync.pending.clear()
    if steps:
        back = resume_mod.restore(ctrl, ctrl.checkpoints, steps[-1])
    else:
        back, ctrl.version = 0, 0
        ctrl.sampler.restore(ctrl.initial_sampler)
    ctrl.sync.push(ctrl.version)
    ctrl.sync.check_parity()
    if not steps:
        for ahead in range(1, min(cfg.steps, 1 + cfg.rollout.max_staleness) + 1):
            ctrl.pipeline.queue(ahead)
    keep_records(ctrl.metrics.path, back)
    if ctrl.rollout_log:
        keep_records(ctrl.rollout_log.path, back)
    ctrl.recovery["learner_restarts"] = done + 1
    ctrl.recovery["steps_replayed"] = ctrl.recovery.get("steps_replayed", 0) + failed_step - 1 - back
    log.warning("the learner died during step %d; restarted from %s (policy version %d); %d step(s) to replay",
                failed_step, f"the checkpoint after step {back}" if steps else "the start", ctrl.version,
                failed_step - 1 - back)
    return back
