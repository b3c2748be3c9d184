"""From order verdicts to a judge's vote, and from votes to the ensemble's result.

Pairwise, every judge sees (A, B) and (B, A). Its vote stands only when both orders name the
same original response; when they disagree (e.g. a judge that always picks whatever is shown
first) the vote is a tie. If either order abstained, the judge abstains. Its P(A) is the mean of
the two orders' P(A), each from the verdict token's log-probs where the endpoint gave them,
else from the verdict itself (A → 1, B → 0, tie → 0.5).

Voting: abstentions do not vote. `majority` counts one vote per judge, `weighted` sums judge
weights; the label (A, B or tie) with the most strictly wins, anything level is a tie.
`mean_prob` takes the weight-averaged P(A): above 0.5 + tie_band is A, below 0.5 - tie_band B.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)


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
