"""Rollouts of the steps to come: generation queued on the generator actors up to `max_staleness`
steps ahead of the learner, each generator's shard scored as soon as it is done.

Generation of step j's batch is queued right after the weights of version j−1−k were queued on
the generators (k = rollout.max_staleness). An actor runs its calls in order, so that batch comes
from version ≥ j−1−k, while the learner that trains it holds version j−1: the lag is at most k.
With k = 0 each batch is generated after the previous update, as a synchronous loop does.

With k ≥ 1 the controller scores every queued batch in the background (`score_ahead`): the batch of
step j+2 is scored while the judges still work on j+1's, so a reward that waits on the network
(judges) has up to k+1 batches in flight, not one. Scoring does not change what a batch holds, only
when it is ready; with dynamic sampling it stays in the foreground, because its extra rounds draw
prompts, and the order of the draws must not depend on timing.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import ray

from cluster.actor_pool import ACTOR_LOST
from cluster.reward_router import RewardRouter
from learners.rollout import RolloutBatch
from learners.shaping import informative_groups, overlong_penalty


def split(items: list, parts: int) -> list[list]:
    """Contiguous near-equal shards (empty shards dropped)."""
    size, rem = divmod(len(items), parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + size + (1 if i < rem else 0)
        out.append(items[lo:hi])
        lo = hi
    return [s for s in out if s]


@dataclass
class Scored:
    batch: RolloutBatch
    info: dict = field(default_factory=dict)  # time_generate, time_reward, time_wait, sources, groups_dropped…


class RolloutPipeline:
    def __init__(self, cfg, generators: list, sampler, router: RewardRouter):
        self.cfg, self.generators, self.sampler, self.router = cfg, generators, sampler, router
        self.queued: dict[int, list] = {}  # step → its shards' refs (generation queued)
        self.ready: dict[int, Scored] = {}  # step → its scored batch
        self.origin: dict = {}  # shard ref → (generator rank, rows, draws): what to redo if its generator dies
        self.heal = None  # heal(rank) → a live generator in place of a dead one (set by the controller)
        self.redone = 0  # samples regenerated because their generator died
        self.scoring: dict[int, Future] = {}  # step → its batch being scored in the background
        self.background: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()  # background scoring and the driver both draw from `origin`

    def queue(self, step: int, n_prompts: int | None = None) -> None:
        """Draw the step's prompts and queue their generation (returns at once)."""
        self.queued[step] = self._generate(n_prompts or self.cfg.rollout.prompts_per_step)

    def _generate(self, n_prompts: int) -> list:
        """Draw `n_prompts` rows and queue their sampling; draw i is sampled with its own seed
        (learners/rollout.py row_seed), so its samples do not depend on which generator takes it."""
        first = self.sampler.drawn
        rows = self.sampler.next(n_prompts)
        parts = split(list(enumerate(rows, first)), len(self.generators))
        return [self._submit(rank, [x[1] for x in p], [x[0] for x in p]) for rank, p in enumerate(parts)]

    def _submit(self, rank: int, rows: list[dict], draws: list[int]):
        r = self.cfg.rollout
        ref = self.generators[rank].generate.remote(rows, r.samples_per_prompt, r.temperature, r.max_new_tokens,
                                                    draws, self.cfg.seed)
        self.origin[ref] = (rank, rows, draws)
        return ref

    def _redo(self, ref):
        """The same draws again on a live generator: the same seeds, so the same samples for the same weights."""
        with self.lock:  # one heal per dead generator, whichever thread met it first
            rank, rows, draws = self.origin.pop(ref)
            if self.heal is None:
                raise RuntimeError("a generator died and this pipeline cannot replace it")
            self.heal(rank)
            self.redone += len(rows) * self.cfg.rollout.samples_per_prompt
            return self._submit(rank, rows, draws)

    def prepare(self, step: int) -> None:
        """Score the step's batch now (it waits for its generation), so that `take` returns at once."""
        if step in self.scoring:
            self.ready[step] = self.scoring.pop(step).result()
        elif step in self.queued and step not in self.ready:
            self.ready[step] = self._scored(self.queued.pop(step))

    def score_ahead(self, steps) -> None:
        """Start scoring each of these queued batches in the background, each as its shards come
        (returns at once; `take` waits for the result). Dynamic sampling scores in the foreground."""
        if self.cfg.algorithm.dynamic_sampling.enabled:
            return self.prepare(min(steps))
        for step in steps:
            if step in self.queued and step not in self.ready:
                if self.background is None:
                    self.background = ThreadPoolExecutor(max_workers=self.cfg.rollout.max_staleness + 1,
                                                         thread_name_prefix="score-ahead")
                self.scoring[step] = self.background.submit(self._scored, self.queued.pop(step))

    def take(self, step: int) -> Scored:
        if step not in self.ready and step not in self.queued and step not in self.scoring:
            self.queue(step)
        self.prepare(step)
        return self.ready.pop(step)

    def pending(self) -> dict[int, tuple[str, object]]:
        """Every batch generated or scored but not yet taken, for a checkpoint: step → ("scored",
        Scored) or ("shards", its generated shards, unscored). Waits for queued generation."""
        for step in list(self.scoring):
            self.prepare(step)
        out: dict[int, tuple[str, object]] = {s: ("scored", v) for s, v in self.ready.items()}
        for step, refs in self.queued.items():
            shards = []
            for i, ref in enumerate(refs):
                try:
                    shards.append(ray.get(ref))
                except ACTOR_LOST:
                    refs[i] = self._redo(ref)
                    shards.append(ray.get(refs[i]))
            out[step] = ("shards", shards)
        return out

    def restore(self, pending: dict[int, tuple[str, object]]) -> None:
        """Put a checkpoint's pending batches back: scored ones ready, generated ones to be scored."""
        for step, (kind, value) in pending.items():
            if kind == "scored":
                self.ready[step] = value
            else:
                self.queued[step] = [ray.put(shard) for shard in value]

    def reset(self) -> None:
        """Forget every batch queued or scored (a learner restart goes back to a checkpoint); what
        is being scored in the background finishes first, so that no call from it outlives the reset."""
        wait(list(self.scoring.values()))
        self.scoring.clear()
        self.queued.clear()
        self.ready.clear()
        self.origin.clear()

    def _scored(self, refs: list) -> Scored:
        """The scored batch of queued shards, with dynamic sampling's extra rounds if configured."""
        ds, want = self.cfg.algorithm.dynamic_sampling, self.cfg.rollout.prompts_per_step
        kept: list[RolloutBatch] = []
        info = {"groups_dropped": 0, "extra_rounds": 0, "time_generate": 0.0, "time_reward": 0.0, "time_wait": 0.0}
        have = lambda: sum(len(set(b.group_ids)) for b in kept)  # noqa: E731
        while True:
            batch = self._score_shards(refs, info)
            if not ds.enabled or not len(batch):
                return Scored(batch, info)
            good = sorted(informative_groups(batch.rewards, batch.group_ids))
            info["groups_dropped"] += len(set(batch.group_ids)) - len(good)
            if good:
                kept.append(batch.select_groups(good))
            if have() >= want or info["extra_rounds"] >= ds.max_rounds:
                return Scored(RolloutBatch.concat(kept) if kept else batch, info)
            info["extra_rounds"] += 1
            refs = self._generate(want - have())

    def _score_shards(self, refs: list, info: dict) -> RolloutBatch:
        """Each shard goes to the reward router as soon as its generator returns it, while the others
        are still being generated or scored (a judge or sandbox pool then has every shard's samples
        in flight at once, not one shard's at a time); the batch joins them in generator order,
        whichever finished first (the same batch on every run).
        time_wait: until the first shard came; time_reward: from then until every shard is scored."""
        parts, pending, seconds, routing = [None] * len(refs), list(refs), [], {}
        slot = {ref: i for i, ref in enumerate(refs)}
        t0 = time.perf_counter()
        t1 = None
        with ThreadPoolExecutor(max_workers=len(refs)) as ex:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    shard: RolloutBatch = ray.get(done[0])
                except ACTOR_LOST:
                    again = self._redo(done[0])
                    slot[again] = slot.pop(done[0])
                    pending.append(again)
                    continue
                self.origin.pop(done[0], None)
                t1 = t1 or time.perf_counter()
                routing[slot[done[0]]] = (shard, ex.submit(self._route, shard))
                seconds.append(shard.generate_seconds)
            for i, (shard, future) in sorted(routing.items()):
                parts[i] = self._apply(shard, future.result(), info)
        info["time_wait"] += (t1 or t0) - t0
        info["time_reward"] += time.perf_counter() - (t1 or t0)
        info["time_generate"] += max(seconds, default=0.0)  # shards run side by side
        info.setdefault("sources", {})
        for name, extra in self.router.extras(info["sources"]).items():
            info["sources"][name].update(extra)
        return RolloutBatch.concat([p for p in parts if len(p)]) if any(len(p) for p in parts) else parts[0]

    def _route(self, batch: RolloutBatch):
        return self.router.score([m["prompt"] for m in batch.metadata], batch.texts, batch.metadata,
                                 batch.group_ids, extras=False)

    def _apply(self, batch: RolloutBatch, routed, info: dict) -> RolloutBatch:
        """The shard with its rewards (and without the samples a source dropped); metrics into `info`."""
        over, max_len = self.cfg.algorithm.overlong, self.cfg.rollout.max_new_tokens
        batch.rewards, batch.statuses, batch.reward_detail = routed.rewards, routed.statuses, routed.by_source
        if not all(routed.keep):
            batch = batch.select([i for i, k in enumerate(routed.keep) if k])
        info["sources"] = merge_source_metrics(info.get("sources"), routed.metrics)
        if over.buffer:
            batch.rewards = [r + overlong_penalty(len(ids), max_len, over.buffer, over.penalty)
                             for r, ids in zip(batch.rewards, batch.response_ids)]
        return batch


def merge_source_metrics(old: dict | None, new: dict) -> dict:
    """Per-source metrics of several parts of one step (shards, sampling rounds): counts and seconds add up."""
    if not old:
        return dict(new)
    out = dict(old)
    for name, m in new.items():
        if name not in out:
            out[name] = m
            continue
        a = out[name]
        n_ok = lambda x: x["samples"] - x["failures"] - x["dropped"]  # noqa: E731
        ok = n_ok(a) + n_ok(m)
        mean = ((a["mean"] or 0.0) * n_ok(a) + (m["mean"] or 0.0) * n_ok(m)) / ok if ok else None
        statuses = {k: a["statuses"].get(k, 0) + m["statuses"].get(k, 0) for k in {*a["statuses"], *m["statuses"]}}
        summed = ("samples", "weighted_sum", "failures", "dropped", "seconds", "neutralised")
        out[name] = {**m, **{k: a[k] + m[k] for k in summed if k in a and k in m},
                     "mean": mean, "statuses": statuses}
        n = out[name]
        n["per_second"] = n["samples"] / n["seconds"] if n["seconds"] > 0 else None
        if "pass_rate" in m:
            n["pass_rate"] = n["statuses"].get("passed", 0) / max(n["samples"], 1)
    return out
