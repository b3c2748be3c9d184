"""Every algorithm of the family on the arithmetic demo, side by side.

Same warm start (the demo model), same data, same batch shape and the same number of samples
(steps × prompts × group size) for `ppo`, `grpo`, `dr_grpo`, `rloo` and `reinforce_pp`; each run
is a real `threefold train` (Ray + vLLM generators + verifier pool). Prints held-out greedy
accuracy at the start and the end, the gain, mean KL to the reference (all steps and the last
50), β at the end and wall time. PPO runs with the adaptive KL controller; its row also shows
the last-50 mean KL over its target (the goal is ≤ 1.5).

usage: python bench/algos.py [--steps 200] [--only ppo,grpo] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp")
PPO_TARGET = 0.1
PPO = [f"algorithm.kl.target={PPO_TARGET}", "algorithm.kl.coef=0.01", "algorithm.kl.horizon=1000",
       "algorithm.critic.lr=1e-4", "algorithm.critic.warmup_steps=5"]


def run(name: str, steps: int, extra: list[str]) -> dict:
    sets = [f"algorithm.name={name}", f"steps={steps}", f"logging.run_name=bench-algos-{name}",
            "logging.eval_every=50", "logging.eval_size=500", "logging.progress=false", *(PPO if name == "ppo" else []),
            *extra]
    cmd = [sys.executable, "-m", "cluster.cli", "train", "configs/rlvr-arith.yaml"]
    for s in sets:
        cmd += ["--set", s]
    shutil.rmtree(ROOT / "runs" / f"bench-algos-{name}", ignore_errors=True)  # else metrics.jsonl appends
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (ROOT / "runs" / f"bench-algos-{name}" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
    kls = [r["kl"] for r in rows if "kl" in r]
    return {"name": name, "start": evals[0], "end": evals[-1], "kl_mean": sum(kls) / len(kls),
            "kl_last50": sum(kls[-50:]) / len(kls[-50:]), "beta_end": rows[-1].get("kl_coef", float("nan")),
            "wall_s": wall, "ev_end": rows[-1].get("explained_variance")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--only", default=",".join(ALGORITHMS))
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    args = ap.parse_args()
    print("| algorithm | held-out start | end | gain (points) | mean KL | KL last 50 | β end | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        r = run(name, args.steps, args.set)
        note = f" (target {PPO_TARGET} → ×{r['kl_last50'] / PPO_TARGET:.2f}; explained variance {r['ev_end']:.2f})" if name == "ppo" else ""
        print(f"| {name} | {r['start']:.1%} | {r['end']:.1%} | {100 * (r['end'] - r['start']):+.1f} | {r['kl_mean']:.4f} "
              f"| {r['kl_last50']:.4f}{note} | {r['beta_end']:.4f} | {r['wall_s']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
