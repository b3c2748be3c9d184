"""Reward pools as Ray Serve applications (deploy/serve.yaml): verifiers, reward model, judges.

Each deployment answers DeploymentHandle calls with the result types the in-job pools return and
HTTP POSTs with JSON (formats in the README, "Reward pools on Ray Serve"). The logic stays in
rewards/ and cluster/serve_pools.py; replicas only hold the state (a sandbox, a model, an ensemble).
The builders take the application's `args` from the Serve config, checked by the models below.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster.serve_pools import result_dict, verdicts_request, rm_request, judge_request

# Replicas' sandbox uids: above the in-job pools' range, one block per pid (unique on a node).
SERVE_UID_BASE = 200_000


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerifierArgs(Args):
    sandbox_slots: int = Field(2, ge=1, le=64)
    """Concurrent sandboxed programs per replica."""
    isolation: Literal["auto", "bwrap", "rlimits", "none"] = "auto"
    math_timeout_s: float = Field(5.0, gt=0.0, le=600.0)
    all_or_nothing: bool = False
    pids_cgroup: bool = False


class RMArgs(Args):
    model_dir: str
    """The reward-model directory on the cluster's nodes (what `threefold rm train` wrote)."""
    batch_size: int = Field(64, ge=1)
    threads: int = Field(1, ge=1)


class JudgeArgs(Args):
    judges: str
    """The judges YAML on the cluster's nodes; every judge needs a base_url (no `serve:` blocks)."""
    share: int = Field(1, ge=1)
    """Divides each judge's max_concurrency per replica: set it to max_replicas so the replicas
    together stay within each endpoint's limit."""


async def _body(request: Request) -> dict | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the request body must be JSON"}, status_code=400)
    return body if isinstance(body, dict) else JSONResponse({"error": "the body must be a JSON object"}, 400)


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


@serve.deployment(name="Verifier")
class VerifierDeployment:
    def __init__(self, args: VerifierArgs):
        from rewards.code.sandbox import UIDS_PER_SLOT
        from rewards.verify import VerifierCore, VerifySettings

        settings = VerifySettings(math_timeout_s=args.math_timeout_s, all_or_nothing=args.all_or_nothing)
        uid_base = SERVE_UID_BASE + os.getpid() * args.sandbox_slots * UIDS_PER_SLOT
        self.core = VerifierCore(settings, args.sandbox_slots, args.isolation, uid_base, args.pids_cgroup)

    async def verify(self, rows: list) -> list[dict]:
        return await self.core.verify(rows)

    async def verify_tagged(self, rows: list) -> dict:
        """Verdicts plus which replica and sandbox mode gave them (the run's pool reports the modes)."""
        return {"verdicts": await self.core.verify(rows), **self.info()}

    async def score(self, responses: list[str], answers: list[str]) -> list:
        return await self.core.score(responses, answers)

    def info(self) -> dict:
        return {**self.core.info(), "replica": serve.get_replica_context().replica_id.unique_id}

    async def __call__(self, request: Request):
        if request.method == "GET":
            return self.info()
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        kind, problem = verdicts_request(body)
        if problem:
            return _bad(problem)
        if kind == "rows":
            return {"verdicts": await self.core.verify(body["rows"])}
        return {"results": [result_dict(r) for r in await self.core.score(body["responses"], body["answers"])]}

    def __del__(self):  # Serve calls it when the replica stops: the sandbox's helpers go with it
        core = getattr(self, "core", None)
        if core is not None:
            core.sandbox.close()


@serve.deployment(name="RewardModel")
class RMDeployment:
    def __init__(self, args: RMArgs):
        import torch

        from rewards.rm.scorer import RMScorer

        torch.set_num_threads(args.threads)
        self.scorer = RMScorer(args.model_dir, args.batch_size)
        self.lock = asyncio.Lock()  # one forward pass at a time; requests queue here
        self.rows_done = 0

    async def score(self, prompts: list[str], responses: list[str]) -> list:
        async with self.lock:
            out = await asyncio.to_thread(self.scorer.score, prompts, responses)
        self.rows_done += len(out)
        return out

    def info(self) -> dict:
        return {"pid": os.getpid(), "rows_done": self.rows_done, "meta": self.scorer.meta,
                "replica": serve.get_replica_context().replica_id.unique_id}

    async def __call__(self, request: Request):
        if request.method == "GET":
            return self.info()
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        problem = rm_request(body)
        if problem:
            return _bad(problem)
        return {"results": [result_dict(r) for r in await self.score(body["prompts"], body["responses"])]}


@serve.deployment(name="Judges")
class JudgeDeployment:
    def __init__(self, args: JudgeArgs):
        from cluster.serve_pools import load_served_judges
        from rewards.judge.ensemble import JudgeEnsemble

        self.ens = JudgeEnsemble(load_served_judges(args.judges), args.share)

    def config(self):
        return self.ens.config

    async def rewards(self, kind: str, *columns: list) -> list:
        from rewards.judge.reward import group_rewards, pointwise_rewards, reference_rewards

        fn = {"reference": reference_rewards, "group": group_rewards, "pointwise": pointwise_rewards}[kind]
        return await fn(self.ens, *columns)

    async def rewards_with_stats(self, kind: str, *columns: list) -> dict:
        """Rewards plus the replica's judge counts since its last take (the run's pool sums them per step)."""
        results = await self.rewards(kind, *columns)
        return {"results": results, "stats": {name: st.take() for name, st in self.ens.stats.items()}}

    async def judge_pairs(self, rows: list) -> list:
        return await self.ens.judge_pairs([tuple(r) for r in rows])

    async def __call__(self, request: Request):
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        kind, problem = judge_request(body)
        if problem:
            return _bad(problem)
        if kind == "pairs":
            return {"verdicts": [v.to_dict() for v in await self.judge_pairs(body["pairs"])]}
        columns = [body["prompts"], body["responses"]] + ([body["third"]] if body["mode"] != "pointwise" else [])
        return {"results": [result_dict(r) for r in await self.rewards(body["mode"], *columns)]}


def verifier_app(args: dict) -> serve.Application:
    return VerifierDeployment.bind(VerifierArgs.model_validate(args))


def rm_app(args: dict) -> serve.Application:
    checked = RMArgs.model_validate(args)
    if not (Path(checked.model_dir) / "config.json").is_file():
        raise ValueError(f"rm app: model_dir {checked.model_dir!r} is not a reward-model directory on this node "
                         f"(cwd {os.getcwd()}); train one with `threefold rm train CONFIG`")
    return RMDeployment.bind(checked)


def judge_app(args: dict) -> serve.Application:
    from cluster.serve_pools import load_served_judges

    checked = JudgeArgs.model_validate(args)
    load_served_judges(checked.judges)  # a bad judges file fails the deploy, not each replica
    return JudgeDeployment.bind(checked)


BUILDERS = {"deploy.serve_apps:verifier_app": VerifierArgs, "deploy.serve_apps:rm_app": RMArgs,
            "deploy.serve_apps:judge_app": JudgeArgs}  # import path → its args model (threefold serve checks)
