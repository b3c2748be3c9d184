"""From order verdicts to a judge's vote, and from votes to the ensemble's result.

Pairwise, every judge sees (A, B) and (B, A). Its vote stands only when both orders name the
same original response; when they disagree (e.g. a judge that always picks whatever is shown
first) the vote is a tie. If either order abstained, the judge abstains. Its P(A) is the mean of
the two orders' P(A), each from the verdict token's log-probs where the endpoint gave them,
else from the verdict itself (A → 1, B → 0, tie → 0.5).

Voting: abstentions do not vote. `majority` counts one vote per judge, `weighted` sums judge
weights; the label (A, B or tie) with the most strictly wins, anything level is a tie.
`mean_prob` takes the weight-averaged P(A): above 0.5 + tie_band is A, below 0.5 - tie_band B.

Per principle (`per_principle`), with principle weights w_p and judge weights W_j:
    P_jp(A) = ( P_AB,p(first) + 1 - P_BA,p(first) ) / 2        the swap rule, for each principle p
    P_j(A)  = sum_p w_p * P_jp(A) / sum_p w_p                   judge j's P(A)
    winner_j = A if P_j(A) > 0.5 + tie_band, B if P_j(A) < 0.5 - tie_band, else tie
and then across judges exactly as above (majority / weighted count winner_j; mean_prob takes
sum_j W_j * P_j(A) / sum_j W_j). Each order's P_p(first) comes from the principle's verdict token
log-probs where the endpoint gave them, else from its verdict (A 1, B 0, tie 0.5); a principle
whose two orders disagree is a tie (its P_jp(A) is still the mean). A judge whose reply abstained
in either order abstains on every principle. The judge's own final verdict line is kept in `ab` /
`ba` but does not vote. Pointwise: s_j = sum_p w_p * (N_jp - 1) / 9 / sum_p w_p. The ensemble also
reports each principle on its own (`combine_principles`): the same voting over the judges'
per-principle votes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

WINNERS = ("A", "B", "tie")
ABSTAIN = "abstain"
_SWAP = {"A": "B", "B": "A", "tie": "tie"}
_HARD_P = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class OrderVerdict:
    """One order's verdict in terms of the positions shown ("A" = shown first), P(first) if known."""

    verdict: str | None
    p_first: float | None = None
    reason: str = ""
    principles: tuple[tuple[str, str, float | None], ...] = ()  # (name, verdict, P(first)) per principle


@dataclass(frozen=True)
class Vote:
    """One judge's vote on a pair (in the original A/B terms), or on one response (pointwise)."""

    judge: str
    weight: float
    winner: str  # A, B, tie or abstain; pointwise: "score" or abstain
    p_a: float | None = None  # pairwise: P(A better); pointwise: the normalised score
    ab: str | None = None  # verdict with A shown first
    ba: str | None = None  # verdict with B shown first, as the judge said it ("A" = B here)
    reason: str = ""  # why it abstained or tied
    principles: dict | None = None  # per_principle: name -> {winner, p_a, ab, ba} (pointwise {winner, p_a, score})

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.principles is None:
            del out["principles"]
        return out


def pair_vote(judge: str, weight: float, ab: OrderVerdict, ba: OrderVerdict) -> Vote:
    """Combine the (A, B) and (B, A) verdicts of one judge under the swap rule."""
    raw = {"ab": ab.verdict, "ba": ba.verdict}
    if ab.verdict is None or ba.verdict is None:
        why = "; ".join(f"{k}: {o.reason}" for k, o in (("A first", ab), ("B first", ba)) if o.verdict is None)
        return Vote(judge, weight, ABSTAIN, None, **raw, reason=why)
    from_ab, from_ba = ab.verdict, _SWAP[ba.verdict]
    p_ab = ab.p_first if ab.p_first is not None else _HARD_P[from_ab]
    p_ba = 1.0 - ba.p_first if ba.p_first is not None else _HARD_P[from_ba]
    p_a = (p_ab + p_ba) / 2
    if from_ab == from_ba:
        return Vote(judge, weight, from_ab, p_a, **raw)
    return Vote(judge, weight, "tie", p_a, **raw, reason="the two orders disagree")


def mean_p(votes: list[Vote]) -> float | None:
    """Weight-averaged p_a over the votes that have one."""
    live = [v for v in votes if v.p_a is not None]
    total = sum(v.weight for v in live)
    return sum(v.weight * v.p_a for v in live) / total if total else None


