"""Test double: a scripted OpenAI-compatible chat-completions server on 127.0.0.1 (not product code).

A real HTTP server (aiohttp, in its own thread), so the real `openai` client and the judge code
are exercised end to end. A script — any callable taking the `Seen` request and returning a
`Reply` — decides each answer: a verdict text, an HTTP error with headers (429 + Retry-After, 500),
a stall, a raw (e.g. truncated) body, or a dropped connection. Replies count characters as tokens
(like the char-level demo model): usage.prompt_tokens = characters of all message contents,
usage.completion_tokens = characters of the reply. With logprobs requested, every character is one
token with log-prob 0, except the verdict/score character inside the last [[...]], whose
alternatives are `Reply.verdict_probs`.

Also runnable for benchmarks: `python tests/doubles/openai_double.py --latency 0.1` serves a fixed
"Verdict: [[A]]" after a fixed delay and prints `PORT <n>` once it listens; GET /v1/double/stats
returns (and resets) the mean time the server held each request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

_LAST_BRACKET = re.compile(r"\[\[(A|B|tie|10|[1-9])\]\](?!.*\[\[)", re.S)


@dataclass
class Seen:
    """One request as the double received it."""

    n: int  # 0-based arrival index
    t: float  # time.monotonic() on arrival
    model: str
    messages: list
    headers: dict
    body: dict

    @property
    def user(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""


@dataclass
class Reply:
    """What the double answers; defaults give a 200 chat completion with `text`."""

    text: str = ""
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering
    body: str | None = None  # raw body sent instead of a completion (e.g. truncated JSON)
    finish_reason: str = "stop"
    verdict_probs: dict[str, float] | None = None  # alternatives at the [[X]] token
    drop: bool = False  # close the connection without an answer


def by_model(scripts: dict[str, Callable[[Seen], Reply]]) -> Callable[[Seen], Reply]:
    """One script per model name, so one server can play several judges; unknown models get a 404."""
    def script(seen: Seen) -> Reply:
        fn = scripts.get(seen.model)
        return fn(seen) if fn else Reply(f"no scripted model {seen.model!r}", status=404)
    return script


def _logprobs(text: str, top: int, verdict_probs: dict[str, float] | None) -> dict:
    m = _LAST_BRACKET.search(text)
    at = m.start(1) if m else -1
    content = []
    for i, ch in enumerate(text):
        alts = [(ch, 0.0)]
        if i == at and verdict_probs:
            alts = sorted(((t, math.log(p)) for t, p in verdict_probs.items()), key=lambda a: -a[1])
        chosen = dict(alts).get(ch, 0.0)
        content.append({"token": ch, "logprob": chosen, "bytes": list(ch.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                         for t, lp in alts[:top]]})
    return {"content": content}


def completion(seen: Seen, reply: Reply) -> dict:
    """The chat-completion JSON for `reply`."""
    prompt_tokens = sum(len(m.get("content") or "") for m in seen.messages)
    lp = _logprobs(reply.text, int(seen.body.get("top_logprobs") or 1), reply.verdict_probs) \
        if seen.body.get("logprobs") else None
    return {"id": f"chatcmpl-double-{seen.n}", "object": "chat.completion", "created": int(time.time()),
            "model": seen.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason, "logprobs": lp}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.text),
                      "total_tokens": prompt_tokens + len(reply.text)}}


class OpenAIDouble:
    """`with OpenAIDouble(script) as srv:` → srv.base_url ("http://127.0.0.1:PORT/v1"), srv.requests."""

    def __init__(self, script: Callable[[Seen], Reply]):
        self.script = script
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.in_flight: dict[str, int] = {}  # per model, only touched on the server's loop
        self.max_in_flight: dict[str, int] = {}
        self.handler_s: list[float] = []  # time from handler start to reply, per request

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def seen_by(self, model: str) -> list[Seen]:
        """The requests that named `model`, in arrival order."""
        with self._lock:
            return [s for s in self.requests if s.model == model]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            return await self._answer(request)
        finally:
            self.handler_s.append(time.perf_counter() - t0)

    async def _stats(self, request: web.Request) -> web.Response:
        """How long the server itself held requests: lets a benchmark subtract the server's share."""
        times, self.handler_s = self.handler_s, []
        return web.json_response({"requests": len(times), "mean_handler_s": sum(times) / len(times) if times else None})

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.text())
        with self._lock:
            seen = Seen(len(self.requests), time.monotonic(), body.get("model", ""), body.get("messages", []),
                        dict(request.headers), body)
            self.requests.append(seen)
        reply = self.script(seen)
        self.in_flight[seen.model] = self.in_flight.get(seen.model, 0) + 1
        self.max_in_flight[seen.model] = max(self.max_in_flight.get(seen.model, 0), self.in_flight[seen.model])
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            self.in_flight[seen.model] -= 1
        if reply.drop:
            request.transport.abort()
            return web.Response(status=500)
        if reply.body is not None:
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers,
                                content_type="application/json")
        if reply.status != 200:
            message = reply.text or f"scripted {reply.status}"
            err = {"error": {"message": message, "type": "double", "code": reply.status}}
            return web.json_response(err, status=reply.status, headers=reply.headers)
        return web.json_response(completion(seen, reply), headers=reply.headers)

    async def _start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/double/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self, port: int = 0) -> OpenAIDouble:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            stalled = asyncio.all_tasks(self._loop)  # handlers still sleeping in a scripted stall
            for task in stalled:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*stalled, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="openai-double", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test double server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OpenAIDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="Test double: OpenAI-compatible server with a fixed latency.")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds before each reply")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = OpenAIDouble(lambda seen: Reply("Both are fine.\nVerdict: [[A]]", delay_s=args.latency)).start(args.port)
    print(f"PORT {srv.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
