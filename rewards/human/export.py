"""Human labels → (prompt, chosen, rejected, n_votes, agreement) rows for `threefold rm train`.

Policies for ties and disagreements (n_votes counts A, B and tie votes; skips are not votes):
  drop      keep a pair only when every vote picked the same response (any tie or dissent drops it)
  majority  keep the strict majority winner (more than half the votes); a tie majority drops the pair
  margin    like majority, and write margin = (votes for winner − votes for loser) / n_votes, which the
            Bradley–Terry loss reads as a per-pair margin
agreement is the share of votes for the chosen response.
"""
from __future__ import annotations

from collections import Counter

POLICIES = ("drop", "majority", "margin")


def export_rows(labels: list[dict], policy: str = "majority", min_votes: int = 1) -> tuple[list[dict], dict]:
    """(rows, counts of why pairs were dropped) from store.labels() rows."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    pairs: dict[str, dict] = {}
    for row in labels:
        p = pairs.setdefault(str(row["pair_id"]), {"row": row, "votes": Counter()})
        if row["choice"] != "skip":
            p["votes"][row["choice"]] += 1
    out, dropped = [], Counter()
    for pid, p in pairs.items():
        votes, n = p["votes"], sum(p["votes"].values())
        if n < min_votes:
            dropped["too_few_votes"] += 1
            continue
        winner = _winner(votes, n, policy)
        if winner is None:
            dropped["tie_or_disagreement"] += 1
            continue
        out.append(_row(pid, p["row"], winner, votes, n, policy))
    return out, dict(dropped)


def _winner(votes: Counter, n: int, policy: str) -> str | None:
    for side in ("A", "B"):
        if policy == "drop" and votes[side] == n:
            return side
        if policy != "drop" and votes[side] * 2 > n:
            return side
    return None


def _row(pid: str, row: dict, winner: str, votes: Counter, n: int, policy: str) -> dict:
    loser = "B" if winner == "A" else "A"
    text = {"A": row["response_a"], "B": row["response_b"]}
    out = {"id": pid, "prompt": row["prompt"], "chosen": text[winner], "rejected": text[loser],
           "n_votes": n, "agreement": votes[winner] / n}
    if policy == "margin":
        out["margin"] = (votes[winner] - votes[loser]) / n
    return out


def write_parquet(rows: list[dict], path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = ["id", "prompt", "chosen", "rejected", "n_votes", "agreement"] + (["margin"] if rows and "margin" in rows[0] else [])
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in cols}) if rows else
                   pa.table({c: pa.array([], type=pa.string()) for c in cols[:4]}), path)
