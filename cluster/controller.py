"""The RL loop on the driver: sample prompts → generate → reward → learn → sync weights."""
from __future__ import annotations

import gc
import json
import logging
import threading
import time
from pathlib import Path

import ray

from actors.generator import RolloutGenerator
from actors.learner import Learner
from cluster import recovery
from cluster import resume as resume_mod
from cluster import storage
from cluster.checkpoints import CheckpointStore
from cluster.config import RunConfig
from cluster.control import Throughput, initial_status, merge_requests, pool_sizes
from cluster.control_link import ControlLink
from cluster.data import PromptSampler, read_rows
from cluster.loggers import make_loggers
from cluster.metrics import MetricsLog, RolloutLog
from cluster.placement import Placements, PlacementError
from cluster.pipeline import RolloutPipeline, split
from cluster.reward_router import RewardRouter, Routed
from cluster.reward_sources import build_sources
from cluster.scaling import read_request
from cluster.weight_sync import STRATEGIES
from learners.rollout import RolloutBatch
from learners.losses import Clip
from learners.trainer import CriticSettings, UpdateSettings

log = logging.getLogger("threefold.controller")


def update_settings(cfg: RunConfig) -> UpdateSettings:
    a, lr, c = cfg.algorithm, cfg.learner, cfg.algorithm.critic
    critic = CriticSettings(lr=c.lr, warmup_steps=c.warmup_steps, value_clip=c.value_clip,
                            model_dir=str(c.model_dir.resolve()) if c.model_dir else None, gamma=c.gamma, lam=c.lam,
                            normalize_advantages=c.normalize_advantages)
    return UpdateSettings(
        algorithm=a.name, lr=lr.lr, weight_decay=lr.weight_decay, max_grad_norm=lr.max_grad_norm,
        clip=Clip(a.clip_low, a.clip_high, a.dual_clip), loss_agg=a.aggregation(), entropy_coef=a.entropy_coef,
        kl_coef=a.kl.coef, kl_estimator=a.kl_estimator(), kl_in_reward=a.kl_in_reward(), kl_target=a.kl.target,
        kl_horizon=a.kl.horizon, tis_cap=a.tis_cap, epochs=lr.epochs, minibatches=lr.minibatches,
        micro_batch_size=lr.micro_batch_size, max_new_tokens=cfg.rollout.max_new_tokens,
        warmup_steps=lr.warmup_steps, schedule=lr.schedule, total_steps=cfg.steps, min_lr_ratio=lr.min_lr_ratio,
        critic=critic, seed=cfg.seed, matmul_precision=lr.matmul_precision, compile=lr.compile,
    )


