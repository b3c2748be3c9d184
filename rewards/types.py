"""The contract every reward source returns: one RewardResult per sample, never an exception."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Statuses shared by all reward sources; sources may add their own in `detail`.
PASSED = "passed"
FAILED = "failed"
TIMEOUT = "timeout"
ABSTAIN = "abstain"
ERROR = "error"
NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class RewardResult:
    """Score for one sample. `status` says why; `detail` carries source-specific facts."""

    score: float
    status: str
    detail: dict[str, Any] = field(default_factory=dict)
