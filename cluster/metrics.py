"""Per-step metrics: appended to metrics.jsonl and mirrored as Ray dashboard gauges."""
from __future__ import annotations

import json
import math
from pathlib import Path

DASHBOARD_KEYS = ("reward_mean", "accuracy", "kl", "entropy", "response_len", "tokens_per_s",
                  "eval_accuracy", "time_generate", "time_reward", "time_learn", "time_sync")
# per reward source, tagged source=<name>; judge sources add the judge keys, also per judge (tag judge=<name>)
SOURCE_KEYS = ("mean", "samples", "failures", "dropped", "seconds", "per_second", "neutralised", "pass_rate")
JUDGE_KEYS = ("calls", "latency_p50_s", "latency_p95_s", "error_rate", "abstain_rate", "first_position_rate",
              "agreement", "tokens")
# per principle of a constitution (judges with per_principle), tagged source=<name>, principle=<name>
PRINCIPLE_KEYS = ("votes", "a_rate", "b_rate", "tie_rate", "abstain_rate", "mean_score")


class MetricsLog:
    def __init__(self, path: Path, run_name: str):
        self.path = path
        self.run_name = run_name
        # A new run in a reused run directory starts a new record (the report would mix runs).
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.gauges, self.source_gauges, self.judge_gauges, self.principle_gauges = {}, {}, {}, {}
        try:  # dashboard metrics are a nicety; the JSONL file is the record
            from ray.util.metrics import Gauge

            for key in DASHBOARD_KEYS:
                self.gauges[key] = Gauge(f"threefold_{key}", description=key, tag_keys=("run",))
            self.source_gauges = {key: Gauge(f"threefold_source_{key}", description=f"reward source {key}",
                                             tag_keys=("run", "source")) for key in SOURCE_KEYS + JUDGE_KEYS}
            self.judge_gauges = {key: Gauge(f"threefold_judge_{key}", description=f"judge {key} in the last step",
                                            tag_keys=("run", "source", "judge")) for key in JUDGE_KEYS}
            self.principle_gauges = {key: Gauge(f"threefold_principle_{key}", description=f"principle {key} in the last step",
                                                tag_keys=("run", "source", "principle")) for key in PRINCIPLE_KEYS}
        except Exception:
            self.gauges, self.source_gauges, self.judge_gauges, self.principle_gauges = {}, {}, {}, {}

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        for key, gauge in self.gauges.items():
            value = clean.get(key)
            if isinstance(value, (int, float)):
                gauge.set(float(value), tags={"run": self.run_name})
        for source, values in (clean.get("sources") or {}).items():
            for key, gauge in self.source_gauges.items():
                if isinstance(values.get(key), (int, float)):
                    gauge.set(float(values[key]), tags={"run": self.run_name, "source": source})
            for judge, m in (values.get("judges") or {}).items():
                m = {**m, "tokens": (m.get("prompt_tokens") or 0) + (m.get("completion_tokens") or 0)}
                for key, gauge in self.judge_gauges.items():
                    if isinstance(m.get(key), (int, float)):
                        gauge.set(float(m[key]), tags={"run": self.run_name, "source": source, "judge": judge})
            for principle, m in (values.get("principles") or {}).items():
                for key, gauge in self.principle_gauges.items():
                    if isinstance(m.get(key), (int, float)):
                        gauge.set(float(m[key]), tags={"run": self.run_name, "source": source, "principle": principle})


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
