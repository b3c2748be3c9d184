"""One `exact` verification row: {"response", "answers" | "key", "knowledge"?} → RewardResult.

`answers` lists the accepted answers (or is one string). `key` instead looks them up in the
knowledge file whose path is the row's `knowledge` (`threefold verify --knowledge` and a reward
source's `knowledge` fill it in for rows without one).
"""
from __future__ import annotations

from rewards.exact.answer import aliases_problem, check_answer
from rewards.exact.knowledge import KnowledgeError, lookup
from rewards.types import RewardResult

INVALID = "invalid_input"


def row_problem(row: dict) -> str | None:
    """What is wrong with an exact row, or None; messages name the field."""
    if not isinstance(row.get("response"), str):
        return "exact row needs 'response' as a string"
    return answers_problem(row)


def answers_problem(row: dict) -> str | None:
    """The accepted-answer fields of a row (training rows have no response yet)."""
    has_answers, has_key = "answers" in row, "key" in row
    if has_answers == has_key:
        return ("exact row needs exactly one of 'answers' (a list of accepted answers, or one string) "
                "and 'key' (looked up in the knowledge file)")
    if has_answers:
        return aliases_problem(row["answers"])
    if not isinstance(row["key"], str) or not row["key"]:
        return f"exact row's 'key' must be a non-empty string, got {row['key']!r}"
    if not isinstance(row.get("knowledge"), str) or not row["knowledge"]:
        return ("exact row with 'key' needs 'knowledge', the path of a JSONL or Parquet knowledge file "
                "(`threefold verify --knowledge FILE` or the source's `knowledge` sets it)")
    return None


def accepted_answers(row: dict) -> list[str]:
    """The row's accepted answers; KnowledgeError when its key or knowledge file is unusable."""
    if "answers" in row:
        return [row["answers"]] if isinstance(row["answers"], str) else list(row["answers"])
    return lookup(row["key"], row["knowledge"])


def score_row(row: dict) -> RewardResult:
    """Score a row that passed row_problem; a missing key or bad knowledge file gives invalid_input."""
    try:
        answers = accepted_answers(row)
    except KnowledgeError as e:
        return RewardResult(0.0, INVALID, {"error": str(e)})
    return check_answer(row["response"], answers)
