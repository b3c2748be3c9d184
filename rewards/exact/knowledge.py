"""Knowledge files: accepted answers by key, for rows that give a `key` instead of `answers`.

A knowledge file is JSONL (one {"key": ..., "answers": [...]} object a line) or Parquet (columns
`key` and `answers`; chosen by the .parquet suffix). `key` is a string; `answers` is a non-empty
list of strings or one string. A file is read once and cached by path and modification time, so
an edited file is re-read and the thousands of rows of a batch cost one read.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from rewards.exact.answer import aliases_problem

_cache: dict[str, tuple[tuple[int, int], dict[str, list[str]]]] = {}
_lock = threading.Lock()  # verifier actors score rows on several threads


class KnowledgeError(ValueError):
    """A knowledge file that cannot be used; the message names the file and the line (or row)."""


def _jsonl_records(path: str):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise KnowledgeError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def _parquet_records(path: str):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise KnowledgeError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    for i, record in enumerate(table.to_pylist()):
        yield f"{path}: row {i}", record


def _read(path: str) -> dict[str, list[str]]:
    reader = _parquet_records if path.endswith(".parquet") else _jsonl_records
    out: dict[str, list[str]] = {}
    for where, record in reader(path):
        if not isinstance(record, dict):
            raise KnowledgeError(f"{where}: a record must be an object with 'key' and 'answers'")
        key, answers = record.get("key"), record.get("answers")
        if not isinstance(key, str) or not key:
            raise KnowledgeError(f"{where}: field 'key' must be a non-empty string, got {key!r}")
        problem = aliases_problem(answers)
        if problem:
            raise KnowledgeError(f"{where}: {problem}")
        if key in out:
            raise KnowledgeError(f"{where}: key {key!r} appears twice")
        out[key] = [answers] if isinstance(answers, str) else list(answers)
    return out


def load_knowledge(path: str | os.PathLike) -> dict[str, list[str]]:
    """key → accepted answers of the file at `path` (cached by path and mtime); KnowledgeError if
    it cannot be read or a record is malformed."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise KnowledgeError(f"{path}: cannot read knowledge file ({e.strerror})") from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(path)
        if hit and hit[0] == stamp:
            return hit[1]
    try:
        table = _read(path)
    except OSError as e:
        raise KnowledgeError(f"{path}: cannot read knowledge file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise KnowledgeError(f"{path}: not UTF-8 text (a JSONL knowledge file must be; Parquet needs the "
                             ".parquet suffix)") from None
    with _lock:
        _cache[path] = (stamp, table)
    return table


def lookup(key: str, path: str | os.PathLike) -> list[str]:
    """The accepted answers of `key`; KnowledgeError naming the key and the file when it is absent."""
    table = load_knowledge(path)
    if key not in table:
        raise KnowledgeError(f"key {key!r} is not in knowledge file {Path(path)}")
    return table[key]
