"""One judge endpoint, called robustly through the `openai` client.

Each `JudgeClient.complete` is one judge call: it waits for a slot under the judge's concurrency
limit, then makes up to 1 + max_retries attempts. An attempt is bounded by timeout_s. 429, 5xx,
timeouts and connection errors are retried after an exponential backoff with jitter, or after the
reply's Retry-After when it has one; other errors (4xx, malformed replies) are not. A circuit
breaker counts consecutive failed attempts (not 429s, nor a write to a pooled connection the server
had already closed: the endpoint is up) and, once open, fails calls at once without sending
them; after reset_after_s it lets one probe through, which closes it on success. A call never raises for an endpoint problem: it returns a Reply with `error` set.
The API key is read from the environment at call time and scrubbed from every error message.
"""
from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from dataclasses import dataclass, replace

import openai

from rewards.judge.config import BreakerConfig, JudgeSpec, RetryConfig
from rewards.judge.metrics import JudgeStats
from rewards.judge.parse import TokenLogprob

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STALE_CONNECTION = ("ClientConnectionResetError",)  # aiohttp: a write to a closing transport
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Reply:
    """What one judge call came back with; `error` is None exactly when there is a reply."""

    text: str | None
    finish_reason: str | None = None
    tokens: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _Failure:
    message: str
    retry: bool  # worth another attempt
    endpoint_down: bool  # counts against the circuit breaker
    retry_after: float | None = None
    kind: str = ""  # the cause, for the judge's error_kinds metric
    neutral: bool = False  # says nothing about the endpoint: the breaker neither counts nor clears it


def _root(exc: BaseException) -> BaseException:
    """The innermost cause: the openai client reports a dropped connection as "Request timed out."."""
    seen = [exc]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen and len(seen) < 8:
        seen.append(nxt)
    return seen[-1]


class CircuitBreaker:
    """closed → (failure_threshold consecutive failures) → open → (reset_after_s) → half-open: one
    probe in flight; its success closes the breaker, its failure opens it again."""

    def __init__(self, cfg: BreakerConfig, clock=time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.state, self.failures, self.opened_at, self.probing = CLOSED, 0, 0.0, False
        self.transitions: list[tuple[float, str]] = []  # (clock time, new state)

    def _move(self, state: str) -> None:
        self.state = state
        self.transitions.append((self.clock(), state))

    def allow(self) -> bool:
        """May a request be sent now? In half-open state only the single probe may."""
        if self.state == OPEN and self.clock() - self.opened_at >= self.cfg.reset_after_s:
            self._move(HALF_OPEN)
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def record(self, endpoint_ok: bool) -> bool:
        """Record an attempt's outcome; True if this opened the breaker."""
        self.probing = False
        if endpoint_ok:
            self.failures = 0
            if self.state != CLOSED:
                self._move(CLOSED)
            return False
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.cfg.failure_threshold):
            self.opened_at = self.clock()
            self._move(OPEN)
            return True
        return False

    def abandon(self) -> None:
        """An attempt was cancelled before it had an outcome: free the probe slot."""
        self.probing = False


