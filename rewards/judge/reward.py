"""Judge verdicts as rewards: one RewardResult per sample, never an exception for one bad sample.

- reference: each sample is judged as A against the row's reference response as B; the score is
  the ensemble's P(A) (the sample beats the reference), from log-probs where the judges give them.
  A sample identical to its reference (leading and trailing whitespace aside) ties, 0.5, without a call.
- group: each sample is judged against every other sample of its prompt (group id); the score is
  its win rate, (wins + ties / 2) / decided comparisons. A group of n costs n(n-1)/2 pairs, each
  sent in both orders to every judge.
- pointwise: the ensemble's normalised 1..10 score.

Status `judged` when the judges reached a result; `abstain` (score = abstain_score, neutral 0.5 by
default) when none did; `error` (score 0) for a sample that is not a string.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import combinations
from typing import Sequence

from rewards.judge.ensemble import JudgeEnsemble
from rewards.judge.vote import ABSTAIN
from rewards.types import ERROR, RewardResult

JUDGED = "judged"
_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


def _not_text(**fields) -> RewardResult | None:
    for name, value in fields.items():
        if not isinstance(value, str):
            return RewardResult(0.0, ERROR, {"error": f"{name} is not a str (got {type(value).__name__})"})
    return None


async def reference_rewards(ens: JudgeEnsemble, prompts: Sequence, responses: Sequence, references: Sequence,
                            abstain_score: float = 0.5) -> list[RewardResult]:
    """Score = P(sample better than its reference)."""
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(references)} references")

    async def one(p, r, ref) -> RewardResult:
        bad = _not_text(prompt=p, response=r, reference=ref)
        if bad:
            return bad
        if r.strip() == ref.strip():  # the same answer ties without a call, as in group mode
            return RewardResult(_OUTCOME["tie"], JUDGED, {"winner": "tie", "p_a": 0.5, "votes": [], "identical": True})
        v = await ens.judge_pair(p, r, ref)
        detail = {"winner": v.winner, "p_a": v.p_a, "votes": [x.to_dict() for x in v.votes],
                  **({"principles": v.principles} if v.principles else {})}
        if v.winner == ABSTAIN:
            return RewardResult(abstain_score, ABSTAIN, detail)
        return RewardResult(v.p_a, JUDGED, detail)

    return await _once_each(one, list(zip(prompts, responses, references)))


async def _once_each(fn, rows: list[tuple]) -> list[RewardResult]:
    """fn(*row) for every row, calling it once per distinct row (policies repeat short answers a lot)."""
    keyed = {}
    for row in rows:
        key = tuple(x if isinstance(x, str) else ("not text", id(x)) for x in row)
        keyed.setdefault(key, row)
    done = dict(zip(keyed, await asyncio.gather(*(fn(*row) for row in keyed.values()))))
    return [done[tuple(x if isinstance(x, str) else ("not text", id(x)) for x in row)] for row in rows]


async def group_rewards(ens: JudgeEnsemble, prompts: Sequence, responses: Sequence, group_ids: Sequence,
                        abstain_score: float = 0.5) -> list[RewardResult]:
    """Score = the sample's win rate against the other samples of its group (same group id)."""
    if not len(prompts) == len(responses) == len(group_ids):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(group_ids)} group ids")
    results: list[RewardResult | None] = [_not_text(prompt=p, response=r) for p, r in zip(prompts, responses)]
    groups: dict = defaultdict(list)
    for i, g in enumerate(group_ids):
        if results[i] is None:
            groups[g].append(i)
    pairs = [(i, j) for members in groups.values() for i, j in combinations(members, 2)]
    # Each distinct {a, b} of a prompt is judged once (both orders, as always); two identical
    # responses tie without a call. A group of short answers repeats itself a lot.
    canon = lambda i, j: (prompts[i], *sorted((responses[i], responses[j])))  # noqa: E731
    keys = list(dict.fromkeys(canon(i, j) for i, j in pairs if responses[i] != responses[j]))
    winners = dict(zip(keys, [v.winner for v in await ens.judge_pairs(keys)]))
    tally: dict[int, list] = {i: [] for members in groups.values() for i in members}
    for i, j in pairs:
        key = canon(i, j)
        first = _OUTCOME.get(winners[key]) if responses[i] != responses[j] else 0.5  # for key's first response
        outcome = first if first is None or responses[i] == key[1] else 1.0 - first  # for i; None: abstained
        tally[i].append((j, outcome))
        tally[j].append((i, None if outcome is None else 1.0 - outcome))
    for i, seen in tally.items():
        results[i] = _win_rate(seen, abstain_score)
    return results  # type: ignore[return-value]


_RESULT = {1.0: "win", 0.0: "loss", 0.5: "tie", None: ABSTAIN}


def _win_rate(seen: list[tuple], abstain_score: float) -> RewardResult:
    decided = [o for _, o in seen if o is not None]
    detail = {"wins": sum(o == 1.0 for o in decided), "losses": sum(o == 0.0 for o in decided),
              "ties": sum(o == 0.5 for o in decided), "abstains": len(seen) - len(decided),
              "opponents": [{"index": j, "result": _RESULT[o]} for j, o in seen]}
    if not decided:
        detail["reason"] = "no other sample in the group" if not seen else "every comparison abstained"
        return RewardResult(abstain_score, ABSTAIN, detail)
    return RewardResult(sum(decided) / len(decided), JUDGED, {"win_rate": sum(decided) / len(decided), **detail})


async def pointwise_rewards(ens: JudgeEnsemble, prompts: Sequence, responses: Sequence,
                            abstain_score: float = 0.5) -> list[RewardResult]:
    """Score = the ensemble's normalised 1..10 score."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")

    async def one(p, r) -> RewardResult:
        bad = _not_text(prompt=p, response=r)
        if bad:
            return bad
        s = await ens.score(p, r)
        detail = {"votes": [x.to_dict() for x in s.votes], **({"principles": s.principles} if s.principles else {})}
        if s.score is None:
            return RewardResult(abstain_score, ABSTAIN, detail)
        return RewardResult(s.score, JUDGED, detail)

    return await _once_each(one, list(zip(prompts, responses)))
