"""threefold against TRL's GRPOTrainer on the same GRPO task, in one invocation.

Both sides train the same policy (the demo model, or `--model-size 30m`: a randomly initialised
~30M-parameter Llama of the same family) on the same prompts with the same reward (the project's
math checker, rewards/math, with its plain-integer fast path), 16 prompts × 16 samples per step,
4 new tokens, temperature 1.0, lr 5e-5 (AdamW, constant, no warm-up), KL β 0.01 (k3 as a loss
term), clip ε 0.2, one optimizer step per batch, the same number of steps and the same seed.
Held-out accuracy: greedy answers to the first 500 eval rows, scored by the same checker (threefold:
`eval_accuracy` of its metrics.jsonl; TRL: the final model with Hugging Face `generate`).

TRL is never a project dependency: `bash bench/setup_trl.sh` installs it into bench/.trl, which only
the TRL subprocess of this script sees (PYTHONPATH), with .venv's torch and transformers. The TRL
side, the step statistics and the model building are in bench/vs_trl_trl.py.

    .venv/bin/python bench/vs_trl.py [--steps 600] [--model-size demo|30m] [--set KEY=VALUE ...]
                                     [--only trl|threefold] [--warmup 5] [--out PATH]
                                     [--precision fp32|reduced] [--trl-precision fp32|bf16|bf16-matmul]
                                     [--compile] [--trl-compile on|off]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench.vs_trl_trl (the script alone has only bench/ on sys.path)
    sys.path.insert(0, str(ROOT))

from bench.vs_trl_trl import EVAL_PATH, TRAIN_PATH, model_for, run_trl, step_stats, trl_worker  # noqa: E402

BASE_CONFIG = ROOT / "configs" / "rlvr-arith.yaml"
# threefold config keys that carry a shared setting: overriding one makes the two sides differ
SHARED_KEYS = ("steps", "seed", "policy.", "data.", "reward.", "rollout.prompts_per_step", "rollout.samples_per_prompt",
               "rollout.temperature", "rollout.max_new_tokens", "algorithm.name", "algorithm.clip_", "algorithm.kl.",
               "algorithm.loss_agg", "learner.lr", "learner.epochs", "learner.minibatches", "learner.warmup_steps",
               "learner.schedule", "learner.max_grad_norm", "learner.weight_decay", "logging.eval_size")


# ---------------------------------------------------------------- settings shared by both sides

# --precision reduced on threefold's side: bf16 engines, bf16 inputs to the learner's matrix products
REDUCED = ("rollout.dtype=bfloat16", "learner.matmul_precision=reduced")
COMPILE = "learner.compile=true"  # --compile on threefold's side


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="RL steps on each side (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-size", choices=("demo", "30m"), default="demo",
                   help="demo: the trained 1.08M demo policy; 30m: a random-init ~30M Llama (accuracy meaningless)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed through to `threefold train --set` (repeatable)")
    p.add_argument("--only", choices=("trl", "threefold"), default=None, help="run one side only")
    p.add_argument("--precision", choices=("fp32", "reduced"), default="fp32",
                   help="both sides: fp32 (default), or reduced: bf16 inputs to the matrix products "
                        "(oneDNN) on both, i.e. TRL with bf16-matmul and threefold with "
                        f"{' '.join(REDUCED)}")
    p.add_argument("--trl-precision", choices=("fp32", "bf16", "bf16-matmul"), default=None,
                   help="TRL's side only (default: what --precision gives it): fp32, bf16 (its mixed "
                        "precision: bf16 autocast), or bf16-matmul (fp32 with bf16 inputs to every matrix "
                        "product through oneDNN, generation included)")
    p.add_argument("--compile", action="store_true",
                   help="both sides through torch.compile: threefold learner.compile=true, TRL torch_compile=True "
                        "(its policy model; generation and training)")
    p.add_argument("--trl-compile", choices=("on", "off"), default=None,
                   help="TRL's side only (default: what --compile gives it)")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the steady-state statistics")
    p.add_argument("--eval-size", type=int, default=500, help="held-out rows (the first N of eval.jsonl)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON with every number (default /tmp/threefold-bench/vs_trl-<size>-<steps>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    p.add_argument("--trl-worker", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the TRL subprocess
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error("--steps must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    for o in a.overrides:
        if "=" not in o or not o.split("=", 1)[0].strip():
            p.error(f"--set expects KEY=VALUE, got {o!r}")
    if a.trl_precision is None:
        a.trl_precision = "bf16-matmul" if a.precision == "reduced" else "fp32"
    if a.trl_compile is None:
        a.trl_compile = "on" if a.compile else "off"
    if a.precision == "reduced":
        a.overrides = [*REDUCED, *a.overrides]  # a later --set of the same key wins
    if a.compile:
        a.overrides = [COMPILE, *a.overrides]
    if a.out is None:
        a.out = Path(tempfile.gettempdir()) / "threefold-bench" / f"vs_trl-{a.model_size}-{a.steps}.json"
    return a


def shared_settings(args: argparse.Namespace) -> dict:
    """The task both frameworks run: every number the two configs must agree on."""
    return {"steps": args.steps, "seed": args.seed, "prompts_per_step": 16, "samples_per_prompt": 16,
            "max_new_tokens": 4, "temperature": 1.0, "lr": 5e-5, "beta": 0.01, "epsilon": 0.2,
            "max_grad_norm": 1.0, "weight_decay": 0.0, "eval_size": args.eval_size, "reward_timeout_s": 5.0}


def threefold_config(shared: dict, model_dir: Path, out_dir: Path, run_name: str) -> dict:
    """configs/rlvr-arith.yaml with the shared settings, evaluation only at the start and the end
    (as for TRL), parity checked only after the first sync, and the run under `out_dir`."""
    import yaml

    cfg = yaml.safe_load(BASE_CONFIG.read_text())
    s = shared
    cfg["steps"], cfg["seed"] = s["steps"], s["seed"]
    cfg["policy"] = {**cfg.get("policy", {}), "model_dir": str(model_dir)}
    cfg["data"] = {**cfg.get("data", {}), "train_path": str(TRAIN_PATH), "eval_path": str(EVAL_PATH)}
    cfg["rollout"] = {**cfg.get("rollout", {}), "prompts_per_step": s["prompts_per_step"],
                      "samples_per_prompt": s["samples_per_prompt"], "temperature": s["temperature"],
                      "max_new_tokens": s["max_new_tokens"]}
    cfg["reward"] = {"sources": [{"name": "math", "type": "math"}], "timeout_s": s["reward_timeout_s"]}
    algo = cfg.setdefault("algorithm", {})
    algo.update(name="grpo", clip_low=s["epsilon"], clip_high=s["epsilon"])
    algo["kl"] = {**algo.get("kl", {}), "coef": s["beta"]}
    cfg["learner"] = {**cfg.get("learner", {}), "lr": s["lr"], "warmup_steps": 0, "schedule": "constant",
                      "epochs": 1, "minibatches": 1, "max_grad_norm": s["max_grad_norm"],
                      "weight_decay": s["weight_decay"]}
    cfg["logging"] = {**cfg.get("logging", {}), "output_dir": str(out_dir), "run_name": run_name,
                      "eval_every": s["steps"], "eval_size": s["eval_size"], "parity_every": 10 ** 9,
                      "progress": False}
    return cfg


def threefold_view(cfg: dict) -> dict:
    """The shared settings as the threefold YAML states them."""
    r, a, lr = cfg["rollout"], cfg["algorithm"], cfg["learner"]
    assert a["clip_low"] == a["clip_high"], "asymmetric clip has no single TRL epsilon"
    return {"steps": cfg["steps"], "seed": cfg["seed"], "prompts_per_step": r["prompts_per_step"],
            "samples_per_prompt": r["samples_per_prompt"], "samples_per_step": r["prompts_per_step"] * r["samples_per_prompt"],
            "max_new_tokens": r["max_new_tokens"], "temperature": r["temperature"], "lr": lr["lr"],
            "beta": a["kl"]["coef"], "epsilon": a["clip_low"], "max_grad_norm": lr["max_grad_norm"],
            "weight_decay": lr["weight_decay"], "updates_per_batch": lr["epochs"] * lr["minibatches"],
            "warmup_steps": lr["warmup_steps"], "schedule": lr["schedule"]}


# ---------------------------------------------------------------- threefold side

def unfair_overrides(overrides: list[str]) -> list[str]:
    """The --set overrides that change a setting TRL's side shares (they still go through)."""
    return [o for o in overrides if o.split("=", 1)[0].strip().startswith(SHARED_KEYS)]


