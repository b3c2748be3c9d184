"""Fault injection against a scripted OpenAI-compatible test double: 500s, 429 + Retry-After,
stalls past the timeout, rambling text, truncated JSON, dropped connections, an open breaker."""
import random
import time

import pytest

from rewards.judge.client import CLOSED, HALF_OPEN, OPEN
from tests.doubles.openai_double import OpenAIDouble, Reply, by_model
from tests.doubles.judge_helpers import GOOD, ensemble, pairs, prefers

SCRIPTS: dict = {}


@pytest.fixture(scope="module")
def srv():
    with OpenAIDouble(by_model(SCRIPTS)) as server:
        yield server


def fail_first(n: int, reply: Reply):
    """Answer `reply` to the first n requests of each (model, prompt), then a good verdict."""
    seen_count: dict = {}

    def script(seen):
        key = (seen.model, seen.user)
        seen_count[key] = seen_count.get(key, 0) + 1
        return reply if seen_count[key] <= n else prefers("right")(seen)
    return script


def test_5xx_is_retried_and_the_verdict_stands(srv):
    SCRIPTS["flaky500"] = fail_first(2, Reply(status=503))
    ens = ensemble(srv.base_url, "flaky500", retry={"max_retries": 2, "backoff_base_s": 0.01})
    [v] = pairs(ens, [("q", "right answer", "wrong answer")])
    assert v.winner == "A" and v.p_a == 1.0
    assert len(srv.seen_by("flaky500")) == 6  # 2 orders × (2 failures + 1 success)
    m = ens.metrics()["flaky500"]
    assert (m["calls"], m["retries"], m["error_rate"], m["abstain_rate"]) == (2, 4, 0.0, 0.0)
    assert m["error_kinds"] == {"HTTP 503": 4}  # the retried attempts show, though every call succeeded


def test_retries_stay_bounded_and_failure_is_an_abstention(srv):
    SCRIPTS["down500"] = lambda seen: Reply(status=500)
    ens = ensemble(srv.base_url, "down500", retry={"max_retries": 2, "backoff_base_s": 0.01},
                   circuit_breaker={"failure_threshold": 100})
    [v] = pairs(ens, [("q", "x", "y")])
    assert v.winner == "abstain" and v.p_a is None
    assert len(srv.seen_by("down500")) == 2 * 3  # 1 + max_retries attempts per order, no more
    assert "HTTP 500" in v.votes[0].reason
    assert ens.metrics()["down500"]["error_rate"] == 1.0


def test_429_retry_after_is_honoured(srv):
    SCRIPTS["ratelimited"] = fail_first(1, Reply(status=429, headers={"Retry-After": "1"}))
    # backoff_base_s=5 would wait 2.5-5 s: a second attempt after ~1 s shows Retry-After was used.
    ens = ensemble(srv.base_url, "ratelimited", retry={"max_retries": 1, "backoff_base_s": 5.0})
    [v] = pairs(ens, [("q", "right", "other")])
    assert v.winner == "A"
    seen = srv.seen_by("ratelimited")
    for prompt in {s.user for s in seen}:
        first, second = [s.t for s in seen if s.user == prompt]
        assert 1.0 <= second - first < 1.5
    assert ens.breaker_states()["ratelimited"] == CLOSED  # throttling is not an outage


def test_429_asking_for_too_long_gives_up_at_once(srv):
    SCRIPTS["slowdown"] = lambda seen: Reply(status=429, headers={"Retry-After": "120"})
    ens = ensemble(srv.base_url, "slowdown", retry={"max_retries": 3, "max_retry_after_s": 60})
    t0 = time.monotonic()
    [v] = pairs(ens, [("q", "x", "y")])
    assert time.monotonic() - t0 < 1.0 and len(srv.seen_by("slowdown")) == 2
    assert v.winner == "abstain" and "Retry-After above retry.max_retry_after_s" in v.votes[0].reason


