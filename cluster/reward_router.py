"""The reward router (driver side): every sample goes to the sources that serve its row's `kind`;
a sample served by several gets the weighted sum. The controller asks the router, never a pool.

Failure policy per source: when a source could not judge a sample (status in FAILED), `score` gives
it the source's `failure_score` (counted in `failures`), `drop` removes it from the batch (counted
in `dropped`). Sources run concurrently; each reports samples, mean, statuses, seconds, failures.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

from cluster.reward_sources import FAILED, Sample, Source
from rewards.types import RewardResult


@dataclass
class Routed:
    rewards: list[float]
    statuses: list[str]  # the first serving source's status ("dropped" when a source dropped it)
    keep: list[bool]  # False: a source with on_failure: drop failed on it
    by_source: list[dict[str, dict]]  # per sample: {source name: {"score", "status"}}
    metrics: dict[str, dict] = field(default_factory=dict)  # per source


class RewardRouter:
    def __init__(self, sources: list[Source]):
        if not sources:
            raise ValueError("a reward router needs at least one source")
        self.sources = sources

    def row_problem(self, row: dict) -> str | None:
        """Why this row cannot be scored (no source serves its kind, or a field a source needs is missing)."""
        serving = [s for s in self.sources if s.serves(row)]
        if not serving:
            kinds = sorted({k for s in self.sources for k in s.kinds})
            return (f"no reward source serves kind {row.get('kind')!r}; the sources serve {kinds} "
                    "(set the row's `kind` or a source's `kinds`)")
        return next((p for p in (s.row_problem(row) for s in serving) if p), None)

    def score(self, prompts: list[str], responses: list[str], rows: list[dict], groups: list[int],
              extras: bool = True) -> Routed:
        """One RewardResult per sample, merged. `extras=False` leaves out the sources' own metrics
        (read them with `extras()` once the step's last part is scored)."""
        n = len(responses)
        samples = [Sample(p, r, row, g) for p, r, row, g in zip(prompts, responses, rows, groups)]
        plan = [(src, [i for i in range(n) if src.serves(rows[i])]) for src in self.sources]
        plan = [(src, idx) for src, idx in plan if idx]
        with ThreadPoolExecutor(max_workers=max(1, len(plan))) as ex:
            futures = [ex.submit(_timed, src, [samples[i] for i in idx]) for src, idx in plan]
            outcomes = [f.result() for f in futures]
        out = Routed([0.0] * n, [""] * n, [True] * n, [{} for _ in range(n)])
        for (src, idx), (results, seconds) in zip(plan, outcomes):
            out.metrics[src.name] = self._merge(src, idx, results, seconds, out)
            if extras:
                out.metrics[src.name].update(self.source_extras(src))
        return out

    @staticmethod
    def _merge(src: Source, idx: list[int], results: list[RewardResult], seconds: float, out: Routed) -> dict:
        cfg = src.cfg
        statuses: dict[str, int] = {}
        ok_scores, failures, dropped, weighted = [], 0, 0, 0.0
        for i, res in zip(idx, results):
            statuses[res.status] = statuses.get(res.status, 0) + 1
            failed = res.status in FAILED
            out.by_source[i][src.name] = {"score": res.score, "status": res.status}
            if not out.statuses[i]:
                out.statuses[i] = res.status
            if failed and cfg.on_failure == "drop":
                dropped += 1
                out.keep[i] = False
                out.statuses[i] = "dropped"
                continue
            value = cfg.failure_score if failed else res.score
            failures += failed
            if not failed:
                ok_scores.append(res.score)
            out.rewards[i] += cfg.weight * value
            weighted += cfg.weight * value
        return {"type": cfg.type, "samples": len(idx), "mean": sum(ok_scores) / len(ok_scores) if ok_scores else None,
                "weighted_sum": weighted, "failures": failures, "dropped": dropped, "seconds": seconds,
                "per_second": len(idx) / seconds if seconds > 0 else None,
                "statuses": statuses}

    @staticmethod
    def source_extras(src: Source) -> dict:
        extra = src.extra_metrics()
        queue = getattr(getattr(src, "pool", None), "queue_peak", None)  # actor pools: items that waited
        return {"queue_peak": queue, **extra} if isinstance(queue, int) else extra

    def extras(self, names) -> dict[str, dict]:
        """Each named source's own metrics since its previous report."""
        return {src.name: self.source_extras(src) for src in self.sources if src.name in names}

    def pools(self, served: bool = False) -> dict[str, list]:
        """Resizable pools by the name `threefold scale` uses: verifiers, rm, judges; with `served`,
        the Serve-application pools instead (cluster/serve_pools.py), which their Serve config scales."""
        out: dict[str, list] = {"verifiers": [], "rm": [], "judges": []}
        for src in self.sources:
            key = {"math": "verifiers", "code": "verifiers", "exact": "verifiers", "rm": "rm",
                   "judge": "judges"}.get(src.cfg.type)
            if key and bool(getattr(src.pool, "serve_app", None)) == served and src.pool not in out[key]:
                out[key].append(src.pool)
        return out

    def serve_apps(self) -> dict[str, list[str]]:
        """{pool kind: the Serve applications that score it}, for kinds some Serve app scores."""
        return {k: sorted({p.serve_app for p in pools}) for k, pools in self.pools(served=True).items() if pools}

    def resize(self, key: str, size: int) -> bool:
        """Resize every pool of one kind; False when this run has none or it already has that size."""
        changed = False
        for pool in self.pools().get(key, []):
            if len(pool.actors) != size:
                pool.resize(size)
                changed = True
        return changed

    def sizes(self) -> dict[str, int]:
        """Actors per pool kind; for a kind only Serve apps score, their running replicas."""
        served = {k: sum(p.replicas() for p in pools) for k, pools in self.pools(served=True).items() if pools}
        return {**served, **{k: len(p[0].actors) for k, p in self.pools().items() if p}}


def _timed(src: Source, samples: list[Sample]) -> tuple[list[RewardResult], float]:
    t0 = time.perf_counter()
    with nullcontext() if src.concurrent else src.lock:
        results = src.score(samples)
    if len(results) != len(samples):
        raise RuntimeError(f"source {src.name!r} returned {len(results)} results for {len(samples)} samples")
    return results, time.perf_counter() - t0
