"""Judges against a real vLLM OpenAI-compatible server on the (untrained) tiny demo model.

Its verdicts are poor by construction; what is checked is the plumbing: real requests through the
openai client, log-probs read at the verdict token, strict parsing turning free text into
abstentions, a non-retryable 400 (prompt over the 64-token context), and token/cost accounting.
The "guided" judge uses vLLM's structured outputs (passed through `extra_body`) so that even this
model produces a parseable verdict line; the "free" judge gets none and must abstain.
"""
import math

import pytest

from rewards.judge.ensemble import JudgeEnsemble
from rewards.judge.config import EnsembleConfig
from rewards.judge.guard import framed
from rewards.judge.parse import parse_verdict, pairwise_messages
from tests.doubles.judge_helpers import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
TEMPLATE = "{prompt}|{response_a}|{response_b}|"  # the model has 64 tokens (characters) of context
VERDICT_REGEX = r"Verdict: \[\[(A|B)\]\]"
GUIDED_TOKENS = len("Verdict: [[A]]") + 1  # one token per character, plus </s>
ROWS = [("1+1", "2", "3"), ("2+2", "4", "5"), ("7+1", "8", "9")]
TOO_LONG = ("x" * 60, "a", "b")


# `vllm_url`: the session's one vLLM server on the tiny model (tests/rewards/conftest.py).


def make_ensemble(url: str) -> JudgeEnsemble:
    return JudgeEnsemble(EnsembleConfig.model_validate({
        "pairwise_template": TEMPLATE,
        "retry": {"max_retries": 2, "backoff_base_s": 0.05},
        "judges": [
            {"name": "guided", "base_url": url, "model": "tiny", "max_tokens": 20, "top_logprobs": 5,
             "price_per_1k_tokens": 1.0, "price_per_1k_output_tokens": 2.0,
             "extra_body": {"structured_outputs": {"regex": VERDICT_REGEX}}},
            {"name": "free", "base_url": url, "model": "tiny", "max_tokens": 12, "price_per_1k_tokens": 0.5}]}))


@pytest.fixture(scope="module")
def judged(vllm_url):
    ens = make_ensemble(vllm_url)
    verdicts = run(ens, ens.judge_pairs(ROWS + [TOO_LONG]))
    return ens, verdicts


def test_guided_judge_votes_free_judge_abstains(judged):
    ens, verdicts = judged
    for v in verdicts[:3]:
        guided, free = v.votes
        assert guided.ab in ("A", "B") and guided.ba in ("A", "B")  # parsed in both orders
        assert 0.0 < guided.p_a < 1.0 and guided.p_a != 0.5  # from log-probs, not the hard 0, ½ or 1
        assert free.winner == "abstain" and free.p_a is None
        assert v.winner == guided.winner and v.p_a == guided.p_a  # abstentions do not vote
    m = ens.metrics()
    assert m["free"]["abstain_rate"] == 1.0 and m["guided"]["abstain_rate"] == pytest.approx(2 / 8, abs=1e-12)


def test_prompt_over_the_context_is_a_400_not_retried(judged, vllm_url):
    ens, verdicts = judged
    too_long = verdicts[3]
    assert too_long.winner == "abstain"
    assert all("HTTP 400" in v.reason and "maximum context length" in v.reason for v in too_long.votes)
    m = ens.metrics()
    assert all(m[j]["retries"] == 0 and m[j]["error_rate"] == pytest.approx(2 / 8, abs=1e-12) for j in m)


def test_logprobs_at_the_verdict_token(vllm_url):
    ens = make_ensemble(vllm_url)
    guided = ens.clients[0]
    messages = pairwise_messages(TEMPLATE, None, *ROWS[0])
    reply = run(ens, guided.complete(messages))
    parsed = parse_verdict(reply.text, reply.finish_reason)
    assert parsed.value in ("A", "B") and reply.finish_reason == "stop"
    assert len(reply.tokens) == reply.completion_tokens == GUIDED_TOKENS
    assert "".join(t for t, _, _ in reply.tokens[:-1]) == reply.text and reply.tokens[-1][0] == "</s>"
    token, lp, alts = reply.tokens[parsed.offset]
    assert token == parsed.value and len(alts) == 5
    probs = {t: math.exp(a) for t, a in alts}
    # Structured output leaves only A and B possible at this position: their mass is all of it.
    assert probs["A"] + probs["B"] == pytest.approx(1.0, abs=1e-3)
    assert lp == pytest.approx(math.log(probs[token]), abs=1e-6)


def test_token_and_cost_accounting(judged):
    ens, _ = judged
    m = ens.metrics()
    # The chat template renders the user message as is; one token per character, no BOS. Each
    # response enters between "<<<" and ">>>" lines (the judge-side hacking guard).
    prompt_chars = sum(2 * len(TEMPLATE.format(prompt=p, response_a=framed(a), response_b=framed(b))) for p, a, b in ROWS)
    assert m["guided"]["prompt_tokens"] == m["free"]["prompt_tokens"] == prompt_chars
    assert m["guided"]["completion_tokens"] == 6 * GUIDED_TOKENS
    assert 6 <= m["free"]["completion_tokens"] <= 6 * 12
    assert m["guided"]["cost"] == pytest.approx(prompt_chars / 1000 * 1.0 + 6 * GUIDED_TOKENS / 1000 * 2.0, rel=1e-12)
    assert m["free"]["cost"] == pytest.approx((prompt_chars + m["free"]["completion_tokens"]) / 1000 * 0.5, rel=1e-12)
    assert m["guided"]["latency_p50_s"] > 0 and m["guided"]["latency_p95_s"] >= m["guided"]["latency_p50_s"]