def test_stall_past_the_timeout(srv):
    SCRIPTS["stall"] = lambda seen: Reply(GOOD.format("A"), delay_s=5.0)
    ens = ensemble(srv.base_url, "stall", judge={"timeout_s": 0.3}, retry={"max_retries": 1, "backoff_base_s": 0.01})
    t0 = time.monotonic()
    [v] = pairs(ens, [("q", "x", "y")])
    elapsed = time.monotonic() - t0
    assert v.winner == "abstain" and "timeout" in v.votes[0].reason
    assert 0.6 <= elapsed < 1.5  # two 0.3 s attempts (orders run concurrently), not the 5 s stall
    assert len(srv.seen_by("stall")) == 4


def test_rambling_and_truncated_json_become_abstentions(srv):
    SCRIPTS["ramble"] = lambda seen: Reply("Well, A has merits, but B... it depends. Perhaps A? Or B.")
    SCRIPTS["truncated"] = lambda seen: Reply(body='{"id": "x", "object": "chat.completion", "choices": [{"mess')
    SCRIPTS["sound"] = prefers("right")
    ens = ensemble(srv.base_url, "ramble", "truncated", "sound", retry={"max_retries": 2})
    [v] = pairs(ens, [("q", "right", "wrong")])
    by = {x.judge: x for x in v.votes}
    assert by["ramble"].winner == "abstain" and "not a \"Verdict" in by["ramble"].reason
    assert by["truncated"].winner == "abstain" and "malformed reply" in by["truncated"].reason
    assert len(srv.seen_by("truncated")) == 2  # a malformed reply is not retried
    assert v.winner == "A"  # the one judge that answered decides; abstentions do not vote
    m = ens.metrics()
    assert m["ramble"]["abstain_rate"] == 1.0 and m["ramble"]["error_rate"] == 0.0
    assert m["truncated"]["error_rate"] == 1.0


def test_a_batch_with_every_fault_completes(srv):
    rng = random.Random(7)
    faults = [Reply(status=500), Reply(status=429, headers={"Retry-After": "0"}), Reply(delay_s=2.0),
              Reply("rambling with no verdict"), Reply(body='{"choices": [{"message": {"content": "Verd'),
              Reply(drop=True)]

    def chaos(seen):
        return rng.choice(faults) if rng.random() < 0.5 else prefers("right")(seen)
    SCRIPTS["chaos"] = chaos
    max_retries = 2
    ens = ensemble(srv.base_url, "chaos", judge={"timeout_s": 0.5, "max_concurrency": 32},
                   retry={"max_retries": max_retries}, circuit_breaker={"failure_threshold": 1000})
    rows = [(f"q{i}", "right", "wrong") if i % 2 else (f"q{i}", "wrong", "right") for i in range(40)]
    verdicts = pairs(ens, rows)
    assert len(verdicts) == 40
    truth = ["A" if i % 2 else "B" for i in range(40)]
    assert all(v.winner in (t, "abstain") for v, t in zip(verdicts, truth))  # never a wrong guess
    assert 0 < sum(v.winner == "abstain" for v in verdicts) < 40
    assert len(srv.seen_by("chaos")) <= 40 * 2 * (1 + max_retries)


def _calls(ens, n):
    return [v.votes[0] for v in pairs(ens, [(f"p{i}", "right", "wrong") for i in range(n)])]


