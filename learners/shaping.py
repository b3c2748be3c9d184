"""Reward shaping and batch filtering from DAPO (Yu et al. 2025)."""
from __future__ import annotations


def overlong_penalty(length: int, max_len: int, buffer: int, factor: float = 1.0) -> float:
    """Soft length penalty: 0 up to max_len − buffer, then falling linearly to −factor at max_len
    (a response at the limit was most likely cut off). buffer 0 turns it off."""
    if buffer <= 0 or length <= max_len - buffer:
        return 0.0
    return -factor * min(1.0, (length - (max_len - buffer)) / buffer)


def informative_groups(rewards: list[float], group_ids: list[int]) -> set[int]:
    """Groups whose rewards are not all equal: the others give every sample zero advantage
    under group baselines and only dilute the batch (DAPO's dynamic sampling drops them)."""
    seen: dict[int, set[float]] = {}
    for r, g in zip(rewards, group_ids):
        seen.setdefault(g, set()).add(round(r, 9))
    return {g for g, values in seen.items() if len(values) > 1}
