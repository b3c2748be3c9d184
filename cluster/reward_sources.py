"""Reward sources the router can ask: each scores a list of samples and returns one RewardResult per
sample, never raising for one bad sample. Pools are shared between sources of one kind of feedback."""
from __future__ import annotations

import importlib
import os
import threading

import ray
from collections.abc import Callable

from cluster.config import RewardConfig, SourceConfig
from rewards.judge.guard import carries_markers
from rewards.types import ERROR, RewardResult
from rewards.verify import extract_program

# A source "failed" on a sample when it could not judge it (not when the sample was wrong).
FAILED = frozenset({"error", "sandbox_error", "invalid_input", "abstain"})
VERIFIED = ("math", "code", "exact")  # source types the verifier pool scores


class Sample:
    __slots__ = ("prompt", "response", "row", "group")

    def __init__(self, prompt: str, response: str, row: dict, group: int):
        self.prompt, self.response, self.row, self.group = prompt, response, row, group


class Source:
    needs: tuple[str, ...] = ()  # row fields this source reads
    # True: score() may run for several shards of a step at once (pools of actors, counters under
    # self.lock); False: the router takes self.lock around every call (stateful scorers, user functions)
    concurrent = False

    def __init__(self, cfg: SourceConfig):
        self.cfg, self.name, self.weight = cfg, cfg.name, cfg.weight
        self.kinds = set(cfg.kinds)
        self.lock = threading.Lock()

    def serves(self, row: dict) -> bool:
        return "*" in self.kinds or row.get("kind") in self.kinds

    def row_problem(self, row: dict) -> str | None:
        missing = [k for k in self.needs if k not in row]
        return f"source {self.name!r} ({self.cfg.type}) needs field(s) {', '.join(missing)}" if missing else None

    def score(self, samples: list[Sample]) -> list[RewardResult]:
        raise NotImplementedError

    def extra_metrics(self) -> dict:
        """Source-specific metrics of what it scored since the previous call (one step, however many
        score calls it took)."""
        return {}

    def close(self) -> None:
        """Stop what this source started (pools, servers)."""
        pool = getattr(self, "pool", None)
        for actor in getattr(pool, "actors", []):
            ray.kill(actor)


class MathSource(Source):
    needs = ("answer",)
    concurrent = True

    def __init__(self, cfg: SourceConfig, verifiers):
        super().__init__(cfg)
        self.pool = verifiers

    def score(self, samples):
        return self.pool.score([s.response for s in samples], [str(s.row["answer"]) for s in samples])


class CodeSource(Source):
    """The response is the program (the last fenced code block when it has any), after the row's
    trusted `program_prefix` if it has one (e.g. "def f(x):\n    return " when the policy writes only
    the body), run against the row's `tests` (and `limits`) in the sandbox; the score is the
    fraction of cases passed (all-or-nothing with reward.all_or_nothing)."""
    needs = ("tests",)
    concurrent = True

    def __init__(self, cfg: SourceConfig, verifiers):
        super().__init__(cfg)
        self.pool = verifiers
        self.passed = self.programs = 0

    def score(self, samples):
        rows = [{"id": i, "kind": "code", "program": s.row.get("program_prefix", "") + extract_program(s.response),
                 "tests": s.row["tests"], **({"limits": s.row["limits"]} if "limits" in s.row else {})}
                for i, s in enumerate(samples)]
        verdicts = self.pool.verify(rows)
        with self.lock:  # since the last extra_metrics: a step may score in several calls
            self.programs += len(verdicts)
            self.passed += sum(v["status"] == "passed" for v in verdicts)
        return [RewardResult(float(v["reward"]), v["status"], {k: v[k] for k in ("passed", "total") if k in v}
                             | ({"error": v["error"]} if v.get("error") else {}))
                for v in verdicts]

    def extra_metrics(self) -> dict:
        # the sandbox mode every verifier actor runs in: it must stay the strongest available
        modes = (self.pool.sandbox_modes() if hasattr(self.pool, "sandbox_modes") else  # a Serve app's replicas
                 sorted({i["mode"] for i in ray.get([a.info.remote() for a in self.pool.actors])}))
        out = {"pass_rate": self.passed / max(self.programs, 1), "sandbox_mode": ",".join(modes)}
        self.passed = self.programs = 0
        return out


