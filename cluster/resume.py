"""Saving a running controller's whole state to a checkpoint, and putting a new controller back into
it (`threefold train CONFIG --resume RUN`): the same next batch, the same sampled tokens, nothing
lost or repeated. The store's layout is in cluster/checkpoints.py."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import ray

from cluster import checkpoints as ck
from cluster.storage import normalize

log = logging.getLogger("threefold.resume")


class Stopped(Exception):
    """A stop signal arrived; the run wrote a checkpoint after `step` and stopped (exit 3)."""

    def __init__(self, step: int, where: str, signame: str):
        super().__init__(f"{signame}: stopped after step {step}; checkpoint {where}; continue with --resume")
        self.step, self.where = step, where


def checkpoint_uri(cfg, run_dir: Path) -> str:
    c = cfg.checkpoint
    if c.uri:
        return normalize(c.uri)
    if cfg.logging.storage:
        return normalize(cfg.logging.storage).rstrip("/") + f"/{run_dir.name}/checkpoints"
    return str((run_dir / "checkpoints").resolve())


def save(ctrl, step: int) -> str:
    """Checkpoint after `step`: the learner writes its state, the driver its own, the manifest commits."""
    t0 = time.perf_counter()
    store: ck.CheckpointStore = ctrl.checkpoints
    ctrl.sync.finish()
    pending = ctrl.pipeline.pending()  # waits for queued generation: nothing in flight is lost
    staged = store.staging(step)
    learner_bytes = ray.get([ln.__ray_call__.remote(ck.save_in_learner, store.uri, f"{staged}/{ck.LEARNER}")
                             for ln in ctrl.learners])[0]  # every rank: a sharded group gathers its state
    driver = ck.driver_bytes({"step": step, "version": ctrl.version, "sampler": ctrl.sampler.state(),
                              "pending": pending, "eval_start": ctrl.first_eval,
                              "eval_last": ctrl.last_eval})
    store.write(f"{staged}/{ck.DRIVER}", driver)
    where = store.commit(step, staged, ck.manifest(
        step, ctrl.version, {ck.LEARNER: learner_bytes, ck.DRIVER: len(driver)}, sorted(pending),
        ctrl.cfg.model_dump(mode="json")))
    store.prune(ctrl.cfg.checkpoint.keep)
    ctrl.checkpoint_seconds = time.perf_counter() - t0
    log.info("checkpoint after step %d: %s (%.1f s)", step, where, ctrl.checkpoint_seconds)
    return where


def locate(source: str) -> tuple[ck.CheckpointStore, int]:
    """The newest complete checkpoint under a run directory or URI (its checkpoints/ folder), or a
    checkpoint store itself."""
    src = normalize(source)
    for uri in (src.rstrip("/") + "/checkpoints", src):
        store = ck.CheckpointStore(uri)
        steps = store.steps()
        if steps:
            return store, steps[-1]
    raise ck.CheckpointError(f"--resume {source}: no complete checkpoint there (looked for "
                             f"{ck.step_name(0)[:5]}NNNNNN/{ck.MANIFEST} in {src}/checkpoints and {src})")


def check_config(manifest: dict, cfg, source: str) -> None:
    bad = ck.changed_keys(manifest["config"], cfg.model_dump(mode="json"))
    if bad:
        raise ck.CheckpointError(
            f"--resume {source}: the config changed in a way a resume cannot follow: {', '.join(bad)} "
            f"(resume with the run's own config; only {', '.join(k.rstrip('.') for k in ck.SAFE_KEYS)} may change)")


def restore(ctrl, store: ck.CheckpointStore, step: int) -> int:
    """Load the checkpoint into the learners, sampler and pipeline; returns the step it was written after."""
    from cluster.checkpoints import load_in_learner

    state = ck.driver_state(store.read(step, ck.DRIVER))
    path = f"{store.root}/{ck.step_name(step)}/{ck.LEARNER}"
    versions = ray.get([ln.__ray_call__.remote(load_in_learner, store.uri, path) for ln in ctrl.learners])
    if set(versions) != {state["version"]}:
        raise ck.CheckpointError(f"checkpoint {store}/{ck.step_name(step)}: learner version {versions} but the "
                                 f"driver's is {state['version']}")
    ctrl.version = state["version"]
    ctrl.sampler.restore(state["sampler"])
    ctrl.pipeline.restore(state["pending"])
    ctrl.first_eval, ctrl.last_eval = state["eval_start"], state["eval_last"]
    log.info("resumed from %s/%s: policy version %d, %d pending batches", store, ck.step_name(step), ctrl.version,
             len(state["pending"]))
    return state["step"]