class Controller:
    def __init__(self, cfg: RunConfig, run_dir: Path, generators: list | None = None, resume: tuple | None = None):
        """`generators`: running RolloutGenerators to reuse (tests share engines between runs); the
        run loads its own initial weights into them and leaves them running at shutdown. `resume`:
        (CheckpointStore, step) to continue from (cluster/resume.py). First of all the run's control
        actor starts (RunNameTaken if a live run has this run's name)."""
        self.cfg = cfg
        self.run_dir = run_dir
        # a resumed run keeps writing where it resumed from, unless checkpoint.uri says otherwise
        self.checkpoints = resume[0] if resume and not cfg.checkpoint.uri else CheckpointStore(
            resume_mod.checkpoint_uri(cfg, run_dir))
        self.start_step, self.last_eval, self.first_eval = 0, None, None
        self.stop_signal: str | None = None  # set by a signal handler: checkpoint after this step, then stop
        self.checkpoint_seconds = 0.0
        where = storage.destination(cfg.logging.storage, run_dir.name) if cfg.logging.storage else None
        self.control = ControlLink.open(initial_status(run_dir.name, cfg.steps, str(run_dir.resolve()), where, {}))
        self.throughput, self.scale_seen = Throughput(), {}
        self.placements = Placements(cfg.resources)
        try:
            self._build(cfg, run_dir, generators, resume)
            if resume:
                self.start_step = resume_mod.restore(self, *resume)
        except BaseException as e:
            self.placements.close()  # removing a group also stops the actors placed in it
            self.control.close("failed", f"{type(e).__name__}: {e}")
            raise
        # `threefold scale --run` refuses kinds a Serve app scores (cluster/scaling.py)
        self.control.push(pools=self.pool_sizes(), serve_apps=self.router.serve_apps())

    def _build(self, cfg: RunConfig, run_dir: Path, generators: list | None, resume: tuple | None) -> None:
        res, model_dir = cfg.resources, str(cfg.policy.model_dir.resolve())
        # the GPU roles' group first, so reward actors cannot take its room; no group, no Ray call
        gen_opts, learner_opts = self.placements.trainers(0 if generators else cfg.rollout.num_generators,
                                                          res.learners)
        shared: dict = {}
        rw, where = cfg.reward, self.placements
        self.router = RewardRouter(build_sources(rw, rw.training_sources(), res.verifier_cpus, shared, where))
        self.eval_router = (self.router if rw.eval is None else
                            RewardRouter(build_sources(rw, rw.eval_sources(), res.verifier_cpus, shared, where)))
        self.verified = any(s.type in ("math", "code", "exact") for s in rw.training_sources())  # `accuracy` = share passed
        self.train_rows = read_rows(cfg.data.train_path, check=self.router.row_problem)
        self.eval_rows = read_rows(cfg.data.eval_path, check=self.eval_router.row_problem)[: cfg.logging.eval_size]
        self.sampler = PromptSampler(self.train_rows, cfg.data.shuffle_seed)
        self.initial_sampler = self.sampler.state()  # where a learner restart without a checkpoint goes back to
        self.owns_generators = generators is None
        self.generators = generators or [self.start_generator(rank, opts) for rank, opts in enumerate(gen_opts)]
        self.learner_opts = learner_opts
        self.start_learners()
        self.sync = STRATEGIES[cfg.rollout.sync_transport](
            self.learner, self.generators, self._probe_ids(model_dir), cfg.parity_tolerance(), cfg.rollout.sync_dtype,
            cfg.rollout.sync_reload, cfg.rollout.max_staleness)
        self.pipeline = RolloutPipeline(cfg, self.generators, self.sampler, self.router)
        self.gen_opts = gen_opts
        self.recovery: dict[str, int] = {}  # restarts per role, samples redone, steps replayed (this run)
        heal_lock = threading.Lock()  # the weight sync (driver) and background scoring may both meet a dead generator

        def heal(rank: int):
            with heal_lock:
                return recovery.heal_generator(self, rank)
        self.sync.heal = self.pipeline.heal = heal
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", run_dir.name,
                                  make_loggers(cfg.logging, run_dir, run_dir.name, cfg.model_dump(mode="json")),
                                  keep_until=resume[1] if resume else None)
        self.rollout_log = RolloutLog(run_dir / "rollouts.jsonl", resume[1] if resume else None) \
            if cfg.logging.rollouts else None
        self.version = 0

    def start_generator(self, rank: int, opts: dict):
        """A new RolloutGenerator for `rank` with this run's engine settings (at start, and for a replacement)."""
        cfg, res = self.cfg, self.cfg.resources
        return RolloutGenerator.options(**opts).remote(str(cfg.policy.model_dir.resolve()), cfg.seed + rank,
                                                       cfg.rollout.max_model_len,
                                                       res.generator_threads or res.threads_per_actor, cfg.rollout.dtype)

    def start_learners(self) -> None:
        """The learner group at the policy's initial weights (a restart loads a checkpoint after this)."""
        cfg, res = self.cfg, self.cfg.resources
        self.learners = [Learner.options(**opts).remote(str(cfg.policy.model_dir.resolve()), update_settings(cfg),
                                                        res.learner_threads or res.threads_per_actor)
                         for opts in self.learner_opts]
        self.learner = self.learners[0]  # exports the weights, answers the parity probe, saves the checkpoint
        if len(self.learners) > 1:
            where, backend = ray.get(self.learner.address.remote()), "nccl" if res.learner_gpus else "gloo"
            ray.get([ln.join.remote(rank, len(self.learners), where, backend, res.learner_sharding)
                     for rank, ln in enumerate(self.learners)])
        if hasattr(self, "sync"):
            self.sync.learner = self.learner

    def _probe_ids(self, model_dir: str) -> list[int]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        row = self.eval_rows[0]  # any text works; an answer makes the probe look like a real sample
        return tok(row["prompt"] + str(row.get("answer", "")))["input_ids"] + [tok.eos_token_id]

    def sample_scored(self, n_prompts: int) -> tuple[RolloutBatch, dict]:
        """A scored batch of `n_prompts` groups from the generators' current weights, now."""
        self.pipeline.queue(-1, n_prompts)
        got = self.pipeline.take(-1)
        return got.batch, got.info

    @staticmethod
    def _prompts(rows: list[dict]) -> list[str]:
        return [r["prompt"] for r in rows]

    def evaluate(self) -> float:
        """Mean held-out score of greedy answers under the eval sources (failed or dropped samples count 0)."""
        self.sync.finish()  # evaluate the weights of the last update
        prompts = self._prompts(self.eval_rows)
        shards = split(prompts, len(self.generators))
        texts = recovery.greedy(self, shards, self.cfg.rollout.max_new_tokens)
        routed: Routed = self.eval_router.score(prompts, texts, self.eval_rows, list(range(len(texts))))
        self.eval_detail = {name: m["mean"] for name, m in routed.metrics.items()}  # per eval source
        return sum(r for r, k in zip(routed.rewards, routed.keep) if k) / len(texts)

    def apply_scaling(self) -> None:
        """Requests from `threefold scale`: RUN_DIR/scale.json (when it changed) and the control actor."""
        in_file = read_request(self.run_dir)
        for key, size in merge_requests(in_file, self.scale_seen, self.control.take()).items():
            if key in self.router.serve_apps() and not self.router.pools().get(key):  # Serve autoscales those
                log.warning("scale request %s=%d refused: Serve application(s) %s score %s; change min_replicas/"
                            "max_replicas in the Serve config and run `threefold serve` again", key, size,
                            ", ".join(self.router.serve_apps()[key]), key)
                continue
            if key not in self.router.sizes():
                log.warning("scale request %s=%d ignored: this run has no %s pool", key, size, key)
            try:
                self.router.resize(key, size)
            except PlacementError as e:  # a growth nobody can place must not stop the run
                log.warning("scale request %s=%d not applied: %s", key, size, e)
        self.scale_seen = in_file

    def pool_sizes(self) -> dict[str, int]:
        return pool_sizes({**self.router.sizes(), "generators": len(self.generators)})

    def _take(self, step: int) -> tuple[RolloutBatch, dict]:
        """The step's scored batch; one older than max_staleness is never trained on: it is
        dropped (counted) and the step regenerated from the current weights."""
        got, stale = self.pipeline.take(step), 0
        while self.version - got.batch.policy_version > self.cfg.rollout.max_staleness:
            stale += 1
            log.warning("step %d: batch from policy version %d is older than rollout.max_staleness=%d at version "
                        "%d; dropped and regenerated", step, got.batch.policy_version,
                        self.cfg.rollout.max_staleness, self.version)
            self.sync.finish()
            got = self.pipeline.take(step)
        return got.batch, {**got.info, **({"stale_dropped": stale} if stale else {})}

    def _queue_ahead(self, step: int) -> None:
        """Queue the batch that may start from the weights just queued (see cluster/pipeline.py)."""
        ahead = step + 1 + self.cfg.rollout.max_staleness
        if ahead <= self.cfg.steps:
            self.pipeline.queue(ahead)

    def step(self, step: int) -> dict:
        self.apply_scaling()
        k = self.cfg.rollout.max_staleness
        batch, sampling = self._take(step)
        if not len(batch):  # every sample dropped by a failing source: nothing to learn from, keep going
            log.warning("step %d: every sample was dropped (per-source metrics: %s)", step, sampling["sources"])
            self._queue_ahead(step)
            return {"step": step, "policy_version": self.version, "samples": 0, "skipped": True, **sampling}
        batch_ref = ray.put(batch)  # once for every learner
        update = [ln.update.remote(batch_ref) for ln in self.learners][0]
        self.version += 1
        self.sync.start(self.version)  # queued behind the update, and on each generator behind its queued batches
        self._queue_ahead(step)
        if k and step < self.cfg.steps:  # score the batches to come while the learner trains
            self.pipeline.score_ahead(range(step + 1, min(self.cfg.steps, step + 1 + k) + 1))
        if self.rollout_log:
            self.rollout_log.write(step, batch)
        t0 = time.perf_counter()
        stats = ray.get(update)
        waited = time.perf_counter() - t0
        if not k or step % self.cfg.logging.parity_every == 0:
            self.sync.finish()
        record = {"step": step, "policy_version": self.version, "rollout_version": batch.policy_version,
                  **self.router.sizes(), "pools": {**self.pool_sizes(), "learner": len(self.learners)}, "samples": len(batch), **sampling}
        if not self.cfg.algorithm.dynamic_sampling.enabled:
            del record["groups_dropped"], record["extra_rounds"]
        if step % self.cfg.logging.parity_every == 0:
            record["parity_max_abs_diff"] = self.sync.check_parity()
        record["recovery"] = {"generator_restarts": 0, "learner_restarts": 0, "steps_replayed": 0, **self.recovery,
                              "samples_redone": self.pipeline.redone}  # this run's totals so far
        tokens = sum(len(r) for r in batch.response_ids)
        if self.verified:
            record["accuracy"] = sum(s == "passed" for s in batch.statuses) / len(batch)
        record.update(
            reward_mean=sum(batch.rewards) / len(batch),
            response_len=tokens / len(batch), tokens_per_s=tokens / max(sampling["time_generate"], 1e-9),
            time_learn=stats.pop("seconds"), time_sync=self.sync.seconds, sync_bytes=self.sync.nbytes, time_wait_learn=waited,
            **stats,
        )
        return record

    def run(self, progress: bool) -> dict:
        """The whole run; its control actor says `finished` at the end, `stopped` after a stop signal's
        checkpoint, `failed` (with the error) if it raises."""
        try:
            summary = self._run(progress)
        except resume_mod.Stopped as e:
            self.control.close("stopped", str(e))
            raise
        except BaseException as e:
            self.control.close("failed", f"{type(e).__name__}: {e}")
            raise
        self.control.close("finished")
        return summary

    def _run(self, progress: bool) -> dict:
        from tqdm import tqdm

        gc.freeze()  # what start-up built stays: no full collection scans it again (actors/learner.py)
        cfg = self.cfg
        ray.get([g.get_version.remote() for g in self.generators] + [ln.get_version.remote() for ln in self.learners])
        if self.start_step:
            self._resumed_start()
        else:
            self._fresh_start()
        first, acc = self.first_eval, self.last_eval
        bar = tqdm(total=cfg.steps, initial=self.start_step, desc="RL steps", disable=not progress,
                   dynamic_ncols=True, mininterval=2.0)
        step = self.start_step
        while step < cfg.steps:
            step += 1
            try:
                acc = self._one_step(step, bar, acc)
            except recovery.ACTOR_LOST:
                if recovery.alive(self.learner) and all(recovery.alive(ln) for ln in self.learners):
                    raise
                step = recovery.restart_learners(self, step)
                bar.n = step
                bar.refresh()
        bar.close()
        self.sync.finish()
        ray.get(self.learner.save.remote(str((self.run_dir / "checkpoint").resolve())))
        storage.sync_checkpoint(self.run_dir, cfg.logging.storage, self.learner)  # from the learner's node
        return {"eval_accuracy_start": first, "eval_accuracy_end": self.last_eval, "steps": cfg.steps,
                "eval_sources": ", ".join(s.name for s in self.eval_router.sources)}

    def _one_step(self, step: int, bar, acc: float) -> float:
        """A step, its evaluation, records and checkpoint; returns the latest held-out score."""
        cfg = self.cfg
        t0 = time.perf_counter()
        record = self.step(step)
        record["time_step"] = time.perf_counter() - t0
        self.throughput.add(record["samples"], record["time_step"])  # evaluation time left out
        if step % cfg.logging.eval_every == 0 or step == cfg.steps:
            acc = record["eval_accuracy"] = self.evaluate()
            record["eval_by_source"] = self.eval_detail
        self.metrics.write(record)
        bar.update(1)
        self.control.push(step=step, policy_version=self.version, pools=self.pool_sizes(),
                          samples_per_s=self.throughput.rate(),
                          **({"eval_accuracy": acc, "eval_step": step} if "eval_accuracy" in record else {}))
        if "eval_accuracy" in record:
            storage.sync_run(self.run_dir, cfg.logging.storage)
        if not record.get("skipped"):
            bar.set_postfix(reward=f"{record['reward_mean']:.2f}", heldout=f"{acc:.1%}", kl=f"{record['kl']:.3f}")
        self.last_eval = acc
        every = cfg.checkpoint.every
        if (every and step % every == 0) or step == cfg.steps or self.stop_signal:
            where = resume_mod.save(self, step)
            if self.stop_signal and step < cfg.steps:
                raise resume_mod.Stopped(step, where, self.stop_signal)
        return acc

    def _fresh_start(self) -> None:
        cfg = self.cfg
        if not self.owns_generators:
            self.sync.push(0)  # reused engines hold another run's weights
        parity0 = self.sync.check_parity()
        self.first_eval = self.last_eval = self.evaluate()
        self.metrics.write({"step": 0, "eval_accuracy": self.first_eval, "eval_by_source": self.eval_detail,
                            "parity_max_abs_diff": parity0})
        self.control.push(eval_accuracy=self.first_eval, eval_step=0, pools=self.pool_sizes())
        storage.sync_run(self.run_dir, cfg.logging.storage)  # outputs to logging.storage at every evaluation
        for ahead in range(1, min(cfg.steps, 1 + cfg.rollout.max_staleness) + 1):
            self.pipeline.queue(ahead)  # the batches that the initial weights may generate

    def _resumed_start(self) -> None:
        """The generators get the checkpoint's weights (the pipeline already holds its pending batches)."""
        self.sync.push(self.version)
        self.sync.check_parity()
        self.control.push(step=self.start_step, policy_version=self.version, pools=self.pool_sizes())

    def shutdown(self) -> None:
        """Stop this run's actors and servers (reused generators stay). A run shut down before it
        finished is marked failed, so its name is free for the next run."""
        if self.control.status.get("state") == "running":
            self.control.close("failed", "shut down before the run finished")
        if hasattr(self, "metrics"):
            self.metrics.close()
        sources = self.router.sources + [s for s in self.eval_router.sources if s not in self.router.sources]
        for src in sources:
            src.close()  # a pool shared by several sources is killed once; killing twice is harmless
        for actor in self.learners + (self.generators if self.owns_generators else []):
            ray.kill(actor)
        self.placements.close()


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
