"""Per-step metrics: appended to metrics.jsonl (the record), mirrored on Ray's metrics pipeline
(cluster/ray_metrics.py) and, when configured, to TensorBoard and W&B (cluster/loggers.py)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from cluster.ray_metrics import RayMetrics

log = logging.getLogger("threefold.metrics")


class MetricsLog:
    def __init__(self, path: Path, run_name: str, sinks: list | None = None, keep_until: int | None = None):
        """`sinks`: extra loggers with write(record) and close() (TensorBoard, W&B). `keep_until`: a
        resumed run keeps the records up to that step (the ones after it are redone)."""
        self.path = path
        self.run_name = run_name
        # A new run in a reused run directory starts a new record (the report would mix runs).
        path.parent.mkdir(parents=True, exist_ok=True)
        keep_records(path, keep_until)
        self.sinks = [RayMetrics(run_name), *(sinks or [])]

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        for sink in self.sinks:
            try:
                sink.write(clean)
            except Exception as e:  # a logger's trouble never stops the run: the file has the record
                log.warning("metrics sink %s failed: %s: %s", type(sink).__name__, type(e).__name__, e)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close:
                try:
                    close()
                except Exception as e:
                    log.warning("metrics sink %s did not close: %s", type(sink).__name__, e)


def keep_records(path: Path, until: int | None) -> None:
    """Start a JSONL record afresh, or (a resumed run) keep its records up to step `until`."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= until] if until is not None and path.is_file() else []
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


class RolloutLog:
    """<run dir>/rollouts.jsonl (logging.rollouts): a line per step with every sample trained on, its
    id (draw, j), token ids, text and reward, so a run's data can be audited and compared."""

    def __init__(self, path: Path, keep_until: int | None = None):
        self.path = path
        keep_records(path, keep_until)

    def write(self, step: int, batch) -> None:
        ids = batch.sample_ids or [None] * len(batch)
        samples = [{"id": list(i) if i else None, "tokens": t, "text": x, "reward": r}
                   for i, t, x, r in zip(ids, batch.response_ids, batch.texts, batch.rewards)]
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "rollout_version": batch.policy_version, "samples": samples}) + "\n")


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
