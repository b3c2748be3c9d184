"""Scores (prompt, response) texts with a trained reward model; one RewardResult per sample.

Status `scored` with the raw reward; `error` (score 0) for a sample that is not text. A batch that
fails as a whole (e.g. out of memory) is retried one sample at a time, so one sample cannot sink
the others.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch

from rewards.rm.model import META_FILE, TextEncoder, load_backbone, rewards
from rewards.types import ERROR, RewardResult

SCORED = "scored"


class RMScorer:
    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int | None = None):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a reward-model directory (no config.json); "
                                    "train one with `threefold rm train CONFIG`")
        meta = json.loads((model_dir / META_FILE).read_text()) if (model_dir / META_FILE).is_file() else {}
        self.meta = meta
        self.model, tok = load_backbone(model_dir, seed=0)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_dir}: a reward model has 1 label, this one has {self.model.config.num_labels}")
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()  # a GPU when the actor has one
        self.enc = TextEncoder(tok, max_length or meta.get("max_length", 512))
        self.batch_size = batch_size

    @torch.no_grad()
    def _values(self, prompts: list[str], responses: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            ids, mask = self.enc.batch(prompts[i:i + self.batch_size], responses[i:i + self.batch_size])
            out += rewards(self.model, ids.to(self.model.device), mask.to(self.model.device)).tolist()
        return out

    def score(self, prompts: Sequence, responses: Sequence) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        results: list[RewardResult | None] = [
            None if isinstance(p, str) and isinstance(r, str)
            else RewardResult(0.0, ERROR, {"error": "prompt and response must be strings"})
            for p, r in zip(prompts, responses)]
        todo = [i for i, r in enumerate(results) if r is None]
        try:
            values = self._values([prompts[i] for i in todo], [responses[i] for i in todo])
        except (RuntimeError, ValueError):  # whole batch failed: find the sample that did it
            values = []
            for i in todo:
                try:
                    values += self._values([prompts[i]], [responses[i]])
                except (RuntimeError, ValueError) as e:
                    values.append(float("nan"))
                    results[i] = RewardResult(0.0, ERROR, {"error": f"{type(e).__name__}: {e}"[:300]})
        for i, v in zip(todo, values):
            if results[i] is None:
                results[i] = (RewardResult(v, SCORED) if math.isfinite(v)
                              else RewardResult(0.0, ERROR, {"error": "reward is not finite"}))
        return results  # type: ignore[return-value]


class RunningNorm:
    """Running mean and std over every score seen (Welford); normalises scores to z-values."""

    def __init__(self, eps: float = 1e-6):
        self.n, self.mean, self.m2, self.eps = 0, 0.0, 0.0, eps

    def update(self, values: Sequence[float]) -> None:
        for v in values:
            self.n += 1
            d = v - self.mean
            self.mean += d / self.n
            self.m2 += d * (v - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 1.0

    def __call__(self, value: float) -> float:
        return (value - self.mean) / max(self.std, self.eps)

    def state(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}
