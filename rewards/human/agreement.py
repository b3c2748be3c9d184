"""Agreement statistics: percent agreement with Wilson intervals, Cohen's κ with bootstrap
intervals, human position bias, and each judge's agreement with the human majority.

Labels are {pair_id, annotator, choice, left} rows (choice A, B, tie or skip in the pair's own
A/B terms; skips are left out of every statistic). κ is Cohen's for two annotators on the pairs
both labelled; across several annotators the overall κ is the mean over annotator pairs (Light's κ).
"""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter

CATEGORIES = ("A", "B", "tie")
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None without observations."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """κ = (p_o − p_e) / (1 − p_e) over (rater 1, rater 2) labels; None when p_e = 1 (no variation)."""
    n = len(pairs)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    p_e = sum(first[c] * second[c] for c in set(first) | set(second)) / (n * n)
    return None if p_e >= 1.0 else (p_o - p_e) / (1 - p_e)


def bootstrap(items: list, stat, rounds: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile interval of stat(resample of items); resamples where stat is None are dropped."""
    if not items:
        return None
    rng = random.Random(seed)
    values = sorted(v for v in (stat(rng.choices(items, k=len(items))) for _ in range(rounds)) if v is not None)
    if not values:
        return None
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def by_pair(labels: list[dict]) -> dict[str, dict[str, str]]:
    """{pair_id: {annotator: choice}} without skips."""
    out: dict[str, dict[str, str]] = {}
    for row in labels:
        if row["choice"] != "skip":
            out.setdefault(str(row["pair_id"]), {})[row["annotator"]] = row["choice"]
    return out


def _rater_pairs(votes: dict[str, dict[str, str]], a: str, b: str) -> list[tuple[str, str]]:
    return [(v[a], v[b]) for v in votes.values() if a in v and b in v]


def _light_kappa(votes: dict, raters: list[str]) -> float | None:
    ks = [cohen_kappa(_rater_pairs(votes, a, b)) for a, b in itertools.combinations(raters, 2)]
    ks = [k for k in ks if k is not None]
    return sum(ks) / len(ks) if ks else None


def human_agreement(labels: list[dict], rounds: int = 1000, seed: int = 0) -> dict:
    """Per annotator pair and overall: n, percent agreement (Wilson CI), κ (bootstrap CI over pairs)."""
    votes = by_pair(labels)
    raters = sorted({a for v in votes.values() for a in v})
    rows, agree_all, n_all = [], 0, 0
    for a, b in itertools.combinations(raters, 2):
        both = _rater_pairs(votes, a, b)
        if not both:
            continue
        agree = sum(x == y for x, y in both)
        agree_all, n_all = agree_all + agree, n_all + len(both)
        rows.append({"annotators": (a, b), "n": len(both), "agreement": agree / len(both),
                     "agreement_ci": wilson(agree, len(both)), "kappa": cohen_kappa(both),
                     "kappa_ci": bootstrap(both, cohen_kappa, rounds, seed)})
    pair_ids = sorted(votes)
    overall = {"n": n_all, "agreement": agree_all / n_all if n_all else None, "agreement_ci": wilson(agree_all, n_all),
               "kappa": _light_kappa(votes, raters),
               "kappa_ci": bootstrap(pair_ids, lambda ids: _light_kappa(_subset(votes, ids), raters), rounds, seed)}
    return {"pairs": rows, "overall": overall, "annotators": raters}


def _subset(votes: dict, ids: list[str]) -> dict:
    """A bootstrap resample: a pair drawn twice counts twice (renamed so dict keys stay distinct)."""
    return {f"{pid}#{i}": votes[pid] for i, pid in enumerate(ids)}


def position_bias(labels: list[dict]) -> dict:
    """Share of decisive (A or B) labels that picked the response shown on the left; 0.5 = no bias."""
    decisive = [r for r in labels if r["choice"] in ("A", "B")]
    left = sum(r["choice"] == r["left"] for r in decisive)
    return {"n": len(decisive), "left_rate": left / len(decisive) if decisive else None,
            "ci": wilson(left, len(decisive))}


def majority(choices) -> str | None:
    """The strict plurality label (A, B or tie) of a pair's decisive votes; None if tied or empty."""
    top = Counter(choices).most_common()
    if not top or (len(top) > 1 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def judge_agreement(labels: list[dict], judged: list[dict], rounds: int = 1000, seed: int = 0) -> dict:
    """Each judge's and the ensemble's agreement with the human majority on the same pair ids.
    judged rows: {id, winner, votes: [{judge, winner}, ...]} (`threefold judge` output); abstentions
    and pairs without a human majority are left out."""
    human = {pid: majority(v.values()) for pid, v in by_pair(labels).items()}
    human = {pid: m for pid, m in human.items() if m is not None}
    verdicts: dict[str, list[tuple[str, str]]] = {"ensemble": []}
    for row in judged:
        truth = human.get(str(row.get("id")))
        if truth is None:
            continue
        if row.get("winner") in CATEGORIES:
            verdicts["ensemble"].append((row["winner"], truth))
        for vote in row.get("votes") or []:
            if vote.get("winner") in CATEGORIES:
                verdicts.setdefault(str(vote.get("judge")), []).append((vote["winner"], truth))
    out = {}
    for name, pairs in verdicts.items():
        agree = sum(a == b for a, b in pairs)
        out[name] = {"n": len(pairs), "agreement": agree / len(pairs) if pairs else None,
                     "agreement_ci": wilson(agree, len(pairs)), "kappa": cohen_kappa(pairs),
                     "kappa_ci": bootstrap(pairs, cohen_kappa, rounds, seed)}
    return {"judges": out, "pairs_with_majority": len(human)}