def retry_after_s(headers) -> float | None:
    """Seconds asked for by Retry-After-Ms / Retry-After (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _classify(exc: Exception) -> _Failure:
    if isinstance(exc, TimeoutError):
        return _Failure("timeout", retry=True, endpoint_down=True, kind="timeout")
    if isinstance(exc, openai.APIStatusError):
        code, body, wait = exc.status_code, str(exc), retry_after_s(exc.response.headers)
        if code == 429:  # throttled: the endpoint is up
            return _Failure(f"HTTP 429: {body}", retry=True, endpoint_down=False, retry_after=wait, kind="HTTP 429")
        return _Failure(f"HTTP {code}: {body}", retry=code >= 500, endpoint_down=code >= 500, retry_after=wait,
                        kind=f"HTTP {code}")
    if isinstance(exc, openai.APIConnectionError):
        root = _root(exc)
        cause = f" ({type(root).__name__}: {root})" if root is not exc else ""
        # a write to a pooled connection the server had already closed: the request never left, and
        # the endpoint is up (seen in bursts when a step reuses connections idle past the server's
        # keep-alive); retried, and not counted against the breaker
        stale = type(root).__name__ in STALE_CONNECTION
        return _Failure(f"connection error: {exc}{cause}", retry=True, endpoint_down=not stale,
                        kind=f"connection ({type(root).__name__})", neutral=stale)
    return _Failure(f"malformed reply: {type(exc).__name__}: {exc}", retry=False, endpoint_down=True,
                    kind="malformed reply")


def _read(data: dict) -> Reply:
    """The parts of a chat-completion JSON a judge needs; raises on a malformed one."""
    choice = data["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise ValueError("reply has no message content")
    content = (choice.get("logprobs") or {}).get("content")
    tokens = [(t["token"], float(t["logprob"]),
               tuple((a["token"], float(a["logprob"])) for a in t.get("top_logprobs") or ()))
              for t in content] if content else None
    usage = data.get("usage") or {}
    return Reply(text, choice.get("finish_reason"), tokens,
                 int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _http_client():
    """aiohttp transport where available: its connection pool costs far less CPU per request than
    httpx's once dozens of requests are in flight (bench/judge.py). Else the client's default."""
    try:
        return openai.DefaultAioHttpClient()
    except RuntimeError:  # the openai package was installed without aiohttp support
        return None


class JudgeClient:
    """Calls one judge. Metrics go into `stats` (calls, errors, retries, tokens, latency)."""

    def __init__(self, spec: JudgeSpec, retry: RetryConfig, breaker: BreakerConfig,
                 stats: JudgeStats | None = None, concurrency: int | None = None, clock=time.monotonic):
        if spec.base_url is None:  # never fall back to the openai client's default endpoint
            raise ValueError(f"judge {spec.name!r} is served by the run (`serve`) and has no URL yet; "
                             "start its server first (cluster.judge_servers)")
        self.spec, self.retry = spec, retry
        self.stats = stats if stats is not None else JudgeStats()
        self.breaker = CircuitBreaker(breaker, clock)
        self.concurrency = concurrency or spec.max_concurrency
        self._loop = self._client = self._sem = None
        self._sem_size = 0
        self._rng = random.Random()

    def set_concurrency(self, n: int) -> None:
        """New limit on requests in flight; applies to calls that start from now on."""
        self.concurrency = max(1, int(n))

    def _api_key(self) -> str | None:
        if self.spec.api_key_env is None:
            return "EMPTY"  # local servers ignore the key; the client wants one
        return os.environ.get(self.spec.api_key_env) or None

    def _session(self, key: str) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """Client and semaphore for the running event loop (both are bound to the loop that made them)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client.api_key != key:
            self._client = openai.AsyncOpenAI(api_key=key, base_url=self.spec.base_url, max_retries=0,
                                              timeout=self.spec.timeout_s + 1.0, http_client=_http_client())
            self._loop, self._sem = loop, None
        if self._sem is None or self._sem_size != self.concurrency:
            self._sem, self._sem_size = asyncio.Semaphore(self.concurrency), self.concurrency
        return self._client, self._sem

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (call before that loop ends)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._loop = self._client = self._sem = None

    def _redact(self, message: str) -> str:
        key = self._api_key()
        if key and key != "EMPTY":
            message = message.replace(key, "***")
        return message[:_MAX_ERROR_CHARS]

    def _request(self, messages: list[dict]) -> dict:
        """The chat-completions body: judge settings, then extra_body's fields on top."""
        body = {"model": self.spec.model, "messages": messages, "temperature": self.spec.temperature,
                "max_tokens": self.spec.max_tokens}
        if self.spec.logprobs:
            body.update(logprobs=True, top_logprobs=self.spec.top_logprobs)
        return {**body, **self.spec.extra_body}

    async def _attempt(self, client: openai.AsyncOpenAI, request: dict) -> tuple[Reply | None, _Failure | None]:
        try:
            # The client's raw POST (auth, base URL, HTTP errors as openai exceptions) with plain JSON
            # in and out: the typed create() spends ~1 ms of CPU per call converting its arguments
            # and building response models, which caps throughput at high concurrency.
            data = await asyncio.wait_for(client.post("/chat/completions", body=request, cast_to=object),
                                          self.spec.timeout_s)
            return _read(data), None
        except Exception as e:  # anything the endpoint does wrong becomes a classified failure
            return None, _classify(e)
        except BaseException:
            self.breaker.abandon()
            raise

    def _backoff(self, attempt: int, failure: _Failure) -> float | None:
        """Seconds to wait before the next attempt; None if a Retry-After asks for too long."""
        if failure.retry_after is not None:
            return failure.retry_after if failure.retry_after <= self.retry.max_retry_after_s else None
        cap = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2 ** (attempt - 1))
        return cap * self._rng.uniform(0.5, 1.0)

    def _count(self, kind: str) -> None:
        self.stats.error_kinds[kind] = self.stats.error_kinds.get(kind, 0) + 1

    def _failed(self, message: str, attempts: int) -> Reply:
        self.stats.errors += 1
        return Reply(None, attempts=attempts, error=self._redact(message))

    async def complete(self, messages: list[dict]) -> Reply:
        """One judge call with retries; never raises for endpoint trouble."""
        self.stats.calls += 1
        key = self._api_key()
        if key is None:
            self._count("no API key")
            return self._failed(f"environment variable {self.spec.api_key_env} (api_key_env) is not set", 0)
        client, sem = self._session(key)
        request = self._request(messages)
        async with sem:
            start, attempts, last = time.perf_counter(), 0, None
            while True:
                if not self.breaker.allow():
                    self.stats.rejected += 1
                    self._count("circuit breaker open")
                    return self._failed("circuit breaker open" + (f" (last error: {last.message})" if last else ""),
                                        attempts)
                attempts += 1
                reply, failure = await self._attempt(client, request)
                if failure is not None and failure.neutral:
                    self.breaker.abandon()  # frees a half-open probe slot; counts nothing
                elif self.breaker.record(failure is None or not failure.endpoint_down):
                    self.stats.breaker_opens += 1
                if failure is None:
                    return self._succeeded(reply, attempts, start)
                last = failure
                self._count(failure.kind)  # every failed attempt, retried or not: what opened a breaker shows
                if not failure.retry or attempts > self.retry.max_retries:
                    return self._failed(failure.message, attempts)
                delay = self._backoff(attempts, failure)
                if delay is None:
                    return self._failed(f"{failure.message} (Retry-After above retry.max_retry_after_s)", attempts)
                self.stats.retries += 1
                await asyncio.sleep(delay)

    def _succeeded(self, reply: Reply, attempts: int, start: float) -> Reply:
        s = self.stats
        s.latencies.append(time.perf_counter() - start)
        s.prompt_tokens += reply.prompt_tokens
        s.completion_tokens += reply.completion_tokens
        return replace(reply, attempts=attempts)
