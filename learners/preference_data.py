"""Preference pairs from JSONL or Parquet: `prompt`, `chosen`, `rejected` (strings), optional `margin`.

The Parquet that `threefold judge --pairs` writes (id, prompt, chosen, rejected, p_chosen) loads as
is; other columns are ignored. A bad row either fails the load, naming its line (JSONL, 1-based) or
row index (Parquet, 0-based) and the field, or, with on_bad_row="skip", is skipped and counted.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


class PreferenceDataError(ValueError):
    pass


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


@dataclass
class LoadedPairs:
    pairs: list[PreferencePair]
    skipped: int
    first_problem: str | None  # the first skipped row's message, for the log


def row_problem(row) -> str | None:
    """What is wrong with one row, naming the field, or None."""
    if not isinstance(row, dict):
        return "row must be an object with prompt, chosen, rejected"
    for name in ("prompt", "chosen", "rejected"):
        if name not in row or row[name] is None:
            return f"field {name!r} is missing"
        if not isinstance(row[name], str):
            return f"field {name!r} must be a string, got {type(row[name]).__name__}"
    if not row["chosen"] and not row["rejected"]:
        return "fields 'chosen' and 'rejected' are both empty"
    if row["chosen"] == row["rejected"]:
        return "fields 'chosen' and 'rejected' are identical, so the pair says nothing"
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not math.isfinite(margin)):
        return f"field 'margin' must be a finite number, got {margin!r}"
    return None


def _jsonl_rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line), None
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", None, f"not valid JSON ({e.msg})"


def _parquet_rows(path: Path):
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}: row {i}", row, None


def load_pairs(path: str | Path, on_bad_row: str = "error") -> LoadedPairs:
    """All good pairs of a .jsonl or .parquet file."""
    path = Path(path)
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if not path.is_file():
        raise PreferenceDataError(f"{path}: preference file does not exist")
    reader = _parquet_rows if path.suffix == ".parquet" else _jsonl_rows
    pairs, skipped, first = [], 0, None
    for where, row, problem in reader(path):
        problem = problem or row_problem(row)
        if problem:
            if on_bad_row == "error":
                raise PreferenceDataError(f"{where}: {problem} (or set on_bad_row: skip to skip such rows)")
            skipped += 1
            first = first or f"{where}: {problem}"
            continue
        pairs.append(PreferencePair(row["prompt"], row["chosen"], row["rejected"], float(row.get("margin") or 0.0)))
    if not pairs:
        raise PreferenceDataError(f"{path}: no usable preference pairs" + (f" ({skipped} skipped; first: {first})"
                                                                           if skipped else ""))
    return LoadedPairs(pairs, skipped, first)
