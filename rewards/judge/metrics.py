"""Per-judge metrics: raw counters that merge across actors, and the summary people read.

Rates and what they count:
- error_rate: calls that got no usable reply (failed after retries, refused by the open breaker,
  non-retryable HTTP errors, malformed replies) / calls;
- abstain_rate: calls that produced no verdict or score for any reason (errors included) / calls;
- first_position_rate: decisive single-order verdicts (A or B, not tie) that picked the answer
  shown first (an unbiased judge is near 0.5; one that always picks the first is 1.0);
- agreement: the judge's final vote equals the ensemble's result, over pairs where both voted;
- error_kinds: failed attempts (retried or not) and calls refused unsent, by cause (`timeout`,
  `HTTP 503`, `connection (ServerDisconnectedError)`, `circuit breaker open`, `malformed reply`...),
  to tell a slow endpoint from a dropped connection and see what opened a breaker;
- latency: of calls that got a reply, from the moment a concurrency slot was free (queueing for a
  slot excluded, retries and their backoff included);
- principles (per_principle judges only), per principle, over the judge's votes on it (one per pair
  after the swap rule, or per scored response): `votes`, `a_rate` / `b_rate` / `tie_rate` (shares of
  the pairwise votes that were not abstentions), `abstain_rate` (abstentions / votes) and
  `mean_score` (pointwise: mean normalised score). `principle_summary` merges them over judges.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LATENCY_WINDOW = 10_000  # latencies kept per judge for the percentiles (most recent)


@dataclass
class JudgeStats:
    calls: int = 0
    errors: int = 0
    abstains: int = 0
    retries: int = 0
    rejected: int = 0
    breaker_opens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_picks: int = 0
    decisive: int = 0
    agree: int = 0
    compared: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    # per principle: [A, B, tie, abstain, sum of normalised scores, scored]
    principles: dict = field(default_factory=dict)
    error_kinds: dict = field(default_factory=dict)  # cause -> failed calls

    def merge(self, other: JudgeStats) -> JudgeStats:
        """A new JudgeStats with both sets of counts (e.g. from several pool actors)."""
        out = JudgeStats()
        for name in self.__dataclass_fields__:
            if name not in ("latencies", "principles", "error_kinds"):
                setattr(out, name, getattr(self, name) + getattr(other, name))
        out.error_kinds = {k: self.error_kinds.get(k, 0) + other.error_kinds.get(k, 0)
                           for k in {**self.error_kinds, **other.error_kinds}}
        out.latencies.extend(self.latencies)
        out.latencies.extend(other.latencies)
        out.principles = _merge_counts(self.principles, other.principles)
        return out

    def take(self) -> JudgeStats:
        """A copy of the counts so far, leaving this one at zero (per-step metrics)."""
        out = self.merge(JudgeStats())
        for name in self.__dataclass_fields__:
            if name not in ("latencies", "principles", "error_kinds"):
                setattr(self, name, 0)
        self.latencies.clear()
        self.principles = {}
        self.error_kinds = {}
        return out

    def count_principles(self, per: dict | None) -> None:
        """Count one vote's per-principle results ({name: {winner, p_a}}; see rewards.judge.vote)."""
        for name, v in (per or {}).items():
            c = self.principles.setdefault(name, [0, 0, 0, 0, 0.0, 0])
            if v["winner"] == "score":
                c[4] += v["p_a"]
                c[5] += 1
            else:
                c[_SLOT[v["winner"]]] += 1

    def summary(self, cost_fn) -> dict:
        """Readable metrics; `cost_fn(prompt_tokens, completion_tokens)` prices the tokens."""
        lat = sorted(self.latencies)
        return {
            "calls": self.calls,
            "latency_p50_s": percentile(lat, 50),
            "latency_p95_s": percentile(lat, 95),
            "error_rate": _rate(self.errors, self.calls),
            "abstain_rate": _rate(self.abstains, self.calls),
            "first_position_rate": _rate(self.first_picks, self.decisive),
            "agreement": _rate(self.agree, self.compared),
            "retries": self.retries,
            "rejected_by_breaker": self.rejected,
            "breaker_opens": self.breaker_opens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": cost_fn(self.prompt_tokens, self.completion_tokens),
            **({"error_kinds": dict(sorted(self.error_kinds.items()))} if self.error_kinds else {}),
            **({"principles": principle_rates(self.principles)} if self.principles else {}),
        }


_SLOT = {"A": 0, "B": 1, "tie": 2, "abstain": 3}


def _merge_counts(a: dict, b: dict) -> dict:
    return {k: [x + y for x, y in zip(a.get(k, [0] * 6), b.get(k, [0] * 6))] for k in {**a, **b}}


def principle_rates(counts: dict) -> dict[str, dict]:
    """Readable per-principle metrics from the raw counts (see the module doc)."""
    out = {}
    for name, (a, b, tie, abstain, score_sum, scored) in counts.items():
        decided, votes = a + b + tie, a + b + tie + abstain + scored
        out[name] = {"votes": votes, "a_rate": _rate(a, decided), "b_rate": _rate(b, decided),
                     "tie_rate": _rate(tie, decided), "abstain_rate": _rate(abstain, votes),
                     "mean_score": score_sum / scored if scored else None}
    return out


def principle_summary(stats: dict[str, JudgeStats]) -> dict[str, dict]:
    """Per-principle metrics over all judges (their counts summed)."""
    counts: dict = {}
    for st in stats.values():
        counts = _merge_counts(counts, st.principles)
    return principle_rates(counts)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


_COLUMNS = [("judge", "{}"), ("calls", "{}"), ("latency_p50_s", "{:.3f}"), ("latency_p95_s", "{:.3f}"),
            ("error_rate", "{:.1%}"), ("abstain_rate", "{:.1%}"), ("first_position_rate", "{:.1%}"),
            ("agreement", "{:.1%}"), ("prompt_tokens", "{}"), ("completion_tokens", "{}"), ("cost", "{:.4f}")]


def _table(columns: list[tuple[str, str]], rows_by_name: dict[str, dict]) -> str:
    """Plain-text table, one row per name (the first column), right-aligned; None shows as '-'."""
    first = columns[0][0]
    rows = [[c for c, _ in columns]]
    for name, m in rows_by_name.items():
        m = {**m, first: name}
        rows.append(["-" if m.get(c) is None else fmt.format(m[c]) for c, fmt in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


def format_table(metrics: dict[str, dict]) -> str:
    """A plain-text table, one row per judge (None shows as '-')."""
    return _table(_COLUMNS, metrics)


_PRINCIPLE_COLUMNS = [("principle", "{}"), ("votes", "{}"), ("a_rate", "{:.1%}"), ("b_rate", "{:.1%}"),
                      ("tie_rate", "{:.1%}"), ("abstain_rate", "{:.1%}"), ("mean_score", "{:.3f}")]


def format_principles(summary: dict[str, dict]) -> str:
    """A plain-text table, one row per principle (None shows as '-'); empty without principles."""
    return _table(_PRINCIPLE_COLUMNS, summary) if summary else ""
