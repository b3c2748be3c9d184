"""Learning-rate schedules as LambdaLR multipliers: linear warm-up, then constant or cosine."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Multiplier of the base lr at update k (0-based): (k+1)/warmup during warm-up; then 1
    (`constant`) or min_ratio + (1 − min_ratio)·½(1 + cos(π·progress)) (`cosine`)."""
    if schedule not in SCHEDULES:
        raise KeyError(f"unknown lr schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")

    def factor(k: int) -> float:
        if k < warmup_steps:
            return (k + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (k - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
