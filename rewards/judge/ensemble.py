"""LLM-judge ensemble (RLAIF): pairwise verdicts with order swapping, pointwise scores, metrics.

    ens = JudgeEnsemble(EnsembleConfig.model_validate(yaml.safe_load(open("judges.yaml"))))
    verdicts = asyncio.run(ens.judge_pairs([(prompt, response_a, response_b), ...]))
    verdicts[0].winner, verdicts[0].p_a, verdicts[0].votes   # "A" | "B" | "tie" | "abstain"

Every call goes through rewards.judge.client (concurrency limit, timeouts, retries, breaker);
replies are parsed strictly by rewards.judge.parse and combined by rewards.judge_vote. Nothing
here raises for a failing endpoint or a bad reply: those become abstentions, visible in the votes.
Reward shaping from verdicts (vs a reference, group win rate, pointwise) is in rewards.judge_reward.
With `principles` every prompt carries the constitution; a `per_principle` judge answers per
principle and its vote is the weighted mean over principles (formula in rewards.judge.vote).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from rewards.judge.client import JudgeClient
from rewards.judge.config import EnsembleConfig
from rewards.judge.metrics import JudgeStats
from rewards.judge.parse import (Parsed, normalise_score, p_first, pairwise_messages, parse_score,
                                 parse_verdict, pointwise_messages)
from rewards.judge.vote import (ABSTAIN, OrderVerdict, Vote, abstain_all, combine, combine_principles, pair_vote,
                                principled_pair_vote, principled_point_vote)


@dataclass(frozen=True)
class PairVerdict:
    """The ensemble's verdict on (prompt, A, B): winner A/B/tie/abstain, P(A) and every judge's vote;
    with per_principle judges also each principle's {winner, p_a} over them (rewards.judge.vote)."""

    winner: str
    p_a: float | None
    votes: tuple[Vote, ...]
    principles: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"winner": self.winner, "p_a": self.p_a, "votes": [v.to_dict() for v in self.votes]}
        return {**out, "principles": self.principles} if self.principles else out


@dataclass(frozen=True)
class PointScore:
    """The ensemble's score in [0, 1] (weighted mean of the judges' normalised scores), or None;
    with per_principle judges also each principle's {p_a} (its weighted mean score over them)."""

    score: float | None
    votes: tuple[Vote, ...]
    principles: dict = field(default_factory=dict)


