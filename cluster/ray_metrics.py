"""The run's metrics on Ray's metrics pipeline (the dashboard's Metrics view, and Prometheus at each
node's metrics export port, as ray_threefold_*): gauges, counters and histograms for the step loop
and every pool, tagged by run and pool. Set from the driver from each step's record, so every pool
is covered whether its actors run in the job or as a Serve application."""
from __future__ import annotations

# pool tag of each reward-source type; the step loop adds generators and learner
POOL_OF = {"math": "verifiers", "code": "verifiers", "exact": "verifiers", "judge": "judges", "rm": "rm",
           "rule": "driver"}
PHASES = ("generate", "reward", "learn", "sync")
PHASE_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
# step-record keys mirrored as run gauges (the names the README's metrics table uses)
RUN_KEYS = ("reward_mean", "accuracy", "kl", "entropy", "response_len", "tokens_per_s", "samples_per_s",
            "eval_accuracy", "policy_version", "staleness", "time_generate", "time_reward", "time_learn",
            "time_sync", "sync_bytes")
# per reward source (tags run, pool, source); judge sources add the judge keys, also per judge
SOURCE_KEYS = ("mean", "samples", "failures", "dropped", "seconds", "per_second", "neutralised", "pass_rate",
               "norm_mean", "norm_std", "queue_peak")
JUDGE_KEYS = ("calls", "latency_p50_s", "latency_p95_s", "error_rate", "abstain_rate", "first_position_rate",
              "agreement", "tokens", "cost")
# per principle of a constitution (judges with per_principle)
PRINCIPLE_KEYS = ("votes", "a_rate", "b_rate", "tie_rate", "abstain_rate", "mean_score")

# name → (kind, tag keys, description); the Grafana dashboard in deploy/grafana/ uses these names
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    **{f"threefold_{k}": ("gauge", ("run",), f"step loop: {k}") for k in RUN_KEYS},
    "threefold_steps_total": ("counter", ("run",), "RL steps finished"),
    "threefold_samples_total": ("counter", ("run",), "samples trained on"),
    "threefold_tokens_total": ("counter", ("run",), "response tokens generated"),
    "threefold_phase_seconds": ("histogram", ("run", "phase"), "seconds per step phase"),
    "threefold_pool_size": ("gauge", ("run", "pool"), "actors (or Serve replicas) per pool"),
    "threefold_recovery": ("gauge", ("run", "kind"),
                           "the run's recoveries so far: generator_restarts, learner_restarts, samples_redone, steps_replayed"),
    "threefold_pool_items_per_s": ("gauge", ("run", "pool", "source"),
                                   "items per second through the pool in the last step (source: the reward source it scored for)"),
    "threefold_pool_busy_seconds": ("gauge", ("run", "pool", "source"), "seconds the pool worked in the last step"),
    **{f"threefold_source_{k}": ("gauge", ("run", "pool", "source"), f"reward source: {k}") for k in
       SOURCE_KEYS + JUDGE_KEYS},
    "threefold_source_status_rate": ("gauge", ("run", "pool", "source", "status"),
                                     "share of the last step's samples per status (passed, timeout, error...)"),
    "threefold_source_status_total": ("counter", ("run", "pool", "source", "status"), "samples per status"),
    "threefold_sandbox_mode": ("gauge", ("run", "pool", "source", "mode"), "1 for the sandbox mode the verifiers run in"),
    **{f"threefold_judge_{k}": ("gauge", ("run", "source", "judge"), f"judge {k} in the last step") for k in JUDGE_KEYS},
    **{f"threefold_principle_{k}": ("gauge", ("run", "source", "principle"), f"principle {k} in the last step")
       for k in PRINCIPLE_KEYS},
}


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def step_values(record: dict, run: str) -> list[tuple[str, float, dict]]:
    """(metric name, value, tags) for one step record: what the dashboard shows after that step."""
    out: list[tuple[str, float, dict]] = []
    tag = {"run": run}
    put = lambda name, value, **tags: (_num(value) is not None) and out.append((name, _num(value), {**tag, **tags}))  # noqa: E731
    busy = {p: record.get(f"time_{p}") for p in PHASES}
    if "samples" in record and all(_num(busy[p]) is not None for p in PHASES):
        record = {**record, "samples_per_s": record["samples"] / max(sum(busy.values()), 1e-9)}
    if "rollout_version" in record and "policy_version" in record:  # versions behind at learning time
        record = {**record, "staleness": record["policy_version"] - 1 - record["rollout_version"]}
    for key in RUN_KEYS:
        put(f"threefold_{key}", record.get(key))
    for phase in PHASES:
        put("threefold_phase_seconds", busy[phase], phase=phase)
    if record.get("samples") is not None and not record.get("skipped"):
        put("threefold_steps_total", 1)
        put("threefold_samples_total", record["samples"])
        put("threefold_tokens_total", (record.get("response_len") or 0) * record["samples"])
        put("threefold_pool_items_per_s", record["samples"] / max(busy["generate"] or 0, 1e-9), pool="generators")
        put("threefold_pool_items_per_s", record["samples"] / max(busy["learn"] or 0, 1e-9), pool="learner")
        put("threefold_pool_busy_seconds", busy["generate"], pool="generators")
        put("threefold_pool_busy_seconds", busy["learn"], pool="learner")
    for pool, size in (record.get("pools") or {}).items():
        put("threefold_pool_size", size, pool=pool)
    for kind, count in (record.get("recovery") or {}).items():
        put("threefold_recovery", count, kind=kind)
    for source, m in (record.get("sources") or {}).items():
        out += source_values(source, m, tag)
    return out


