"""Synchronous loop against the asynchronous pipeline (rollout.max_staleness), same config, one run each.

Two settings:
- `judge` (default): the demo's model, data and batch shape with a judge that waits on the network
  as the only reward: the OpenAI-compatible test double (tests/doubles/openai_double.py, its own
  process) answers every request after a fixed latency (1 s). Each sample is judged against its
  row's correct answer in both orders.
- `math` (--setting math): the plain CPU demo (math-verify), to see what overlap buys when the
  reward is cheap, with held-out accuracy at the end of both runs.

Prints steady-state seconds per step (steps 3.. of each run) and steps/s, and the ratio async/sync.
Run: .venv/bin/python bench/async_pipeline.py [--setting judge|math] [--steps 20] [--latency 1.0] [--k 1]
"""
from __future__ import annotations

import argparse
import os
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_double(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/doubles/openai_double.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the double prints "PORT N" once it listens
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the judge double did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def judge_overrides(work: Path, url: str) -> list[str]:
    """A judges file for the double and training rows whose `reference` is the right answer."""
    judges = {"voting": "majority", "judges": [{"name": "double", "base_url": url, "model": "double",
                                                "max_concurrency": 1024, "timeout_s": 30, "max_tokens": 16}],
              "pool": {"size": 2}}  # two judge actors share the requests (each is CPU-bound by its client)
    (work / "judges.yaml").write_text(yaml.safe_dump(judges))
    rows = [json.loads(x) for x in (ROOT / ".cache/demo/data/train.jsonl").read_text().splitlines() if x.strip()]
    (work / "train.jsonl").write_text("".join(json.dumps({**r, "reference": str(r["answer"])}) + "\n" for r in rows))
    source = {"name": "judges", "type": "judge", "judges": str(work / "judges.yaml"), "judge_mode": "reference"}
    return [f"data.train_path={work / 'train.jsonl'}", f"reward.sources={json.dumps([source])}",
            'reward.eval=[{"name": "gold", "type": "math"}]']


def run(k: int, steps: int, work: Path, extra: list[str]) -> dict:
    name = f"async-bench-k{k}"
    sets = [f"steps={steps}", f"rollout.max_staleness={k}", f"logging.output_dir={work}", f"logging.run_name={name}",
            f"logging.eval_every={steps}", "logging.parity_every=1000", "logging.progress=false", *extra]
    cmd = [str(ROOT / ".venv/bin/threefold"), "train", str(ROOT / "configs/rlvr-arith.yaml")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"threefold train (max_staleness {k}) failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (work / name / "metrics.jsonl").read_text().splitlines()]
    steady = [r["time_step"] for r in records if r.get("step", 0) > 2 and "time_step" in r]
    evals = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    return {"k": k, "s_per_step": statistics.median(steady), "mean_s_per_step": statistics.fmean(steady),
            "eval_start": evals[0], "eval_end": evals[-1], "max_lag": max(r.get("version_lag", 0) for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=["judge", "math"], default="judge")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--latency", type=float, default=1.0, help="judge double: seconds per request")
    ap.add_argument("--k", type=int, default=1, help="max_staleness of the asynchronous run")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE overrides for both runs")
    args = ap.parse_args()
    proc = None
    with tempfile.TemporaryDirectory(prefix="threefold-async-") as tmp:
        tmp = os.environ.get("ASYNC_BENCH_DIR", tmp)
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        extra = list(args.set)
        try:
            if args.setting == "judge":
                proc, url = start_double(args.latency)
                extra += judge_overrides(work, url)
            sync, asyn = run(0, args.steps, work, extra), run(args.k, args.steps, work, extra)
        finally:
            if proc:
                proc.kill()
    print(f"{'max_staleness':>13} {'s/step (median)':>16} {'s/step (mean)':>14} {'steps/s':>8} "
          f"{'held-out start→end':>20} {'max lag':>8}")
    for r in (sync, asyn):
        print(f"{r['k']:>13} {r['s_per_step']:>16.3f} {r['mean_s_per_step']:>14.3f} {1 / r['s_per_step']:>8.2f} "
              f"{r['eval_start']:>9.1%} → {r['eval_end']:<8.1%} {r['max_lag']:>8.0f}")
    what = f"judge double {args.latency:g} s/request" if args.setting == "judge" else "math demo"
    print(f"async (max_staleness {args.k}) vs sync, {what}, {args.steps} steps: "
          f"{sync['s_per_step'] / asyn['s_per_step']:.2f}x steps/s")


if __name__ == "__main__":
    main()
