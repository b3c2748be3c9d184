"""Prompt rows from JSONL, and a seeded cursor over them that a resumed run can restore."""
from __future__ import annotations

import json
import random
from pathlib import Path


class DataError(ValueError):
    pass


def read_rows(path: Path, required: tuple[str, ...] = ("prompt",), check=None) -> list[dict]:
    """Every row of a JSONL file; `check(row)` returns what is wrong with a row (e.g. no reward source
    serves its kind), which fails the load naming the line."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            missing = [k for k in required if k not in row] if isinstance(row, dict) else list(required)
            if missing:
                raise DataError(f"{path}:{lineno}: row lacks {', '.join(missing)}; each row needs {required}")
            if not isinstance(row["prompt"], str):
                raise DataError(f"{path}:{lineno}: field 'prompt' must be a string")
            problem = check(row) if check else None
            if problem:
                raise DataError(f"{path}:{lineno}: {problem}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


class PromptSampler:
    """Walks a shuffled order of the rows; reshuffles at each epoch end. `drawn` counts the rows
    handed out so far: draw i is sampled with seed `row_seed(run seed, i)`."""

    def __init__(self, rows: list[dict], seed: int):
        self.rows = rows
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.epoch = 0
        self.drawn = 0

    def next(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = list(range(len(self.rows)))
                self.rng.shuffle(self.order)
                self.epoch += 1
            out.append(self.rows[self.order.pop()])
        self.drawn += n
        return out

    def state(self) -> dict:
        return {"rng": self.rng.getstate(), "order": list(self.order), "epoch": self.epoch, "drawn": self.drawn,
                "rows": len(self.rows)}

    def restore(self, state: dict) -> None:
        if state["rows"] != len(self.rows):
            raise ValueError(f"the checkpoint's sampler walked {state['rows']} training rows; data.train_path "
                             f"now has {len(self.rows)}")
        self.rng.setstate(state["rng"])
        self.order, self.epoch, self.drawn = list(state["order"]), state["epoch"], state["drawn"]