def source_values(source: str, m: dict, tag: dict) -> list[tuple[str, float, dict]]:
    """One reward source's step metrics, tagged with the pool that scored it."""
    out: list[tuple[str, float, dict]] = []
    pool = POOL_OF.get(m.get("type"), "driver")
    tags = {**tag, "pool": pool, "source": source}
    put = lambda name, value, **more: (_num(value) is not None) and out.append((name, _num(value), {**tags, **more}))  # noqa: E731
    for key in SOURCE_KEYS + JUDGE_KEYS:
        put(f"threefold_source_{key}", m.get(key))
    put("threefold_pool_items_per_s", m.get("per_second"), source=source)
    put("threefold_pool_busy_seconds", m.get("seconds"), source=source)
    samples = m.get("samples") or 0
    for status, count in (m.get("statuses") or {}).items():
        put("threefold_source_status_total", count, status=status)
        put("threefold_source_status_rate", count / samples if samples else None, status=status)
    modes = m.get("sandbox_modes") or {mode: 1 for mode in str(m.get("sandbox_mode") or "").split(",") if mode}
    for mode, on in modes.items():
        put("threefold_sandbox_mode", on, mode=mode)
    judge_tags = {**tag, "source": source}
    for judge, jm in (m.get("judges") or {}).items():
        jm = {**jm, "tokens": (jm.get("prompt_tokens") or 0) + (jm.get("completion_tokens") or 0)}
        out += [(f"threefold_judge_{k}", _num(jm[k]), {**judge_tags, "judge": judge})
                for k in JUDGE_KEYS if _num(jm.get(k)) is not None]
    for principle, pm in (m.get("principles") or {}).items():
        out += [(f"threefold_principle_{k}", _num(pm[k]), {**judge_tags, "principle": principle})
                for k in PRINCIPLE_KEYS if _num(pm.get(k)) is not None]
    return out


class RayMetrics:
    """Ray metric objects, made on first use; a cluster without a metrics agent costs nothing."""

    def __init__(self, run: str):
        self.run, self._made, self._seen = run, {}, {}
        try:
            from ray.util import metrics

            self._kinds = {"gauge": metrics.Gauge, "counter": metrics.Counter, "histogram": metrics.Histogram}
        except Exception:  # dashboard metrics are a nicety; metrics.jsonl is the record
            self._kinds = {}

    def _with_zeros(self, record: dict) -> dict:
        """The record with a 0 for each status and sandbox mode a source had before but not in this
        step: a gauge keeps its last value, so a status that stopped occurring would show stale."""
        sources = {}
        for name, m in (record.get("sources") or {}).items():
            statuses, modes = m.get("statuses") or {}, str(m.get("sandbox_mode") or "")
            seen = self._seen.setdefault(name, (set(), set()))
            seen[0].update(statuses)
            seen[1].update(filter(None, modes.split(",")))
            sources[name] = {**m, "statuses": {s: statuses.get(s, 0) for s in sorted(seen[0])},
                             "sandbox_modes": {mode: int(mode in modes.split(",")) for mode in sorted(seen[1])}}
        return {**record, "sources": sources} if sources else record

    def _metric(self, name: str, tag_keys: tuple[str, ...]):
        if name not in self._made:
            kind, _, description = METRICS[name]
            extra = {"boundaries": PHASE_BOUNDARIES} if kind == "histogram" else {}
            self._made[name] = (kind, self._kinds[kind](name, description=description, tag_keys=tag_keys, **extra))
        return self._made[name]

    def write(self, record: dict) -> None:
        if not self._kinds:
            return
        for name, value, tags in step_values(self._with_zeros(record), self.run):
            declared = METRICS[name][1]
            tags = {k: str(tags.get(k, "")) for k in declared}  # one tag set per name: Ray checks it
            kind, metric = self._metric(name, declared)
            if kind == "gauge":
                metric.set(value, tags=tags)
            elif kind == "counter":
                if value > 0:
                    metric.inc(value, tags=tags)
            else:
                metric.observe(value, tags=tags)
