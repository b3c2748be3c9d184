"""Per-judge metrics: raw counters that merge across actors, and the summary people read.

Rates and what they count:
- error_rate: calls that got no usable reply (failed after retries, refused by the open breaker,
  non-retryable HTTP errors, malformed replies) / calls;
- abstain_rate: calls that produced no verdict or score for any reason (errors included) / calls;
- first_position_rate: decisive single-order verdicts (A or B, not tie) that picked the answer
  shown first (an unbiased judge is near 0.5; one that always picks the first is 1.0);
- agreement: the judge's final vote equals the ensemble's result, over pairs where both voted;
- latency: of calls that got a reply, from the moment a concurrency slot was free (queueing for a
  slot excluded, retries and their backoff included).
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

    def merge(self, other: JudgeStats) -> JudgeStats:
        """A new JudgeStats with both sets of counts (e.g. from several pool actors)."""
        out = JudgeStats()
        for name in self.__dataclass_fields__:
            if name != "latencies":
                setattr(out, name, getattr(self, name) + getattr(other, name))
        out.latencies.extend(self.latencies)
        out.latencies.extend(other.latencies)
        return out

    def take(self) -> JudgeStats:
        """A copy of the counts so far, leaving this one at zero (per-step metrics)."""
        out = self.merge(JudgeStats())
        for name in self.__dataclass_fields__:
            if name != "latencies":
                setattr(self, name, 0)
        self.latencies.clear()
        return out

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
        }


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


def format_table(metrics: dict[str, dict]) -> str:
    """A plain-text table, one row per judge (None shows as '-')."""
    rows = [[c for c, _ in _COLUMNS]]
    for name, m in metrics.items():
        m = {**m, "judge": name}
        rows.append(["-" if m.get(c) is None else fmt.format(m[c]) for c, fmt in _COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)
