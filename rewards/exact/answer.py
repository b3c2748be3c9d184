"""Exact-answer reward: the final answer of a response against a list of accepted answers (aliases).

Extraction rule (`extract_answer`):
1. the last line that starts with `Answer:` (any case; leading spaces, `#`, `*` and `>` are
   ignored, `Final answer:` counts too, fullwidth `：` too) and has something after the colon:
   that text, up to the end of the line;
2. else the last line that still has text after normalisation and is not an empty `Answer:` line
   (so a closing `---` is skipped, and "Answer:" followed by the answer on the next line works);
3. else nothing: status `no_answer` (empty or whitespace-only response, or only punctuation).

The extracted answer matches when its normalised form (see normalization.py) equals the normalised
form of any accepted answer: reward 1.0 and status `passed`, else 0.0 and `failed`.
"""
from __future__ import annotations

import re
from typing import Any

from rewards.exact.normalization import normalize
from rewards.types import FAILED, NO_ANSWER, PASSED, RewardResult

MAX_RESPONSE_CHARS = 200_000  # past this only the tail is read: the answer is at the end
_ANSWER_LINE = re.compile(r"^[\s#*>]*(?:final\s+)?answer\s*\**\s*[:：]\**(.*)$", re.IGNORECASE)


def extract_answer(response: str) -> str | None:
    """The final answer of a response by the rule in this module's docstring; None when there is none."""
    lines = response[-MAX_RESPONSE_CHARS:].splitlines()
    for line in reversed(lines):
        m = _ANSWER_LINE.match(line)
        if m and normalize(m.group(1)):
            return m.group(1).strip()
    for line in reversed(lines):
        if normalize(line) and not _ANSWER_LINE.match(line):
            return line.strip()
    return None


def aliases_problem(answers: Any) -> str | None:
    """What is wrong with accepted answers (a list of strings, or one string), or None."""
    items = [answers] if isinstance(answers, str) else answers
    if not isinstance(items, list) or not items or not all(isinstance(a, str) for a in items):
        return f"'answers' must be a non-empty list of strings or one string, got {answers!r}"[:300]
    empty = next((a for a in items if not normalize(a)), None)
    if empty is not None:
        return f"'answers' holds {empty!r}, which is empty after normalisation and can never match"
    return None


def check_answer(response: str, answers: str | list[str]) -> RewardResult:
    """Score one response against accepted answers (already checked with aliases_problem)."""
    accepted = [answers] if isinstance(answers, str) else answers
    extracted = extract_answer(response)
    if extracted is None:
        return RewardResult(0.0, NO_ANSWER, {"extracted": None})
    got = normalize(extracted)
    matched = next((a for a in accepted if normalize(a) == got), None)
    detail = {"extracted": extracted[:300], "normalized": got[:300], "matched": matched}
    return RewardResult(1.0, PASSED, detail) if matched is not None else RewardResult(0.0, FAILED, detail)
