"""Seeded synthetic arithmetic task: `a+b=` prompts with integer answers, split train / held-out."""
from __future__ import annotations

import json
import random
from pathlib import Path


def arith_rows(max_operand: int, ops: str, seed: int) -> list[dict]:
    """Every `a<op>b=` for 0 <= a, b <= max_operand, shuffled with `seed`."""
    rows = []
    for op in ops:
        for a in range(max_operand + 1):
            for b in range(max_operand + 1):
                value = a + b if op == "+" else a - b
                rows.append({"prompt": f"{a}{op}{b}=", "answer": str(value), "kind": "math"})
    random.Random(seed).shuffle(rows)
    return rows


def split_rows(rows: list[dict], held_out: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): the held-out prompts never appear in training."""
    return rows[held_out:], rows[:held_out]


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