def combine(votes: list[Vote], voting: str, tie_band: float = 0.0) -> tuple[str, float | None]:
    """The ensemble's (winner, P(A)) from the judges' votes; ("abstain", None) if nobody voted."""
    live = [v for v in votes if v.winner != ABSTAIN]
    p_a = mean_p(live)
    if not live:
        return ABSTAIN, None
    if voting == "mean_prob":
        if p_a > 0.5 + tie_band:
            return "A", p_a
        return ("B", p_a) if p_a < 0.5 - tie_band else ("tie", p_a)
    if voting not in ("majority", "weighted"):
        raise ValueError(f"unknown voting {voting!r}; use majority, weighted or mean_prob")
    tally = dict.fromkeys(WINNERS, 0.0)
    for v in live:
        tally[v.winner] += v.weight if voting == "weighted" else 1.0
    top = max(tally.values())
    leaders = [k for k, n in tally.items() if n == top]
    return (leaders[0] if len(leaders) == 1 else "tie"), p_a


def principle_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum_p w_p * values[p] / sum_p w_p over the principles in `weights`."""
    return sum(weights[n] * values[n] for n in weights) / sum(weights.values())


def _side(p_a: float, tie_band: float) -> str:
    if p_a > 0.5 + tie_band + 1e-12:
        return "A"
    return "B" if p_a < 0.5 - tie_band - 1e-12 else "tie"


def abstain_all(judge: str, weight: float, names, reason: str, ab=None, ba=None) -> Vote:
    """A per-principle judge's abstention: on the pair and on every principle."""
    per = {n: {"winner": ABSTAIN, "p_a": None} for n in names}
    return Vote(judge, weight, ABSTAIN, None, ab, ba, reason, per)


def principled_pair_vote(judge: str, weight: float, ab: OrderVerdict, ba: OrderVerdict,
                         weights: Mapping[str, float], tie_band: float = 0.0) -> Vote:
    """One judge's vote from per-principle verdicts in both orders (formula in the module doc)."""
    if ab.verdict is None or ba.verdict is None:
        plain = pair_vote(judge, weight, ab, ba)
        return abstain_all(judge, weight, weights, plain.reason, ab.verdict, ba.verdict)
    first = {n: OrderVerdict(v, p) for n, v, p in ab.principles}
    second = {n: OrderVerdict(v, p) for n, v, p in ba.principles}
    per, split = {}, []
    for name in weights:
        sub = pair_vote(judge, 1.0, first[name], second[name])
        per[name] = {"winner": sub.winner, "p_a": sub.p_a, "ab": sub.ab, "ba": sub.ba}
        if sub.reason:
            split.append(name)
    p_a = principle_mean({n: v["p_a"] for n, v in per.items()}, weights)
    reason = f"the two orders disagree on {', '.join(split)}" if split else ""
    return Vote(judge, weight, _side(p_a, tie_band), p_a, ab.verdict, ba.verdict, reason, per)


def principled_point_vote(judge: str, weight: float, scores: Mapping[str, float], raw: Mapping[str, int],
                          weights: Mapping[str, float]) -> Vote:
    """Pointwise: the judge's score is the weighted mean of its normalised per-principle scores."""
    per = {n: {"winner": "score", "p_a": scores[n], "score": raw[n]} for n in weights}
    return Vote(judge, weight, "score", principle_mean(scores, weights), principles=per)


def combine_principles(votes: list[Vote], voting: str, tie_band: float = 0.0,
                       pointwise: bool = False) -> dict[str, dict]:
    """Each principle on its own: {name: {winner, p_a}} by the ensemble's voting over the judges
    that answer per principle (pointwise: {p_a} = the weighted mean score); {} when none does."""
    names = list(dict.fromkeys(n for v in votes if v.principles for n in v.principles))
    out = {}
    for name in names:
        sub = [Vote(v.judge, v.weight, v.principles[name]["winner"], v.principles[name]["p_a"])
               for v in votes if v.principles and name in v.principles]
        if pointwise:
            out[name] = {"p_a": mean_p([v for v in sub if v.winner != ABSTAIN])}
        else:
            winner, p_a = combine(sub, voting, tie_band)
            out[name] = {"winner": winner, "p_a": p_a}
    return out