def test_circuit_breaker_opens_then_probes_and_closes(srv):
    healthy = {"now": False}
    SCRIPTS["outage"] = lambda seen: prefers("right")(seen) if healthy["now"] else Reply(status=502)
    ens = ensemble(srv.base_url, "outage", judge={"max_concurrency": 1},
                   retry={"max_retries": 0}, circuit_breaker={"failure_threshold": 3, "reset_after_s": 0.4})
    breaker = ens.clients[0].breaker
    _calls(ens, 2)  # 4 calls: 3 failures open the breaker, the 4th is refused unsent
    assert len(srv.seen_by("outage")) == 3 and breaker.state == OPEN
    _calls(ens, 3)
    assert len(srv.seen_by("outage")) == 3  # nothing sent while open
    time.sleep(0.45)
    _calls(ens, 1)  # still down: one probe goes out, fails, the breaker opens again
    assert len(srv.seen_by("outage")) == 4 and breaker.state == OPEN
    healthy["now"] = True
    time.sleep(0.45)
    votes = _calls(ens, 3)
    assert breaker.state == CLOSED and [v.winner for v in votes] == ["A"] * 3
    assert len(srv.seen_by("outage")) == 4 + 6
    assert [s for _, s in breaker.transitions] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
    m = ens.metrics()["outage"]
    assert m["breaker_opens"] == 2 and m["rejected_by_breaker"] == 1 + 6 + 1
    assert m["error_kinds"] == {"HTTP 502": 4, "circuit breaker open": 8}


def test_a_dropped_connection_is_reported_with_its_cause(srv):
    # the openai client words a dropped connection as "Request timed out."; the metric and the reason
    # name what happened underneath, so a slow judge and a disconnecting one can be told apart
    SCRIPTS["dropper"] = lambda seen: Reply(drop=True)
    ens = ensemble(srv.base_url, "dropper", retry={"max_retries": 0}, circuit_breaker={"failure_threshold": 100})
    vote = _calls(ens, 1)[0]
    kinds = ens.metrics()["dropper"]["error_kinds"]
    assert list(kinds.values()) == [2] and len(kinds) == 1
    (kind,) = kinds
    assert kind.startswith("connection (") and kind not in ("connection (APIConnectionError)",
                                                              "connection (APITimeoutError)"), kind
    assert vote.winner == "abstain" and kind[len("connection ("):-1] in vote.reason


def test_per_judge_concurrency_limit(srv):
    SCRIPTS["narrow"] = lambda seen: Reply(GOOD.format("A"), delay_s=0.1)
    ens = ensemble(srv.base_url, "narrow", judge={"max_concurrency": 3})
    t0 = time.monotonic()
    pairs(ens, [(f"q{i}", "x", "y") for i in range(6)])  # 12 requests, 3 at a time: 4 waves of 0.1 s
    assert srv.max_in_flight["narrow"] == 3
    assert 0.4 <= time.monotonic() - t0 < 1.0
    lat = ens.metrics()["narrow"]
    assert 0.1 <= lat["latency_p50_s"] <= lat["latency_p95_s"] < 0.4


def test_logprob_p_a_and_cost_accounting(srv):
    def confident(seen):
        text = seen.user
        first_right = "right" in text[text.index("[Response A]"):text.index("[Response B]")]
        v = "A" if first_right else "B"
        probs = {"A": 0.8, "B": 0.2} if first_right else {"A": 0.25, "B": 0.75}
        return Reply(GOOD.format(v), verdict_probs=probs)
    SCRIPTS["confident"] = confident
    ens = ensemble(srv.base_url, "confident", judge={"price_per_1k_tokens": 0.5, "price_per_1k_output_tokens": 2.0})
    [v] = pairs(ens, [("q", "right", "wrong")])
    # (A,B): P(first=A) = 0.8. (B,A): P(first=B) = 0.25 → P(A) = 0.75. Mean 0.775.
    assert v.winner == "A" and v.p_a == pytest.approx(0.775, abs=1e-9)
    seen = srv.seen_by("confident")
    assert all(s.body["logprobs"] is True and s.body["top_logprobs"] == 5 for s in seen)
    prompt_chars = sum(len(s.user) for s in seen)  # the double counts one token per character
    completion_chars = 2 * len(GOOD.format("A"))
    m = ens.metrics()["confident"]
    assert (m["prompt_tokens"], m["completion_tokens"]) == (prompt_chars, completion_chars)
    assert m["cost"] == pytest.approx(prompt_chars / 1000 * 0.5 + completion_chars / 1000 * 2.0, rel=1e-12)