class ExactSource(Source):
    """The response's final answer (its last `Answer:` line, else its last line) against the row's
    `answers`, or the answers of its `key` in the knowledge file (the row's `knowledge`, else the
    source's), after normalisation (rewards/exact); scored in the verifier pool like math."""
    concurrent = True

    def __init__(self, cfg: SourceConfig, verifiers):
        super().__init__(cfg)
        self.pool = verifiers
        self.knowledge = str(cfg.knowledge.resolve()) if cfg.knowledge else None
        self.passed = self.answers = 0
        if self.knowledge:
            from rewards.exact import load_knowledge

            load_knowledge(self.knowledge)  # a broken file stops the run here (KnowledgeError is a ValueError)

    def _fields(self, row: dict) -> dict:
        out = {k: row[k] for k in ("answers", "key") if k in row}
        if "key" in row:
            path = row.get("knowledge", self.knowledge)
            if isinstance(path, str) and path:
                out["knowledge"] = os.path.abspath(path)  # actors may run in another directory
        return out

    def row_problem(self, row: dict) -> str | None:
        """Checked at data load: the accepted answers are usable and every key is in its file."""
        from rewards.exact import KnowledgeError, answers_problem, lookup

        fields = self._fields(row)
        problem = answers_problem(fields)
        if problem is None and "key" in fields:
            try:
                lookup(fields["key"], fields["knowledge"])
            except KnowledgeError as e:
                problem = str(e)
        return f"source {self.name!r} (exact): {problem}" if problem else None

    def score(self, samples):
        rows = [{"id": i, "kind": "exact", "response": s.response, **self._fields(s.row)} for i, s in enumerate(samples)]
        verdicts = self.pool.verify(rows, chunk=max(4, -(-len(rows) // max(1, 2 * len(self.pool.actors)))))
        with self.lock:
            self.answers += len(verdicts)
            self.passed += sum(v["status"] == "passed" for v in verdicts)
        return [RewardResult(float(v["reward"]), v["status"], {"error": v["error"]} if v.get("error") else
                             {k: x for k, x in (v["cases"] or [{}])[0].items() if k != "status"})
                for v in verdicts]

    def extra_metrics(self) -> dict:
        out = {"pass_rate": self.passed / max(self.answers, 1)}  # as code sources: share of samples passed
        self.passed = self.answers = 0
        return out


class RMSource(Source):
    def __init__(self, cfg: SourceConfig, placement=None):
        super().__init__(cfg)
        from cluster.rm_pool import RewardModelPool
        from rewards.rm.scorer import RunningNorm

        self.pool = RewardModelPool(str(cfg.model_dir.resolve()), cfg.scorers, cfg.batch_size, cfg.cpus, cfg.gpus,
                                    placement=placement)
        self.norm = RunningNorm() if cfg.normalize else None

    def score(self, samples):
        got = self.pool.score([s.prompt for s in samples], [s.response for s in samples])
        if self.norm is None:
            return got
        self.norm.update([r.score for r in got if r.status not in FAILED])
        return [r if r.status in FAILED else RewardResult(self.norm(r.score), r.status, {"raw": r.score}) for r in got]

    def extra_metrics(self) -> dict:
        return {"norm_mean": self.norm.mean, "norm_std": self.norm.std} if self.norm else {}


class JudgeSource(Source):
    concurrent = True

    def __init__(self, cfg: SourceConfig, placement=None):
        super().__init__(cfg)
        from cluster.judge_cmd import load_judges
        from cluster.judge_pool import JudgePool
        from cluster.judge_servers import start_served

        self.needs = ("reference",) if cfg.judge_mode == "reference" else ()
        config, self.servers = start_served(load_judges(cfg.judges), placement)
        self.pool = JudgePool(config, placement=placement)
        self.neutralised = 0

    def score(self, samples):
        # responses that carried the judge's own format markers (defused before judging): a
        # rising count means the policy is learning to talk to the judge
        with self.lock:
            self.neutralised += sum(carries_markers(s.response) for s in samples)
        third = {"group": [s.group for s in samples], "reference": [s.row.get("reference") for s in samples],
                 "pointwise": None}[self.cfg.judge_mode]
        return self.pool.rewards(self.cfg.judge_mode, [s.prompt for s in samples], [s.response for s in samples], third)

    def extra_metrics(self) -> dict:
        """This step's judging: latency, abstentions, position bias, agreement, tokens; overall
        (flat keys, on the dashboard) and per judge (`judges`)."""
        from rewards.judge.ensemble import summarise
        from rewards.judge.metrics import JudgeStats, principle_summary

        step = self.pool.step_stats()
        every = JudgeStats()
        for st in step.values():
            every = every.merge(st)
        per_judge = summarise(self.pool.config, step)
        keep = ("calls", "latency_p50_s", "latency_p95_s", "error_rate", "abstain_rate", "first_position_rate",
                "agreement", "prompt_tokens", "completion_tokens", "cost")
        overall = every.summary(lambda p, c: sum(m["cost"] for m in per_judge.values()))
        by_principle = principle_summary(step)  # per_principle judges: shares, abstain rate, mean score
        neutralised, self.neutralised = self.neutralised, 0
        return {"neutralised": neutralised, "tokens": every.prompt_tokens + every.completion_tokens,
                **{k: overall[k] for k in keep if k not in ("prompt_tokens", "completion_tokens")},
                **_error_kinds(overall),
                "judges": {name: {**{k: m[k] for k in keep}, **_error_kinds(m)} for name, m in per_judge.items()},
                **({"principles": by_principle} if by_principle else {})}

    def close(self) -> None:
        from cluster.judge_servers import stop_served

        self.pool.shutdown()
        stop_served(self.servers)


def _error_kinds(summary: dict) -> dict:
    """{"error_kinds": failed attempts and refused calls by cause} when any failed this step, else nothing."""
    return {"error_kinds": summary["error_kinds"]} if summary.get("error_kinds") else {}


class RuleSource(Source):
    """A Python function(prompt, response, row) → float, run on the driver (cheap rules only)."""

    def __init__(self, cfg: SourceConfig):
        super().__init__(cfg)
        self.fn = load_function(cfg.function)

    def score(self, samples):
        out = []
        for s in samples:
            try:
                out.append(RewardResult(float(self.fn(s.prompt, s.response, s.row)), "scored"))
            except Exception as e:  # one bad sample never sinks the batch
                out.append(RewardResult(0.0, ERROR, {"error": f"{type(e).__name__}: {e}"[:300]}))
        return out


def load_function(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"rule function {spec!r} cannot be loaded: {e}") from None
    if not callable(fn):
        raise ValueError(f"rule function {spec!r} is not callable")
    return fn


def build_sources(reward: RewardConfig, sources: list[SourceConfig], verifiers_cpus: float,
                  shared: dict | None = None, placement=None) -> list[Source]:
    """Sources for `sources`; the verifier pool (math, code and exact) is made once and kept in `shared`.
    `placement` (cluster.placement.Placements) says where the pools' actors go; None: plain scheduling."""
    shared = {} if shared is None else shared
    out: list[Source] = []
    for cfg in sources:
        if cfg.serve_app:  # a Serve application scores it (cluster/serve_pools.py)
            from cluster.serve_pools import serve_source

            out.append(serve_source(cfg, shared))
            continue
        if cfg.type in VERIFIED:
            if "verifiers" not in shared:
                from cluster.verifier_pool import VerifierPool
                from rewards.verify import VerifySettings

                shared["verifiers"] = VerifierPool(reward.verifiers, reward.sandbox_slots,
                                                   VerifySettings(math_timeout_s=reward.timeout_s,
                                                                  all_or_nothing=reward.all_or_nothing), reward.isolation,
                                                   num_cpus=verifiers_cpus, pids_cgroup=reward.pids_cgroup,
                                                   placement=placement)
            out.append({"math": MathSource, "code": CodeSource, "exact": ExactSource}[cfg.type](cfg, shared["verifiers"]))
        else:
            out.append(RuleSource(cfg) if cfg.type == "rule" else
                       {"rm": RMSource, "judge": JudgeSource}[cfg.type](cfg, placement))
    return out