def threefold_command(cfg_path: Path, overrides: list[str]) -> list[str]:
    """`threefold train` on the generated config; `--set` overrides go through unchanged (keys the
    config does not know are the CLI's to refuse)."""
    return [str(ROOT / ".venv" / "bin" / "threefold"), "train", str(cfg_path), *(a for o in overrides for a in ("--set", o))]


def run_threefold(shared: dict, model_dir: Path, work: Path, overrides: list[str], warmup: int) -> dict:
    import yaml

    run_name = f"vs-trl-{os.getpid()}"
    cfg = threefold_config(shared, model_dir, work / "runs", run_name)
    cfg_path = work / "threefold.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    metrics = work / "runs" / run_name / "metrics.jsonl"
    log_path = work / "threefold.log"
    cmd = threefold_command(cfg_path, overrides)
    print(f"[threefold] {' '.join(cmd)}", flush=True)
    records, arrivals = [], []
    with open(log_path, "wb") as log:
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        buf, pos = "", 0
        while True:
            done = proc.poll() is not None
            if metrics.is_file():  # each line is written when its step ends: its arrival time is the step's end
                with open(metrics) as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                now = time.time()
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    if line.strip():
                        records.append(json.loads(line))
                        arrivals.append(now)
            if done:
                break
            time.sleep(0.05)
    t_exit = time.time()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"threefold train exited {proc.returncode}; log {log_path}:\n{tail}")
    steps = [(r, t) for r, t in zip(records, arrivals) if r.get("step", 0) >= 1]
    start = next((t for r, t in zip(records, arrivals) if r.get("step") == 0), None)
    if start is None or not steps:
        raise RuntimeError(f"no step records in {metrics}")
    samples = shared["prompts_per_step"] * shared["samples_per_prompt"]
    stats = step_stats(t_launch, start, [t for _, t in steps], samples, warmup)
    evals = [r for r in records if "eval_accuracy" in r]
    phases = {k: statistics.fmean(r.get(k, 0.0) for r, _ in steps[warmup:-1] or steps)
              for k in ("time_generate", "time_reward", "time_learn", "time_sync")}
    return {**stats, "process_s": t_exit - t_launch,
            "eval_accuracy_start": evals[0]["eval_accuracy"], "eval_accuracy_end": evals[-1]["eval_accuracy"],
            "steady_phase_mean_s": phases, "steady_phase_sum_s": sum(phases.values()),
            "reward_mean_last": steps[-1][0].get("reward_mean"), "kl_last": steps[-1][0].get("kl"),
            "config": str(cfg_path), "log": str(log_path), "overrides": overrides,
            "note": "start-up and step 1 include the step-0 held-out evaluation; the last step its final one"}


