"""Reward pools that are Ray Serve applications (deploy/serve_apps.py), reached through DeploymentHandles.

A source with `serve_app` gets one of these instead of in-job actors. They answer like the in-job
pools (verify/score, score, rewards) and never lose a sample: a request that fails is retried, then
its samples get error results. They own no actors: closing a run or `threefold scale` leaves the
application alone; it scales by its own autoscaling config (change it and run `threefold serve`).
Also here: the JSON request checks and result encoding the deployments and the HTTP clients share.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from rewards.types import ERROR, RewardResult

log = logging.getLogger("threefold.serve_pools")
JUDGE_MODES = ("group", "reference", "pointwise")


# ---- JSON formats (HTTP) --------------------------------------------------------------------------

def result_dict(r: RewardResult) -> dict:
    return {"score": r.score, "status": r.status, "detail": r.detail}


def _lists(body: dict, keys: tuple[str, ...]) -> str | None:
    bad = [k for k in keys if not isinstance(body.get(k), list)]
    if bad:
        return f"{bad[0]!r} must be a list"
    if len({len(body[k]) for k in keys}) > 1:
        return f"{', '.join(repr(k) for k in keys)} must have the same length"
    return None


def verdicts_request(body: dict) -> tuple[str, str | None]:
    """("rows", problem) for {"rows": [...]}, ("score", problem) for {"responses", "answers"}."""
    if "rows" in body:
        return "rows", None if isinstance(body["rows"], list) else "'rows' must be a list of row objects"
    if "responses" in body or "answers" in body:
        return "score", _lists(body, ("responses", "answers"))
    return "", "give {\"rows\": [...]} (verdicts) or {\"responses\": [...], \"answers\": [...]} (math scores)"


def rm_request(body: dict) -> str | None:
    return _lists(body, ("prompts", "responses"))


def judge_request(body: dict) -> tuple[str, str | None]:
    """("pairs", problem) for {"pairs": [[prompt, a, b], ...]}, ("rewards", problem) for
    {"mode", "prompts", "responses", "third"?}."""
    if "pairs" in body:
        ok = isinstance(body["pairs"], list) and all(isinstance(p, list) and len(p) == 3 for p in body["pairs"])
        return "pairs", None if ok else "'pairs' must be a list of [prompt, response_a, response_b]"
    mode = body.get("mode")
    if mode not in JUDGE_MODES:
        return "", f"'mode' must be one of {', '.join(JUDGE_MODES)} (or give 'pairs'), got {mode!r}"
    return "rewards", _lists(body, ("prompts", "responses") + (("third",) if mode != "pointwise" else ()))


def load_served_judges(path: str):
    """The judges of a Serve judge app: every one reached by URL (a replica starts no vLLM server)."""
    from cluster.judge_cmd import JudgesConfigError, load_judges

    try:
        cfg = load_judges(path)
    except JudgesConfigError as e:
        raise ValueError(str(e)) from None
    served = [j.name for j in cfg.judges if j.serve is not None]
    if served:
        raise ValueError(f"{path}: judge {served[0]!r} has a `serve:` block; a Serve judge app reaches judges by "
                         "base_url only (serve the model with vLLM, or another Serve app, and give its URL)")
    return cfg


# ---- pools --------------------------------------------------------------------------------------

class ServePool:
    """One Serve application. `actors` is empty: the run owns nothing here."""

    def __init__(self, app: str, timeout_s: float = 900.0, max_retries: int = 2):
        from ray import serve
        from ray.serve.exceptions import RayServeException

        try:
            self.handle = serve.get_app_handle(app)
        except (RayServeException, KeyError, ValueError) as e:
            raise ValueError(f"Serve application {app!r} is not running on this cluster ({e}); deploy it first, "
                             "e.g. `threefold serve deploy/serve.yaml`") from None
        self.serve_app, self.timeout_s, self.max_retries = app, timeout_s, max_retries
        self.actors: list = []

    def calls(self, method: str, payloads: list[tuple], lost: Callable[[tuple, Exception], object],
              on_done: Callable[[object], None] | None = None) -> list:
        """`method(*payload)` for every payload, all in flight at once (Serve queues and autoscales);
        results in payload order. A failed call is retried `max_retries` times, then `lost(payload, err)`."""
        out: list = [None] * len(payloads)
        pending = {i: (getattr(self.handle, method).remote(*p), 0) for i, p in enumerate(payloads)}
        while pending:
            for i, (resp, tries) in list(pending.items()):
                try:
                    out[i] = resp.result(timeout_s=self.timeout_s)
                except Exception as e:  # noqa: BLE001 - a replica lost, a timeout: retry, then give error results
                    log.warning("Serve app %s: %s failed (try %d): %s", self.serve_app, method, tries + 1, e)
                    if tries < self.max_retries:
                        pending[i] = (getattr(self.handle, method).remote(*payloads[i]), tries + 1)
                        continue
                    out[i] = lost(payloads[i], e)
                del pending[i]
                if on_done:
                    on_done(out[i])
        return out

    def replicas(self) -> int:
        """Running replicas of the application (what status reports as this pool's size)."""
        from ray import serve

        app = serve.status().applications.get(self.serve_app)
        return sum(n for d in (app.deployments.values() if app else []) for s, n in d.replica_states.items()
                   if str(getattr(s, "value", s)) == "RUNNING")

    def resize(self, size: int) -> None:
        raise ValueError(f"this pool is the Serve application {self.serve_app!r}: change its autoscaling "
                         "(min_replicas/max_replicas) in the Serve config and run `threefold serve` again")

    def shutdown(self) -> None:
        """The application outlives the run."""


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _error(e: Exception, what: str) -> RewardResult:
    return RewardResult(0.0, ERROR, {"error": f"{what}: {type(e).__name__}"})


class ServeVerifierPool(ServePool):
    """The verifiers app (math, code and exact sources); records the sandbox modes its replicas report."""
    max_chunk = 16

    def __init__(self, app: str, **kw):
        super().__init__(app, **kw)
        self.modes: dict[str, str] = {}  # replica id → sandbox mode, for every replica that answered

    def verify(self, rows: list[dict], chunk: int = 4, on_done: Callable[[int], None] | None = None) -> list[dict]:
        from cluster.verifier_pool import _lost

        parts = _chunks(len(rows), max(1, min(chunk, self.max_chunk)))
        lost = lambda p, e: {"verdicts": [_lost(r, e) for r in p[0]]}  # noqa: E731
        done = (lambda got: on_done(len(got["verdicts"]))) if on_done else None
        got = self.calls("verify_tagged", [([rows[i] for i in idx],) for idx in parts], lost, done)
        for g in got:
            if "replica" in g:
                self.modes[g["replica"]] = g["mode"]
        return [v for g in got for v in g["verdicts"]]

    def score(self, responses: list[str], answers: list[str]) -> list[RewardResult]:
        parts = _chunks(len(responses), self.max_chunk)
        lost = lambda p, e: [_error(e, "verifier lost") for _ in p[0]]  # noqa: E731
        got = self.calls("score", [([responses[i] for i in idx], [answers[i] for i in idx]) for idx in parts], lost)
        return [r for g in got for r in g]

    def sandbox_modes(self) -> list[str]:
        """The sandbox modes of the replicas that answered (asks one when none has yet)."""
        if not self.modes:
            info = self.handle.info.remote().result(timeout_s=self.timeout_s)
            self.modes[info["replica"]] = info["mode"]
        return sorted(set(self.modes.values()))


class ServeRMPool(ServePool):
    """The reward-model app (rm sources)."""

    def __init__(self, app: str, batch_size: int = 64, **kw):
        super().__init__(app, **kw)
        self.batch_size = batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[RewardResult]:
        parts = _chunks(len(prompts), self.batch_size)
        lost = lambda p, e: [_error(e, "scorer lost") for _ in p[0]]  # noqa: E731
        got = self.calls("score", [([prompts[i] for i in idx], [responses[i] for i in idx]) for idx in parts], lost)
        return [r for g in got for r in g]


class ServeJudgePool(ServePool):
    """The judges app (judge sources): rewards like JudgePool, a prompt's group in one request, and the
    replicas' judge counts summed per step for the source's metrics."""
    max_chunk = 16

    def __init__(self, app: str, **kw):
        super().__init__(app, **kw)
        self.config = self.handle.config.remote().result(timeout_s=self.timeout_s)
        self._pending: dict = {}

    def rewards(self, kind: str, prompts, responses, third=None) -> list[RewardResult]:
        columns = [list(prompts), list(responses)] + ([list(third)] if kind != "pointwise" else [])
        if kind == "group":
            groups: dict = {}
            for i, g in enumerate(third):
                groups.setdefault(g, []).append(i)
            members = list(groups.values())
            parts = [sum(members[j:j + 4], []) for j in range(0, len(members), 4)]  # 4 groups a request
        else:
            parts = _chunks(len(prompts), self.max_chunk)
        lost = lambda p, e: {"results": [_error(e, "judge replica lost") for _ in p[1]], "stats": {}}  # noqa: E731
        got = self.calls("rewards_with_stats", [(kind, *[[c[i] for i in idx] for c in columns]) for idx in parts], lost)
        out: list = [None] * len(prompts)
        for idx, g in zip(parts, got):
            self._pending = _merge(self._pending, g["stats"])
            for i, r in zip(idx, g["results"]):
                out[i] = r
        return out

    def step_stats(self) -> dict:
        """Judge counts of this pool's requests since the previous call."""
        got, self._pending = self._pending, {}
        return got


def _merge(a: dict, b: dict) -> dict:
    from rewards.judge.metrics import JudgeStats

    return {k: a.get(k, JudgeStats()).merge(b.get(k, JudgeStats())) for k in {*a, *b}}


def serve_source(cfg, shared: dict):
    """The source for a SourceConfig with `serve_app`; the verifier sources of one app share a pool (in `shared`)."""
    from cluster import reward_sources as rs

    key = f"serve:{cfg.serve_app}"
    if cfg.type in rs.VERIFIED:
        if key not in shared:
            shared[key] = ServeVerifierPool(cfg.serve_app)
        return {"math": rs.MathSource, "code": rs.CodeSource, "exact": rs.ExactSource}[cfg.type](cfg, shared[key])
    if cfg.type == "rm":
        return _rm_source(rs, cfg, ServeRMPool(cfg.serve_app))
    if cfg.type == "judge":  # its own pool: the judge counts of a step belong to this source
        return _judge_source(rs, cfg, ServeJudgePool(cfg.serve_app))
    raise ValueError(f"source {cfg.name!r}: type {cfg.type} cannot use serve_app")


def _rm_source(rs, cfg, pool):
    """An RMSource scoring through `pool` (its own __init__ would start in-job scorers)."""
    from rewards.rm.scorer import RunningNorm

    src = rs.RMSource.__new__(rs.RMSource)
    rs.Source.__init__(src, cfg)
    src.pool, src.norm = pool, RunningNorm() if cfg.normalize else None
    return src


def _judge_source(rs, cfg, pool):
    """A JudgeSource judging through `pool` (no in-job judge actors or vLLM servers)."""
    src = rs.JudgeSource.__new__(rs.JudgeSource)
    rs.Source.__init__(src, cfg)
    src.needs = ("reference",) if cfg.judge_mode == "reference" else ()
    src.pool, src.servers, src.neutralised = pool, {}, 0
    return src


# ---- HTTP clients (threefold verify / rm score / judge --url) -------------------------------------

def post_json(url: str, body: dict, timeout_s: float = 900.0) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())


def post_chunks(url: str, columns: dict[str, list], out_key: str, lost: Callable[[str, int], object],
                chunk: int = 16, workers: int = 8, on_done: Callable[[int], None] | None = None,
                extra: dict | None = None) -> list:
    """POST the columns to a Serve app in chunks, `workers` at once (so its autoscaling sees the load);
    item i of a chunk whose request failed gets `lost(reason, i)`. Results in input order."""
    import urllib.error
    from concurrent.futures import ThreadPoolExecutor

    def one(idx: list[int]) -> list:
        try:
            got = post_json(url, {**(extra or {}), **{k: [v[i] for i in idx] for k, v in columns.items()}})[out_key]
            if len(got) != len(idx):
                raise ValueError(f"{len(got)} results for {len(idx)} items")
        except urllib.error.HTTPError as e:
            got = [lost(f"{url}: HTTP {e.code}: {e.read()[:300].decode(errors='replace')}", i) for i in idx]
        except (OSError, ValueError, KeyError) as e:
            got = [lost(f"{url}: {type(e).__name__}: {e}", i) for i in idx]
        if on_done:
            on_done(len(idx))
        return got

    n = len(next(iter(columns.values()), []))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return [r for part in ex.map(one, _chunks(n, chunk)) for r in part]