class JudgeEnsemble:
    """All judges of one EnsembleConfig. `share` divides each judge's max_concurrency (a pool of
    `share` actors then keeps the endpoint's total in flight within its limit)."""

    def __init__(self, config: EnsembleConfig, share: int = 1):
        self.config = config
        self.stats = {j.name: JudgeStats() for j in config.judges}
        self.clients = [JudgeClient(j, config.retry, config.circuit_breaker, self.stats[j.name])
                        for j in config.judges]
        self.set_share(share)
        self.weights = {p.name: p.weight for p in config.principles}
        self.names = tuple(self.weights)

    def _per(self, client: JudgeClient) -> bool:
        return self.config.per_principle_for(client.spec)

    def set_share(self, share: int) -> None:
        for c in self.clients:
            c.set_concurrency(max(1, c.spec.max_concurrency // max(1, share)))

    async def _ask(self, client: JudgeClient, messages: list[dict], parse) -> tuple[Parsed, object]:
        reply = await client.complete(messages)
        parsed = Parsed(None, reply.error) if reply.error else parse(reply.text, reply.finish_reason)
        if parsed.value is None:
            client.stats.abstains += 1
        return parsed, reply

    async def _order(self, client: JudgeClient, messages: list[dict]) -> OrderVerdict:
        names = self.names if self._per(client) else ()
        parsed, reply = await self._ask(client, messages, lambda t, f: parse_verdict(t, f, names))
        if parsed.value is None:
            return OrderVerdict(None, None, parsed.reason)
        if parsed.value != "tie":
            client.stats.decisive += 1
            client.stats.first_picks += parsed.value == "A"
        per = tuple((n, v, p_first(reply.text, reply.tokens, at)) for n, v, at in parsed.principles)
        return OrderVerdict(parsed.value, p_first(reply.text, reply.tokens, parsed.offset), principles=per)

    async def _pair_vote(self, client: JudgeClient, orders: dict) -> Vote:
        ab, ba = orders[self._per(client)]
        first, second = await asyncio.gather(self._order(client, ab), self._order(client, ba))
        spec = client.spec
        if self._per(client):
            vote = principled_pair_vote(spec.name, spec.weight, first, second, self.weights, self.config.tie_band)
            client.stats.count_principles(vote.principles)
            return vote
        return pair_vote(spec.name, spec.weight, first, second)

    def _variants(self, build) -> dict:
        """The messages for judges without and with per_principle (they differ in the system prompt)."""
        return {per: build(self.config.principles, per) for per in {self._per(c) for c in self.clients}}

    async def judge_pair(self, prompt: str, response_a: str, response_b: str) -> PairVerdict:
        """Every judge sees both orders; their votes are combined by the configured voting rule."""
        cfg = self.config
        orders = self._variants(lambda ps, per: (
            pairwise_messages(cfg.pairwise_template, cfg.system_prompt, prompt, response_a, response_b, ps, per),
            pairwise_messages(cfg.pairwise_template, cfg.system_prompt, prompt, response_b, response_a, ps, per)))
        votes = await asyncio.gather(*(self._pair_vote(c, orders) for c in self.clients))
        winner, p_a = combine(votes, cfg.voting, cfg.tie_band)
        if winner != ABSTAIN:
            for v in votes:
                if v.winner != ABSTAIN:
                    self.stats[v.judge].compared += 1
                    self.stats[v.judge].agree += v.winner == winner
        return PairVerdict(winner, p_a, tuple(votes), combine_principles(votes, cfg.voting, cfg.tie_band))

    async def judge_pairs(self, rows: Sequence[tuple[str, str, str]]) -> list[PairVerdict]:
        """Verdicts for (prompt, response_a, response_b) rows, in order, all in flight at once
        (each judge's concurrency limit decides how many requests actually are)."""
        return list(await asyncio.gather(*(self.judge_pair(*r) for r in rows)))

    async def _point_vote(self, client: JudgeClient, variants: dict) -> Vote:
        per, spec = self._per(client), client.spec
        names = self.names if per else ()
        parsed, _ = await self._ask(client, variants[per], lambda t, f: parse_score(t, f, names))
        if parsed.value is None:
            vote = abstain_all(spec.name, spec.weight, names, parsed.reason) if per else \
                Vote(spec.name, spec.weight, ABSTAIN, reason=parsed.reason)
        elif per:
            raw = {n: v for n, v, _ in parsed.principles}
            vote = principled_point_vote(spec.name, spec.weight, {n: normalise_score(v) for n, v in raw.items()},
                                         raw, self.weights)
        else:
            return Vote(spec.name, spec.weight, "score", normalise_score(parsed.value))
        client.stats.count_principles(vote.principles)
        return vote

    async def score(self, prompt: str, response: str) -> PointScore:
        """Pointwise: each judge scores 1..10, normalised to [0, 1]; weighted mean over non-abstainers
        (a per_principle judge's score is the weighted mean of its principle scores)."""
        cfg = self.config
        variants = self._variants(lambda ps, per: pointwise_messages(cfg.pointwise_template, cfg.system_prompt,
                                                                     prompt, response, ps, per))
        votes = await asyncio.gather(*(self._point_vote(c, variants) for c in self.clients))
        live = [v for v in votes if v.winner != ABSTAIN]
        total = sum(v.weight for v in live)
        return PointScore(sum(v.weight * v.p_a for v in live) / total if total else None, tuple(votes),
                          combine_principles(votes, cfg.voting, cfg.tie_band, pointwise=True))

    async def score_many(self, rows: Sequence[tuple[str, str]]) -> list[PointScore]:
        return list(await asyncio.gather(*(self.score(*r) for r in rows)))

    async def aclose(self) -> None:
        """Close the judges' HTTP clients; call it last inside the event loop that used them."""
        await asyncio.gather(*(c.aclose() for c in self.clients))

    def metrics(self) -> dict[str, dict]:
        """Per-judge latency p50/p95, error and abstain rates, first-position rate, agreement, tokens, cost
        (and `principles`, per principle, for per_principle judges)."""
        return summarise(self.config, self.stats)

    def breaker_states(self) -> dict[str, str]:
        return {c.spec.name: c.breaker.state for c in self.clients}


def summarise(config: EnsembleConfig, stats: dict[str, JudgeStats]) -> dict[str, dict]:
    """Readable metrics from raw per-judge stats (e.g. merged from several actors)."""
    return {j.name: stats.get(j.name, JudgeStats()).summary(j.cost) for j in config.judges}