# ---------------------------------------------------------------- report

def fmt_table(results: dict) -> str:
    sides = [s for s in ("threefold", "trl") if s in results]
    rows = [("samples/s (steady)", "steady_samples_per_s", "{:.1f}"),
            ("s/step median (steady)", "steady_median_s", "{:.3f}"),
            ("s/step mean (steady)", "steady_mean_s", "{:.3f}"),
            ("samples/s (incl. start-up)", "all_samples_per_s", "{:.1f}"),
            ("s/step median (incl. start-up)", "all_median_s", "{:.3f}"),
            ("s/step mean (incl. start-up)", "all_mean_s", "{:.3f}"),
            ("start-up s", "startup_s", "{:.1f}"), ("launch to last step s", "total_s", "{:.1f}"),
            ("process wall s", "process_s", "{:.1f}"),
            ("held-out acc start", "eval_accuracy_start", "{:.1%}"),
            ("held-out acc end", "eval_accuracy_end", "{:.1%}")]
    w = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':{w}}" + "".join(f"{s:>12}" for s in sides) + ("  threefold/TRL" if len(sides) == 2 else "")]
    for label, key, f in rows:
        vals = [results[s].get(key) for s in sides]
        line = f"{label:{w}}" + "".join(f"{(f.format(v) if v is not None else '-'):>12}" for v in vals)
        if len(sides) == 2 and key not in ("eval_accuracy_start", "eval_accuracy_end") and vals[1]:
            line += f"  {vals[0] / vals[1]:.2f}x"
        lines.append(line)
    return "\n".join(lines)