def test_a_write_to_a_connection_the_server_closed_is_retried_without_tripping_the_breaker():
    # a burst of these opened the breaker in RLAIF runs (aiohttp's ClientConnectionResetError: the
    # pooled connection was closed by the server before the request was written). The double cannot
    # produce it on demand, so the client's classification is checked on the exception the openai
    # client raises for it, next to a dropped connection (the server took the request, then closed)
    import aiohttp
    import httpx
    import openai

    from rewards.judge.client import _classify

    def wrapped(root):
        exc = openai.APIConnectionError(request=httpx.Request("POST", "http://judge/v1/chat/completions"))
        exc.__cause__ = root
        return exc

    stale = _classify(wrapped(aiohttp.ClientConnectionResetError("Cannot write to closing transport")))
    dropped = _classify(wrapped(aiohttp.ServerDisconnectedError()))
    assert (stale.retry, stale.neutral, stale.kind) == (True, True, "connection (ClientConnectionResetError)")
    assert (dropped.retry, dropped.neutral, dropped.endpoint_down) == (True, False, True)
    assert "ClientConnectionResetError" in stale.message


def test_stale_connection_failures_neither_open_nor_close_the_breaker(srv, monkeypatch):
    import aiohttp
    import httpx
    import openai

    from rewards.judge import client as jc

    SCRIPTS["stale"] = prefers("right")
    ens = ensemble(srv.base_url, "stale", retry={"max_retries": 3}, circuit_breaker={"failure_threshold": 2})
    real, left = jc.JudgeClient._attempt, {"n": 6}

    async def flaky(self, client, request):  # the first 6 attempts hit a stale pooled connection
        if left["n"] > 0:
            left["n"] -= 1
            exc = openai.APIConnectionError(request=httpx.Request("POST", "http://judge"))
            exc.__cause__ = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            return None, jc._classify(exc)
        return await real(self, client, request)

    monkeypatch.setattr(jc.JudgeClient, "_attempt", flaky)
    votes = _calls(ens, 2)  # 4 calls, 6 stale attempts among them: more than the threshold of 2
    assert [v.winner for v in votes] == ["A", "A"] and ens.clients[0].breaker.state == CLOSED
    m = ens.metrics()["stale"]
    assert m["breaker_opens"] == 0 and m["error_rate"] == 0.0
    assert m["error_kinds"] == {"connection (ClientConnectionResetError)": 6}


def test_a_connection_that_stays_stale_is_an_abstention_not_a_win(srv, monkeypatch):
    # stale-connection attempts are neutral for the breaker, so nothing else stops them: they must
    # still end after 1 + max_retries attempts, as an abstention (the source's failure policy), never
    # as a verdict for either answer; once the connection is fine the same pair gets its real verdict
    import aiohttp
    import httpx
    import openai

    from rewards.judge import client as jc

    SCRIPTS["stale_forever"] = prefers("right")
    ens = ensemble(srv.base_url, "stale_forever", retry={"max_retries": 2, "backoff_base_s": 0.01},
                   circuit_breaker={"failure_threshold": 1})
    real, stale = jc.JudgeClient._attempt, {"on": True}

    async def attempt(self, client, request):
        if stale["on"]:
            exc = openai.APIConnectionError(request=httpx.Request("POST", "http://judge"))
            exc.__cause__ = aiohttp.ClientConnectionResetError("Cannot write to closing transport")
            return None, jc._classify(exc)
        return await real(self, client, request)

    monkeypatch.setattr(jc.JudgeClient, "_attempt", attempt)
    [cheat] = pairs(ens, [("q", "wrong", "right")])
    assert cheat.winner == "abstain" and cheat.p_a is None
    assert ens.metrics()["stale_forever"]["error_kinds"] == {"connection (ClientConnectionResetError)": 2 * 3}
    assert srv.seen_by("stale_forever") == [] and ens.clients[0].breaker.state == CLOSED
    stale["on"] = False  # the honest control: the same judge, reachable
    [honest] = pairs(ens, [("q", "wrong", "right")])
    assert honest.winner == "B"