def final_line(size: str, steps: int, results: dict, trained: bool) -> str:
    t, r = results.get("threefold"), results.get("trl")
    flag = "" if trained else " (untrained random-init model: accuracy meaningless)"
    if t and r:
        return (f"vs TRL ({size}, {steps} steps): threefold {t['steady_samples_per_s']:.0f} samples/s vs TRL "
                f"{r['steady_samples_per_s']:.0f} samples/s = {t['steady_samples_per_s'] / r['steady_samples_per_s']:.2f}x; "
                f"held-out threefold {t['eval_accuracy_end']:.1%} vs TRL {r['eval_accuracy_end']:.1%}{flag}")
    name, s = ("threefold", t) if t else ("TRL", r)
    return (f"{name} alone ({size}, {steps} steps): {s['steady_samples_per_s']:.0f} samples/s; "
            f"held-out {s['eval_accuracy_end']:.1%}{flag}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return 0
    shared = shared_settings(args)
    model_dir, model = model_for(args.model_size)
    print(f"model {model_dir} ({model['params'] / 1e6:.2f}M parameters"
          f"{'' if model['trained'] else ', random init: held-out accuracy is meaningless'}); "
          f"{args.steps} steps of {shared['prompts_per_step']}×{shared['samples_per_prompt']} samples", flush=True)
    for o in unfair_overrides(args.overrides):
        print(f"warning: --set {o} changes a setting the TRL side shares: the comparison is no longer like for like")
    work = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    results: dict = {}
    try:
        if args.only != "threefold":  # TRL first: it is the baseline, and one heavy process at a time
            load = os.getloadavg()[0]
            results["trl"] = {**run_trl(shared, model_dir, work, args.warmup, args.trl_precision,
                                        args.trl_compile == "on"),
                              "load_before": load, "precision": args.trl_precision, "compile": args.trl_compile == "on"}
            print(f"[trl] {results['trl']['steady_samples_per_s']:.1f} samples/s steady", flush=True)
        if args.only != "trl":
            load = os.getloadavg()[0]
            results["threefold"] = {**run_threefold(shared, model_dir, work, args.overrides, args.warmup),
                                    "load_before": load}
            print(f"[threefold] {results['threefold']['steady_samples_per_s']:.1f} samples/s steady", flush=True)
    except BaseException:
        print(f"failed; run files kept in {work}", file=sys.stderr)
        raise
    print()
    print(fmt_table(results))
    if "threefold" in results:
        ph = results["threefold"]["steady_phase_mean_s"]
        print("threefold steady phases (s): " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in ph.items()))
    for name, r in results.items():
        spread = r["steady_mean_s"] / r["steady_median_s"]
        if spread > 1.25:
            print(f"warning: {name}'s steady mean step is {spread:.2f}x its median: other work shared the CPUs "
                  f"(1-min load {r['load_before']:.1f} before it started, {os.cpu_count()} CPUs); compare medians or rerun")
    line = final_line(args.model_size, args.steps, results, model["trained"])
    out = {"shared": shared, "model": {**model, "dir": str(model_dir)}, "overrides": args.overrides,
           "precision": args.precision, "trl_precision": args.trl_precision, "compile": args.compile,
           "trl_compile": args.trl_compile,
           "warmup": args.warmup, "results": results, "summary": line}
    if "threefold" in results and "trl" in results:
        t, r = results["threefold"], results["trl"]
        out["ratio_threefold_over_trl"] = {"steady_samples_per_s": t["steady_samples_per_s"] / r["steady_samples_per_s"],
                                           "all_samples_per_s": t["all_samples_per_s"] / r["all_samples_per_s"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"numbers: {args.out}" + (f"; run files: {work}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(line)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # rewards/ for the TRL worker's reward function
    sys.exit(main())
